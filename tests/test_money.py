from decimal import Decimal

import pytest

from billing import money, plans


@pytest.mark.parametrize("minor, currency, text", [
    (2900, "USD", "$29.00"),
    (9900, "USD", "$99.00"),
    (1234567, "USD", "$12,345.67"),
    (5, "TRY", "₺0.05"),
    (-150, "EUR", "-€1.50"),
])
def test_format(minor, currency, text):
    assert money.format(minor, currency) == text


def test_floats_are_refused():
    with pytest.raises(TypeError):
        money.format(29.0, "USD")
    with pytest.raises(TypeError):
        money.decimal_string(12.5)


@pytest.mark.parametrize("text, minor", [("34.56", 3456), ("34,5", 3450), ("1", 100), ("0.01", 1)])
def test_parse(text, minor):
    assert money.parse(text) == minor


@pytest.mark.parametrize("text", ["", "abc", "-1", "1.234", "NaN", "inf"])
def test_parse_refuses_bad_amounts(text):
    with pytest.raises(money.MoneyError):
        money.parse(text)


def test_decimal_string_is_paytrs_refund_format():
    assert money.decimal_string(3456) == "34.56"
    assert money.decimal_string(100) == "1.00"
    assert money.decimal_string(7) == "0.07"


def test_vat_split_adds_up_exactly_and_vat_is_the_rate_of_the_net():
    for gross in (2900, 9900, 29900, 1, 98, 12346, 4968, 2258):
        net, vat = money.split_gross(gross, Decimal("20"))
        assert net + vat == gross and vat == money.percent_of(net, Decimal("20"))
    assert money.split_gross(2900, Decimal("20")) == (2417, 483)


def test_a_total_no_net_can_make_is_refused_not_split_wrongly():
    # nets 2 and 3 make totals 2 and 4 at 20 %: a total of 3 has no honest split
    with pytest.raises(money.MoneyError):
        money.split_gross(3, Decimal("20"))
    assert money.gross_from_net(3, Decimal("20")) == 4


def test_the_seed_catalog_is_created_on_first_start_in_integer_minor_units(db):
    assert [(p.code, p.price, p.currency, p.interval) for p in plans.all_plans(db)] == [
        ("starter", 2900, "USD", "month"), ("team", 9900, "USD", "month"), ("enterprise", 29900, "USD", "month")]
    assert plans.get(db, "enterprise").workspaces is None
    assert [p.storage_gb for p in plans.all_plans(db)] == [10, 50, 250]
    with pytest.raises(plans.UnknownPlan):
        plans.get(db, "platinum")
