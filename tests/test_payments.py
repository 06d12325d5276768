"""Checkout and callbacks in the domain: the first callback decides, money is never lost,
and anything that doesn't add up waits for staff instead of activating something."""

import json
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from billing import clock, payments, subscriptions
from billing.db import one, rows, scalar, write
from billing.paytr import protocol
from conftest import START, make_company, outbox

TZ = ZoneInfo("Europe/Istanbul")


@pytest.fixture
def owner(db, settings, password_hash):
    return make_company(db, settings, START, password_hash, email="owner@example.com", company_name="Acme A.Ş.")


def checkout(db, settings, owner, plan="starter", at=START):
    return payments.start_checkout(db, at, settings, user=owner, plan_code=plan, ip="85.34.78.112")


def callback(settings, payment, status="success", total=None, **extras):
    total = payment["amount"] if total is None and status == "success" else (total or 0)
    defaults = {"currency": "USD", "test_mode": "1", "payment_amount": payment["amount"]} if status == "success" \
        else {"failed_reason_code": "0", "failed_reason_msg": "Kartın bakiyesi yetersiz", "test_mode": "1"}
    form = protocol.callback_form(merchant_oid=payment["merchant_oid"], status=status, total_amount=total,
                                  key=str(settings.paytr_merchant_key), salt=str(settings.paytr_merchant_salt),
                                  **{**defaults, **extras})
    return protocol.parse_callback(form, str(settings.paytr_merchant_key), str(settings.paytr_merchant_salt))


def apply(db, settings, cb, at=START + timedelta(minutes=2)):
    return payments.apply_callback(db, at, settings, cb, "203.0.113.9")


def sub_of(db, owner):
    return subscriptions.for_company(db, owner["company_id"])


def test_start_checkout_records_a_pending_order_and_a_signed_token_request(db, settings, owner):
    c = checkout(db, settings, owner)
    p = c.payment
    assert (p["status"], p["kind"], p["plan"], p["amount"], p["currency"], p["test_mode"]) == (
        "pending", "subscribe", "starter", 2900, "USD", 1)
    assert protocol.valid_merchant_oid(p["merchant_oid"])
    r = c.request
    assert r["paytr_token"] == protocol.token_for(r, protocol.GET_TOKEN_FIELDS, str(settings.paytr_merchant_key),
                                                  str(settings.paytr_merchant_salt))
    assert (r["payment_amount"], r["currency"], r["no_installment"], r["user_ip"]) == ("2900", "USD", "1",
                                                                                       "85.34.78.112")
    assert r["merchant_ok_url"] == f"http://testserver/billing/payment/success?oid={p['merchant_oid']}"
    assert r["merchant_fail_url"].startswith("http://testserver/billing/payment/fail?oid=")
    [[line, price, qty]] = protocol.decode_basket(r["user_basket"])
    assert line == "Starter plan, 11.12.2026 – 11.01.2027" and price == "29.00" and qty == 1


def test_a_new_checkout_supersedes_the_open_one(db, settings, owner):
    first = checkout(db, settings, owner).payment
    second = checkout(db, settings, owner, plan="team").payment
    assert payments.by_oid(db, first["merchant_oid"])["status"] == "superseded"
    assert payments.by_oid(db, second["merchant_oid"])["status"] == "pending"
    assert scalar(db, "SELECT count(*) FROM payments WHERE status = 'pending'") == 1


def test_success_activates_issues_the_invoice_and_queues_the_receipt(db, settings, owner):
    p = checkout(db, settings, owner).payment
    assert apply(db, settings, callback(settings, p)) == "applied"
    paid = payments.by_oid(db, p["merchant_oid"])
    assert (paid["status"], paid["paid_amount"]) == ("succeeded", 2900)
    sub = sub_of(db, owner)
    # paid during the trial: the paid month starts when the trial ends, no trial day lost
    assert (sub["status"], sub["plan"]) == ("active", "starter")
    assert (sub["current_period_start"], sub["current_period_end"]) == ("2026-12-11T09:00:00Z", "2027-01-11T09:00:00Z")
    invoice = one(db, "SELECT * FROM invoices WHERE payment_id = ?", [p["id"]])
    assert invoice["number"] == "INV-2026-000001"
    assert (invoice["net"], invoice["vat"], invoice["total"], invoice["vat_rate"]) == (2417, 483, 2900, "20")
    assert (invoice["buyer_name"], invoice["seller_name"]) == ("Acme A.Ş.", settings.seller_name)
    [line] = rows(db, "SELECT * FROM invoice_lines WHERE invoice_id = ?", [invoice["id"]])
    assert line["description"] == "Starter plan, 11.12.2026 – 11.01.2027" and line["amount"] == 2900
    [mail] = outbox(db, template="payment_succeeded")
    assert mail["to_addr"] == "owner@example.com"
    assert mail["subject"] == "Payment received: $29.00 for Starter"
    assert "Invoice: INV-2026-000001" in mail["body_text"]
    assert "http://testserver/billing/invoices/INV-2026-000001" in mail["body_text"]
    assert "paid until 11 January 2027" in mail["body_text"]
    [raw] = rows(db, "SELECT * FROM callbacks")
    assert raw["outcome"] == "applied" and raw["remote_addr"] == "203.0.113.9"
    assert json.loads(raw["fields"])["merchant_oid"] == p["merchant_oid"]
    assert scalar(db, "SELECT count(*) FROM events WHERE kind = 'payment.succeeded'") == 1


def test_repeats_of_the_first_callback_change_nothing(db, settings, owner):
    p = checkout(db, settings, owner).payment
    cb = callback(settings, p)
    outcomes = [apply(db, settings, cb) for _ in range(5)]
    assert outcomes == ["applied"] + ["duplicate"] * 4
    assert scalar(db, "SELECT count(*) FROM invoices") == 1
    assert len(outbox(db, template="payment_succeeded")) == 1
    assert scalar(db, "SELECT count(*) FROM callbacks") == 5  # every raw callback is kept
    assert sub_of(db, owner)["current_period_end"] == "2027-01-11T09:00:00Z"


def test_failure_is_recorded_with_the_reason_and_emails_a_retry_link(db, settings, owner):
    p = checkout(db, settings, owner).payment
    assert apply(db, settings, callback(settings, p, "failed")) == "failed"
    failed = payments.by_oid(db, p["merchant_oid"])
    assert (failed["status"], failed["failed_reason_code"], failed["failed_reason_msg"]) == (
        "failed", "0", "Kartın bakiyesi yetersiz")
    assert sub_of(db, owner)["status"] == "trialing"
    [mail] = outbox(db, template="payment_failed")
    assert "Kartın bakiyesi yetersiz" in mail["body_text"]
    assert f"/billing/payment/fail?oid={p['merchant_oid']}" in mail["body_text"]


def test_a_later_failed_never_undoes_a_success(db, settings, owner):
    p = checkout(db, settings, owner).payment
    apply(db, settings, callback(settings, p))
    assert apply(db, settings, callback(settings, p, "failed")) == "duplicate"
    assert payments.by_oid(db, p["merchant_oid"])["status"] == "succeeded"
    assert sub_of(db, owner)["status"] == "active"


def test_success_after_a_recorded_failure_waits_for_staff(db, settings, owner, password_hash):
    from billing import accounts
    accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    p = checkout(db, settings, owner).payment
    apply(db, settings, callback(settings, p, "failed"))
    assert apply(db, settings, callback(settings, p)) == "anomaly"
    assert apply(db, settings, callback(settings, p)) == "duplicate"  # alerted once
    row = payments.by_oid(db, p["merchant_oid"])
    assert (row["status"], row["paid_amount"]) == ("needs_review", 2900)  # the money is recorded
    assert sub_of(db, owner)["status"] == "trialing"  # nothing activated by itself
    assert scalar(db, "SELECT count(*) FROM invoices") == 0
    [alert] = outbox(db, template="staff_alert")
    assert alert["to_addr"] == "ops@example.com" and "success after failure" in alert["subject"]


@pytest.mark.parametrize("env", [{"STAFF_ALERT_EMAIL": "alerts@example.com"}])
def test_an_unknown_order_is_recorded_and_alerts_staff_once(db, settings):
    form = protocol.callback_form(merchant_oid="PB999TNOSUCHORDER", status="success", total_amount=2900,
                                  key=str(settings.paytr_merchant_key), salt=str(settings.paytr_merchant_salt))
    cb = protocol.parse_callback(form, str(settings.paytr_merchant_key), str(settings.paytr_merchant_salt))
    assert apply(db, settings, cb) == "anomaly"
    assert apply(db, settings, cb) == "anomaly"
    [anomaly] = rows(db, "SELECT * FROM anomalies")
    assert (anomaly["kind"], anomaly["merchant_oid"]) == ("unknown_order", "PB999TNOSUCHORDER")
    assert [m["to_addr"] for m in outbox(db, template="staff_alert")] == ["alerts@example.com"]
    assert scalar(db, "SELECT count(*) FROM callbacks") == 2


@pytest.mark.parametrize("extras, problem", [
    ({"total": 2800}, "collected 2800 but the order was 2900"),
    ({"currency": "TL"}, "currency TL"),
    ({"test_mode": "0"}, "test mode differs"),
])
def test_mismatches_are_kept_for_review_and_activate_nothing(db, settings, owner, extras, problem):
    p = checkout(db, settings, owner).payment
    total = extras.pop("total", None)
    assert apply(db, settings, callback(settings, p, total=total, **extras)) == "anomaly"
    row = payments.by_oid(db, p["merchant_oid"])
    assert row["status"] == "needs_review" and problem in row["flag"]
    assert sub_of(db, owner)["status"] == "trialing"
    assert scalar(db, "SELECT count(*) FROM invoices") == 0


@pytest.mark.parametrize("env", [{"PAYTR_TEST_MODE": "0"}])
def test_a_test_mode_callback_never_counts_in_a_live_store(db, settings, owner):
    p = checkout(db, settings, owner).payment
    assert p["test_mode"] == 0
    assert apply(db, settings, callback(settings, p, test_mode="1")) == "anomaly"
    assert "test-mode payment reached the live store" in payments.by_oid(db, p["merchant_oid"])["flag"]
    assert sub_of(db, owner)["status"] == "trialing"


def test_installment_fees_above_the_order_amount_are_recorded(db, settings, owner):
    p = checkout(db, settings, owner).payment
    assert apply(db, settings, callback(settings, p, total=3050)) == "applied"
    row = payments.by_oid(db, p["merchant_oid"])
    assert (row["amount"], row["paid_amount"]) == (2900, 3050)
    assert one(db, "SELECT total FROM invoices")["total"] == 2900  # the invoice is for our price


def test_a_replaced_checkout_paid_anyway_is_applied_and_flagged_and_the_second_is_held(db, settings, owner):
    old = checkout(db, settings, owner).payment
    new = checkout(db, settings, owner).payment
    assert apply(db, settings, callback(settings, old)) == "applied"
    old_row = payments.by_oid(db, old["merchant_oid"])
    assert old_row["status"] == "succeeded" and "possible double payment" in old_row["flag"]
    assert rows(db, "SELECT kind FROM anomalies") == [{"kind": "replaced_checkout_paid"}]
    assert apply(db, settings, callback(settings, new)) == "anomaly"
    new_row = payments.by_oid(db, new["merchant_oid"])
    assert new_row["status"] == "needs_review" and new_row["paid_amount"] == 2900
    assert sub_of(db, owner)["current_period_end"] == "2027-01-11T09:00:00Z"  # extended once only
    assert scalar(db, "SELECT count(*) FROM invoices") == 1


def test_renewing_early_extends_from_the_current_period_end(db, settings, owner):
    apply(db, settings, callback(settings, checkout(db, settings, owner).payment))
    later = START + timedelta(days=40)
    renewal = checkout(db, settings, owner, at=later).payment
    assert renewal["kind"] == "renewal" and renewal["base_period_end"] == "2027-01-11T09:00:00Z"
    assert apply(db, settings, callback(settings, renewal), at=later) == "applied"
    sub = sub_of(db, owner)
    # the renewal bought the next period, and that period's start is recorded (quotes prorate over it)
    assert (sub["current_period_start"], sub["current_period_end"]) == ("2027-01-11T09:00:00Z",
                                                                       "2027-02-11T09:00:00Z")
    # numbering restarts each year: the renewal was paid in January
    assert [r["number"] for r in rows(db, "SELECT number FROM invoices ORDER BY id")] == [
        "INV-2026-000001", "INV-2027-000001"]


def test_changing_plans_is_not_a_renewal(db, settings, owner):
    apply(db, settings, callback(settings, checkout(db, settings, owner).payment))
    with pytest.raises(payments.CheckoutError, match="another plan"):
        checkout(db, settings, owner, plan="team")


@pytest.mark.parametrize("start, ends", [
    ("2027-01-31T10:00:00Z", ["2027-02-28T10:00:00Z", "2027-03-31T10:00:00Z", "2027-04-30T10:00:00Z"]),
    ("2028-01-31T10:00:00Z", ["2028-02-29T10:00:00Z", "2028-03-31T10:00:00Z"]),  # leap year
    ("2026-12-15T10:00:00Z", ["2027-01-15T10:00:00Z", "2027-02-15T10:00:00Z"]),
    ("2026-11-30T22:30:00Z", ["2026-12-31T22:30:00Z", "2027-01-31T22:30:00Z", "2027-02-28T22:30:00Z"]),
])
def test_periods_are_calendar_months_anchored_to_the_start_day(start, ends):
    at = clock.parse(start)
    anchor = at.astimezone(TZ).day
    for expected in ends:
        at = subscriptions.add_month(at, anchor, TZ)
        assert clock.iso(at) == expected


def test_invoice_numbers_are_gapless_even_when_a_payment_rolls_back(db, settings, owner, password_hash):
    from billing import invoices
    with pytest.raises(RuntimeError):
        with write(db):
            assert invoices.next_number(db, 2026) == (1, "INV-2026-000001")
            raise RuntimeError("the payment failed to commit")
    p = checkout(db, settings, owner).payment
    apply(db, settings, callback(settings, p))
    assert scalar(db, "SELECT number FROM invoices") == "INV-2026-000001"


def test_the_invoice_year_is_the_local_year(db, settings, owner):
    new_year_eve = clock.parse("2026-12-31T22:30:00Z")  # 01:30 on 1 January 2027 in Istanbul
    p = checkout(db, settings, owner, at=new_year_eve).payment
    apply(db, settings, callback(settings, p), at=new_year_eve)
    assert scalar(db, "SELECT number FROM invoices") == "INV-2027-000001"


def test_invoices_and_raw_callbacks_cannot_be_changed(db, settings, owner):
    import sqlite3
    apply(db, settings, callback(settings, checkout(db, settings, owner).payment))
    for sql in ("UPDATE invoices SET total = 1", "DELETE FROM invoices", "UPDATE invoice_lines SET amount = 1",
                "UPDATE callbacks SET outcome = 'x'", "DELETE FROM callbacks"):
        with pytest.raises(sqlite3.IntegrityError):
            db.execute(sql)


def test_abandoned_checkout_changes_nothing_else(db, settings, owner):
    p = checkout(db, settings, owner).payment
    payments.abandon(db, START, p["merchant_oid"], "PayTR refused: paytr_token geçersiz")
    row = payments.by_oid(db, p["merchant_oid"])
    assert row["status"] == "abandoned" and "geçersiz" in row["abandon_reason"]
    assert sub_of(db, owner)["status"] == "trialing"
