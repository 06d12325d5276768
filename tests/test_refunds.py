"""Staff refunds through PayTR (the emulator), and settling payment anomalies."""

import re
from datetime import timedelta

import pytest

from billing import accounts, refunds
from billing.db import one, rows, scalar
from billing.paytr.client import PaytrUnavailable
from conftest import START, login, outbox, post, register, second_browser, visible
from test_checkout_http import checkout_oid, iframe_src, pay, subscribe
from test_lifecycle import tick


@pytest.fixture
def paid(client, app, db):
    """A customer who paid for Starter; returns their payment row."""
    register(client)
    oid = checkout_oid(subscribe(client))
    pay(client, app, oid)
    return one(db, "SELECT * FROM payments WHERE merchant_oid = ?", [oid])


@pytest.fixture
def staff(app, db, password_hash):
    accounts.create_staff(db, START, email="ops@example.com", name="Operasyon Ekibi", password_hash=password_hash)
    browser = second_browser(app)
    assert login(browser, email="ops@example.com").status_code == 303
    return browser


def refund(staff, payment, amount="29.00", reason="Müşteri iki kez ödedi", **extra):
    """Fill the refund form, and confirm on the step that shows the amount and the customer's email.
    A form the first step refuses (422) comes back as it is."""
    page = f"/admin/payments/{payment['id']}/refund"
    key = re.search(r'name="request_key" value="([^"]+)"', staff.get(page).text)
    data = {"amount": amount, "reason": reason, "request_key": key.group(1) if key else "", **extra}
    review = post(staff, page, data, token_from=page)
    if review.status_code != 200 or 'name="step" value="confirm"' not in review.text:
        return review
    return post(staff, page, {**data, "step": "confirm"}, token_from=page)



def at_paytr(app, payment) -> list[tuple[int, str]]:
    return [(r.amount, r.reference_no) for r in app.state.emulator.transaction(payment["merchant_oid"]).refunds]


def test_staff_refund_part_then_the_rest_and_the_customer_sees_it(client, app, db, paid, staff):
    page = visible(staff.get(f"/admin/payments/{paid['id']}/refund"))
    assert "Refund a payment" in page and "Can be refunded $29.00" in page and "Invoice INV-2026-000001" in page

    response = refund(staff, paid, amount="10,50", reason="Hizmet kesintisi için iade")  # a Turkish decimal comma
    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/companies/{paid['company_id']}"
    company_page = visible(staff.get(response.headers["location"]))
    assert "Refunded $10.50. The customer gets an email." in company_page
    assert "Refunded Hizmet kesintisi için iade" in company_page

    [made] = rows(db, "SELECT * FROM refunds")
    assert (made["amount"], made["status"]) == (1050, "succeeded")
    assert at_paytr(app, paid) == [(1050, made["reference_no"])]
    [email] = outbox(db, template="refund_issued")
    assert email["to_addr"] == "ayse@example.com" and email["subject"] == "Refund issued: $10.50 for Yılmaz Yazılım A.Ş."
    assert "Hizmet kesintisi için iade" in email["body_text"] and "Paid: $29.00" in email["body_text"]
    dashboard = visible(client.get("/billing/"))
    assert "Partly refunded" in dashboard and "$10.50 refunded to your card" in dashboard

    assert "Can be refunded $18.50" in visible(staff.get(f"/admin/payments/{paid['id']}/refund"))
    assert refund(staff, paid, amount="18.50", reason="Abonelik iptali").status_code == 303
    assert sum(amount for amount, _ in at_paytr(app, paid)) == 2900
    dashboard = visible(client.get("/billing/"))
    assert "Refunded" in dashboard and "Partly refunded" not in dashboard
    assert "Nothing left to refund" in visible(staff.get(f"/admin/payments/{paid['id']}/refund"))
    # The refund neither changes the subscription nor the invoice.
    assert one(db, "SELECT status FROM subscriptions")["status"] == "active"
    assert "Total $29.00" in visible(client.get("/billing/invoices/INV-2026-000001"))


@pytest.mark.parametrize("amount, reason, message", [
    ("", "Neden", "Enter the amount to refund"),
    ("on lira", "Neden", "Enter the amount to refund"),
    ("1.234", "Neden", "Enter the amount to refund"),
    ("0", "Neden", "At most $29.00 can be refunded."),
    ("29.01", "Neden", "At most $29.00 can be refunded."),
    ("29.00", "   ", "Say why"),
])
def test_bad_refund_input_is_refused_and_changes_nothing(app, db, paid, staff, amount, reason, message):
    events_before = scalar(db, "SELECT count(*) FROM events")
    response = refund(staff, paid, amount=amount, reason=reason)
    assert response.status_code == 422 and message in response.text
    assert scalar(db, "SELECT count(*) FROM refunds") == 0 and at_paytr(app, paid) == []
    assert scalar(db, "SELECT count(*) FROM events") == events_before


def test_a_form_sent_twice_refunds_once(app, db, paid, staff):
    page = f"/admin/payments/{paid['id']}/refund"
    key = re.search(r'name="request_key" value="([^"]+)"', staff.get(page).text).group(1)
    data = {"amount": "5.00", "reason": "Çift tıklama", "request_key": key, "step": "confirm"}
    first, second = post(staff, page, data, token_from=page), post(staff, page, data, token_from=page)
    assert first.status_code == second.status_code == 303
    assert "already sent" in visible(staff.get(second.headers["location"]))
    assert len(at_paytr(app, paid)) == 1 and scalar(db, "SELECT count(*) FROM refunds") == 1


def test_a_double_click_while_paytr_is_slow_refunds_once(app, db, paid, staff):
    from concurrent.futures import ThreadPoolExecutor
    app.state.emulator.faults = app.state.emulator.faults.changed({"refund": "timeout", "timeout_seconds": 0.5})
    page = f"/admin/payments/{paid['id']}/refund"
    key = re.search(r'name="request_key" value="([^"]+)"', staff.get(page).text).group(1)
    data = {"amount": "5.00", "reason": "Çift tıklama, yavaş PayTR", "request_key": key, "step": "confirm"}
    token = re.search(r'name="csrf_token" value="([^"]+)"', staff.get(page).text).group(1)
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: staff.post(page, data={**data, "csrf_token": token},
                                                     follow_redirects=False), range(2)))
    assert [a.status_code for a in answers] == [303, 303]
    assert len(at_paytr(app, paid)) == 1 and scalar(db, "SELECT count(*) FROM refunds") == 1


def test_paytr_refusing_records_the_reason_and_frees_the_amount(app, db, paid, staff):
    app.state.emulator.faults = app.state.emulator.faults.changed(
        {"refund": "refuse", "refuse_reason": "İade yetkiniz bulunmuyor"})
    response = refund(staff, paid)
    page = visible(staff.get(response.headers["location"]))
    assert "PayTR refused the refund of $29.00: İade yetkiniz bulunmuyor. Nothing was refunded." in page
    assert one(db, "SELECT status, message FROM refunds") == {"status": "failed", "message": "İade yetkiniz bulunmuyor"}
    assert outbox(db, template="refund_issued") == []
    assert "Can be refunded $29.00" in visible(staff.get(f"/admin/payments/{paid['id']}/refund"))


def test_no_answer_from_paytr_is_settled_by_its_status_query(client, app, db, clock, paid, staff, monkeypatch):
    # PayTR makes the refund but its answer never arrives.
    app.state.emulator.faults = app.state.emulator.faults.changed({"refund": "timeout", "timeout_seconds": 30})
    monkeypatch.setattr(app.state.paytr, "settings", app.state.paytr.settings.replace(paytr_timeout=0.3))
    response = refund(staff, paid)
    page = visible(staff.get(response.headers["location"]))
    assert "PayTR did not answer, so we don't know yet whether $29.00 went back. Don't refund again" in page
    assert one(db, "SELECT status FROM refunds")["status"] == "unknown"
    assert "Checking with PayTR" in page
    # What may be on its way back cannot be refunded a second time meanwhile.
    assert "Nothing left to refund" in visible(staff.get(f"/admin/payments/{paid['id']}/refund"))
    assert outbox(db, template="refund_issued") == []

    tick(client, app, clock, START + timedelta(minutes=1))
    assert one(db, "SELECT status FROM refunds")["status"] == "unknown"  # too early to ask
    tick(client, app, clock, START + refunds.CHECK_AFTER + timedelta(minutes=1))
    made = one(db, "SELECT * FROM refunds")
    assert (made["status"], made["message"]) == ("succeeded", "PayTR's status query lists this refund.")
    assert len(outbox(db, template="refund_issued")) == 1
    assert len(at_paytr(app, paid)) == 1  # asked, never sent twice


def test_a_refund_that_never_reached_paytr_is_found_missing(client, app, db, clock, paid, staff, monkeypatch):
    async def lost(*args):
        raise PaytrUnavailable("could not reach PayTR (ConnectError)")
    monkeypatch.setattr(app.state.paytr, "refund", lost)
    refund(staff, paid)
    assert one(db, "SELECT status FROM refunds")["status"] == "unknown"
    tick(client, app, clock, START + refunds.CHECK_AFTER + timedelta(minutes=1))
    missing = one(db, "SELECT * FROM refunds")
    assert missing["status"] == "failed" and "no record of this refund" in missing["message"]
    assert at_paytr(app, paid) == [] and outbox(db, template="refund_issued") == []
    assert "Can be refunded $29.00" in visible(staff.get(f"/admin/payments/{paid['id']}/refund"))


def test_staff_can_settle_an_unknown_refund_from_paytrs_panel(app, db, paid, staff, monkeypatch):
    async def lost(*args):
        raise PaytrUnavailable("PayTR did not answer in time (ReadTimeout)")
    monkeypatch.setattr(app.state.paytr, "refund", lost)
    refund(staff, paid)
    company = f"/admin/companies/{paid['company_id']}"
    assert "Checked PayTR's panel yourself?" in visible(staff.get(company))
    refund_id = one(db, "SELECT id FROM refunds")["id"]
    assert post(staff, f"/admin/refunds/{refund_id}/settle", {"outcome": "maybe"}, token_from=company).status_code == 400
    assert post(staff, "/admin/refunds/999/settle", {"outcome": "made"}, token_from=company).status_code == 404
    assert one(db, "SELECT status FROM refunds")["status"] == "unknown"
    post(staff, f"/admin/refunds/{refund_id}/settle", {"outcome": "not_made"}, token_from=company)
    settled = one(db, "SELECT * FROM refunds")
    assert settled["status"] == "failed" and "Operasyon Ekibi" in settled["message"]
    # Once decided, a second answer changes nothing.
    post(staff, f"/admin/refunds/{refund_id}/settle", {"outcome": "made"}, token_from=company)
    assert one(db, "SELECT status FROM refunds")["status"] == "failed"


def test_a_refund_left_pending_by_a_crash_is_settled_by_the_tick(client, app, db, clock, settings, paid):
    # The process died after recording the refund, before PayTR's answer was written down.
    started, created = refunds.start(db, START, payment_id=paid["id"], amount="29.00", reason="Çökme testi",
                                     request_key="crash-test", actor="staff:1")
    assert created and started["status"] == "pending"
    # The same form again while the first waits for PayTR: the existing refund, not to be sent again.
    again, created = refunds.start(db, START, payment_id=paid["id"], amount="29.00", reason="Çökme testi",
                                   request_key="crash-test", actor="staff:1")
    assert again["id"] == started["id"] and not created
    tick(client, app, clock, START + refunds.CHECK_AFTER + timedelta(minutes=1))
    assert one(db, "SELECT status FROM refunds")["status"] == "failed"  # it never reached PayTR
    assert at_paytr(app, paid) == []


def pay_twice(client, app) -> str:
    """Two tabs: the customer pays the newer checkout, then the one it replaced. Returns the older oid."""
    register(client)
    first = checkout_oid(subscribe(client))
    first_form = iframe_src(client, first)
    second = checkout_oid(subscribe(client))  # replaces the first
    pay(client, app, second)
    client.post(first_form, data={"cc_owner": "AYSE YILMAZ", "card_number": "4355 0843 5508 4358",
                                  "expiry": "12/30", "cvv": "000"})
    client.portal.call(app.state.emulator.wait_idle, 15)
    return first


def test_a_double_payment_refunded_in_full_is_resolved(client, app, db, staff):
    first = pay_twice(client, app)
    flagged = one(db, "SELECT * FROM payments WHERE merchant_oid = ?", [first])
    assert flagged["status"] == "needs_review"
    home = visible(staff.get("/admin/"))
    assert "Payments that need a look" in home and "Second success" in home

    assert refund(staff, flagged, reason="Aynı dönem iki kez ödendi").status_code == 303
    anomaly = one(db, "SELECT * FROM anomalies")
    assert anomaly["resolved_at"] and anomaly["resolution"].startswith("Refunded in full ($29.00")
    assert "Payments that need a look" not in visible(staff.get("/admin/"))
    dashboard = visible(client.get("/billing/"))
    assert "Refunded" in dashboard and "Our team is checking this payment" not in dashboard


def test_staff_resolve_an_anomaly_with_a_note(client, app, db, staff):
    pay_twice(client, app)
    anomaly_id = one(db, "SELECT id FROM anomalies")["id"]
    empty = post(staff, f"/admin/anomalies/{anomaly_id}/resolve", {"note": "  ", "back": "/admin/"},
                 token_from="/admin/")
    assert "Say what was done" in visible(staff.get(empty.headers["location"]))
    assert one(db, "SELECT resolved_at FROM anomalies")["resolved_at"] is None

    done = post(staff, f"/admin/anomalies/{anomaly_id}/resolve",
                {"note": "Müşteriyle konuşuldu, sonraki aya sayılacak", "back": "https://evil.example/"},
                token_from="/admin/")
    assert done.headers["location"] == "/admin/"  # only our own pages
    resolved = one(db, "SELECT * FROM anomalies")
    assert resolved["resolution"] == "Müşteriyle konuşuldu, sonraki aya sayılacak"
    assert resolved["resolved_by"].startswith("staff:")
    assert "Payments that need a look" not in visible(staff.get("/admin/"))


def test_customers_cannot_refund(client, app, db, paid):
    page = f"/admin/payments/{paid['id']}/refund"
    assert client.get(page).status_code == 403
    assert client.post(page, data={"amount": "29.00", "reason": "x", "request_key": "k"}).status_code == 403
    assert scalar(db, "SELECT count(*) FROM refunds") == 0


def test_unknown_payment_is_404(staff):
    assert staff.get("/admin/payments/999/refund").status_code == 404
