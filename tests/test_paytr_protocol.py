"""PayTR's formulas, checked with fixed vectors computed here from the published recipe:
base64(HMAC-SHA256(key=merchant_key, msg=concat(fields) + merchant_salt))."""

import base64
import hashlib
import hmac
import json

import pytest

from billing.paytr import protocol

KEY, SALT = "AbCdEfGh12345678", "ZyXwVu98765432Qp"


def published(message: str, key: str = KEY) -> str:
    return base64.b64encode(hmac.new(key.encode(), message.encode(), hashlib.sha256).digest()).decode()


def test_sign_matches_a_fixed_vector():
    # Frozen from `printf absalt | openssl dgst -sha256 -hmac key -binary | base64`: a change in concatenation breaks it.
    assert protocol.sign("key", "salt", "a", "b") == "by0Ke7T/DJPWEAXDIoHDlrb/oFxsrbGVyqY4xqVAbJ0="
    assert protocol.sign("key", "salt", "a", "b") == published("absalt", "key")


def test_get_token_concatenates_the_ten_documented_fields_in_order():
    basket = protocol.encode_basket([("Starter plan, 1 month", 2900, 1)])
    fields = protocol.get_token_request(
        merchant_id="123456", key=KEY, salt=SALT, user_ip="85.34.78.112", merchant_oid="PB1T20261127AB",
        email="ayse@example.com", amount=2900, currency="USD", basket=basket, test_mode=True,
        user_name="Ayşe", user_address="İstanbul", user_phone="05550000000",
        ok_url="https://b.example/ok", fail_url="https://b.example/fail")
    expected = published("123456" + "85.34.78.112" + "PB1T20261127AB" + "ayse@example.com" + "2900" + basket
                         + "1" + "0" + "USD" + "1" + SALT)
    assert fields["paytr_token"] == expected
    assert fields["payment_amount"] == "2900"  # integer ×100
    assert fields["no_installment"] == "1" and fields["max_installment"] == "0"
    assert fields["merchant_ok_url"] == "https://b.example/ok"


def test_try_is_spelled_tl():
    assert protocol.paytr_currency("TRY") == "TL"
    assert protocol.paytr_currency("usd") == "USD"
    with pytest.raises(ValueError):
        protocol.paytr_currency("JPY")


def test_callback_hash_puts_the_salt_after_the_order_id():
    expected = published("PB1T20261127AB" + SALT + "success" + "2900")
    assert protocol.callback_hash("PB1T20261127AB", "success", "2900", KEY, SALT) == expected
    form = protocol.callback_form(merchant_oid="PB1T20261127AB", status="success", total_amount=2900,
                                  key=KEY, salt=SALT, currency="USD")
    cb = protocol.parse_callback(form, KEY, SALT)
    assert (cb.merchant_oid, cb.status, cb.total_amount, cb.get("currency")) == ("PB1T20261127AB", "success",
                                                                                 2900, "USD")


@pytest.mark.parametrize("change", [
    {"hash": "AAAA"}, {"status": "failed"}, {"total_amount": "2901"}, {"merchant_oid": "PB1T20261127AC"}])
def test_callback_with_any_signed_field_altered_is_refused(change):
    form = protocol.callback_form(merchant_oid="PB1T20261127AB", status="success", total_amount=2900,
                                  key=KEY, salt=SALT)
    with pytest.raises(protocol.CallbackError, match="bad hash"):
        protocol.parse_callback({**form, **change}, KEY, SALT)


@pytest.mark.parametrize("missing", ["merchant_oid", "status", "total_amount", "hash"])
def test_callback_with_a_missing_field_is_refused(missing):
    form = protocol.callback_form(merchant_oid="X1", status="success", total_amount=100, key=KEY, salt=SALT)
    form.pop(missing)
    with pytest.raises(protocol.CallbackError, match=f"missing {missing}"):
        protocol.parse_callback(form, KEY, SALT)


def test_unsigned_extras_do_not_enter_the_hash():
    form = protocol.callback_form(merchant_oid="X1", status="success", total_amount=100, key=KEY, salt=SALT,
                                  payment_amount="100")
    protocol.parse_callback({**form, "payment_amount": "999999", "test_mode": "1"}, KEY, SALT)


def test_status_query_refund_and_recurring_tokens():
    status = protocol.status_request(merchant_id="123456", merchant_oid="PB1T1", key=KEY, salt=SALT)
    assert status["paytr_token"] == published("123456" + "PB1T1" + SALT)
    refund = protocol.refund_request(merchant_id="123456", merchant_oid="PB1T1", amount=3456, key=KEY, salt=SALT,
                                     reference_no="R1")
    assert refund["return_amount"] == "34.56"
    assert refund["paytr_token"] == published("123456" + "PB1T1" + "34.56" + SALT)
    assert refund["reference_no"] == "R1"
    recurring = protocol.recurring_request(
        merchant_id="123456", key=KEY, salt=SALT, user_ip="85.34.78.112", merchant_oid="PB1T2",
        email="a@example.com", amount=2900, currency="TRY", test_mode=False, utoken="U", ctoken="C",
        user_name="A", user_address="B", user_phone="0", basket="W10=", ok_url="o", fail_url="f")
    assert recurring["payment_amount"] == "29.00" and recurring["currency"] == "TL"
    assert recurring["paytr_token"] == published("123456" + "85.34.78.112" + "PB1T2" + "a@example.com" + "29.00"
                                                 + "card" + "0" + "TL" + "0" + "1" + SALT)
    assert recurring["recurring_payment"] == "1" and recurring["non_3d"] == "1"


def test_stored_card_tokens():
    listing = protocol.card_list_request(merchant_id="1", utoken="UT", key=KEY, salt=SALT)
    assert listing["paytr_token"] == published("UT" + SALT)
    delete = protocol.card_delete_request(merchant_id="1", utoken="UT", ctoken="CT", key=KEY, salt=SALT)
    assert delete["paytr_token"] == published("CT" + "UT" + SALT)


def test_merchant_oids_are_alphanumeric_short_and_unique():
    from billing.clock import parse
    now = parse("2026-11-27T09:00:00Z")
    oids = {protocol.new_merchant_oid(123456789, now) for _ in range(1000)}
    assert len(oids) == 1000
    assert all(protocol.valid_merchant_oid(o) and len(o) <= 64 for o in oids)
    assert not protocol.valid_merchant_oid("PB-1") and not protocol.valid_merchant_oid("x" * 65)
    assert not protocol.valid_merchant_oid("")
    assert not protocol.valid_merchant_oid("PB1T2\n")


def test_basket_is_base64_json_with_decimal_prices():
    basket = protocol.encode_basket([("Team plan — 27 Nov to 27 Dec", 9900, 1)])
    assert json.loads(base64.b64decode(basket)) == [["Team plan — 27 Nov to 27 Dec", "99.00", 1]]


@pytest.mark.parametrize("text, minor", [("10,8", 1080), ("29", 2900), ("34.56", 3456), ("1.234,56", 123456)])
def test_status_query_amounts_in_their_own_formats(text, minor):
    assert protocol.parse_loose_amount(text) == minor


def test_amount_formats_refuse_floats_and_negatives():
    with pytest.raises(ValueError):
        protocol.amount_x100(29.0)
    with pytest.raises(ValueError):
        protocol.amount_x100(-1)
    with pytest.raises(ValueError):
        protocol.parse_x100("29.00")
    with pytest.raises(ValueError):
        protocol.parse_x100("２９００")  # full-width digits are digits to str.isdigit(), not to PayTR
