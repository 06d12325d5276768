"""Subscribing over HTTP against the built-in PayTR emulator: iframe, callbacks, result pages, invoices."""

import re

import pytest

from billing.db import rows, scalar
from billing.paytr import protocol
from conftest import PASSWORD, outbox, post, register, second_browser


def subscribe(client, plan="starter"):
    return post(client, f"/billing/subscribe/{plan}", token_from="/billing/")


def checkout_oid(response) -> str:
    assert response.status_code == 303, response.text[:500]
    return re.fullmatch(r"/billing/checkout/(\w+)", response.headers["location"]).group(1)


def iframe_src(client, oid) -> str:
    page = client.get(f"/billing/checkout/{oid}")
    return re.search(r'<iframe id="paytriframe" src="([^"]+)"', page.text).group(1)


def pay(client, app, oid, card="4355 0843 5508 4358"):
    """The customer types a card into PayTR's iframe; PayTR then calls us back."""
    src = iframe_src(client, oid)
    answer = client.post(src, data={"cc_owner": "AYSE YILMAZ", "card_number": card, "expiry": "12/30",
                                    "cvv": "000"}, follow_redirects=False)
    client.portal.call(app.state.emulator.wait_idle, 15)
    return answer


@pytest.fixture
def owner(client):
    register(client)
    return client


def test_checkout_page_embeds_paytrs_iframe_with_the_plan_amount_and_period(owner, db):
    oid = checkout_oid(subscribe(owner))
    page = owner.get(f"/billing/checkout/{oid}")
    text = re.sub(r"\s+", " ", page.text)
    assert 'id="paytriframe"' in text and "/paytr-emulator/odeme/guvenli/" in text
    assert "Pay for Starter" in text and "$29.00" in text and "Starter plan, 11 December 2026 – 11 January 2027" in text
    [payment] = rows(db, "SELECT * FROM payments")
    assert (payment["status"], payment["merchant_oid"], payment["amount"]) == ("pending", oid, 2900)
    assert payment["paytr_token"] and payment["paytr_token"] in text


def test_paying_with_a_test_card_activates_the_plan_exactly_once(app, owner, db):
    oid = checkout_oid(subscribe(owner))
    answer = pay(owner, app, oid)
    assert f"/billing/payment/success?oid={oid}" in answer.text  # PayTR sends the top window back
    result = owner.get(f"/billing/payment/success?oid={oid}")
    assert "Your Starter plan is active" in result.text and "Paid until 11 January 2027" in result.text
    dashboard = re.sub(r"\s+", " ", owner.get("/billing/").text)
    assert "Active" in dashboard and "Paid until 11 January 2027" in dashboard
    assert "INV-2026-000001" in dashboard and "$29.00" in dashboard and "Paid" in dashboard
    invoice = re.sub(r"\s+", " ", owner.get("/billing/invoices/INV-2026-000001").text)
    for fact in ("Invoice INV-2026-000001", "Yılmaz Yazılım A.Ş.", "Net", "$24.17", "VAT 20%", "$4.83",
                 "Total", "$29.00", "Starter plan, 11 December 2026 – 11 January 2027"):
        assert fact in invoice
    [mail] = outbox(db, template="payment_succeeded")
    assert "http://testserver/billing/invoices/INV-2026-000001" in mail["body_text"]
    [callback] = rows(db, "SELECT outcome FROM callbacks")
    assert callback == {"outcome": "applied"}


def test_a_declined_card_shows_the_reason_and_trying_again_succeeds(app, owner, db):
    oid = checkout_oid(subscribe(owner))
    answer = pay(owner, app, oid, card="4000 0000 0000 0002")
    assert f"/billing/payment/fail?oid={oid}" in answer.text
    fail = owner.get(f"/billing/payment/fail?oid={oid}")
    # Our own sentence from PayTR's failed_reason_code, never PayTR's Turkish words glued into English.
    assert "did not go through" in fail.text and "Your bank declined the payment." in fail.text
    assert "Kartın bakiyesi yetersiz" not in fail.text
    assert 'action="/billing/subscribe/starter"' in fail.text  # the try-again button
    [mail] = outbox(db, template="payment_failed")
    assert "Kartın bakiyesi yetersiz" in mail["body_text"]
    again = checkout_oid(post(owner, "/billing/subscribe/starter", token_from=f"/billing/payment/fail?oid={oid}"))
    pay(owner, app, again)
    assert "Your Starter plan is active" in owner.get(f"/billing/payment/success?oid={again}").text


def test_the_success_page_polls_until_the_callback_is_applied(app, owner):
    oid = checkout_oid(subscribe(owner))
    app.state.emulator.set_faults(callback_delay=0.5)
    src = iframe_src(owner, oid)
    owner.post(src, data={"cc_owner": "A", "card_number": "4355084355084358", "expiry": "12/30", "cvv": "000"})
    waiting = owner.get(f"/billing/payment/success?oid={oid}")
    assert "Confirming your payment" in waiting.text
    assert 'hx-trigger="every 1500ms"' in waiting.text  # htmx polls; without JS a refresh link
    fragment = owner.get(f"/billing/payment/{oid}/status?from=success", headers={"HX-Request": "true"})
    assert fragment.text.lstrip().startswith('<div id="payment-status"')
    owner.portal.call(app.state.emulator.wait_idle, 15)
    done = owner.get(f"/billing/payment/{oid}/status?from=success", headers={"HX-Request": "true"})
    assert "is active" in done.text and "hx-trigger" not in done.text  # polling stops


def test_paytr_refusing_the_token_shows_its_reason_and_changes_nothing(app, owner, db):
    app.state.emulator.set_faults(get_token="refuse", refuse_reason="Mağaza API yetkisi kapalı")
    response = subscribe(owner)
    assert response.status_code == 502
    # The customer reads our sentence; PayTR's reason is kept for staff (the payment row, the timeline).
    assert "The payment page could not be opened; please try again." in response.text and "Try again" in response.text
    assert "Mağaza API yetkisi kapalı" not in response.text
    [payment] = rows(db, "SELECT status, abandon_reason FROM payments")
    assert payment["status"] == "abandoned" and "Mağaza API yetkisi kapalı" in payment["abandon_reason"]
    assert scalar(db, "SELECT status FROM subscriptions") == "trialing"


@pytest.mark.parametrize("env", [{"PAYTR_TIMEOUT": "1"}])
def test_paytr_not_answering_in_time_shows_a_clear_message(app, owner, db):
    app.state.emulator.set_faults(get_token="timeout", timeout_seconds=3)
    response = subscribe(owner)
    assert response.status_code == 504
    assert "PayTR is not answering right now" in response.text and "Nothing was charged" in response.text
    assert scalar(db, "SELECT status FROM payments") == "abandoned"


def test_double_click_supersedes_the_first_checkout(owner, db):
    first = checkout_oid(subscribe(owner))
    second = checkout_oid(subscribe(owner))
    assert first != second
    assert "replaced by a newer one" in owner.get(f"/billing/checkout/{first}").text
    assert 'id="paytriframe"' in owner.get(f"/billing/checkout/{second}").text
    statuses = {r["merchant_oid"]: r["status"] for r in rows(db, "SELECT merchant_oid, status FROM payments")}
    assert statuses == {first: "superseded", second: "pending"}


def test_unknown_plan_is_404(owner):
    response = post(owner, "/billing/subscribe/platinum", token_from="/billing/")
    assert response.status_code == 404 and "plan by that name" in response.text


def test_subscribing_needs_the_owner_and_a_csrf_token(app, owner, db):
    assert owner.post("/billing/subscribe/starter").status_code == 403  # no CSRF token
    post(owner, "/billing/team/invite", {"email": "member@example.com"}, token_from="/billing/team")
    link = re.search(r"http://testserver(/auth/invite/\S+)", outbox(db, template="invite")[0]["body_text"]).group(1)
    member = second_browser(app)
    post(member, link, {"name": "Üye", "password": PASSWORD}, token_from=link)
    assert post(member, "/billing/subscribe/starter", token_from="/billing/").status_code == 403
    assert scalar(db, "SELECT count(*) FROM payments") == 0


def test_other_companies_cannot_see_a_payment_or_invoice(app, owner, db):
    oid = checkout_oid(subscribe(owner))
    pay(owner, app, oid)
    stranger = second_browser(app)
    register(stranger, email="other@example.com", company="Başka Şirket")
    assert stranger.get("/billing/invoices/INV-2026-000001").status_code == 404
    assert stranger.get(f"/billing/payment/success?oid={oid}").status_code == 404
    assert stranger.get(f"/billing/checkout/{oid}").status_code == 404
    stranger.cookies.clear()
    assert stranger.get("/billing/invoices/INV-2026-000001", follow_redirects=False).status_code == 303


def callback_body(settings, oid, status="success", total=2900, **extra):
    return protocol.callback_form(merchant_oid=oid, status=status, total_amount=total,
                                  key=str(settings.paytr_merchant_key), salt=str(settings.paytr_merchant_salt),
                                  **extra)


def test_callback_answers_exactly_ok_in_plain_text(client, settings):
    response = client.post("/billing/callback", data=callback_body(settings, "PB1TUNKNOWN"))
    assert response.status_code == 200
    assert response.content == b"OK"
    assert response.headers["content-type"].startswith("text/plain")
    assert "set-cookie" not in response.headers  # no session for PayTR


@pytest.mark.parametrize("change, reason", [
    ({"hash": "forged"}, "bad hash"),
    ({"total_amount": "1"}, "bad hash"),
    ({"status": "failed"}, "bad hash"),
    ({"hash": ""}, "missing hash"),
])
def test_forged_or_incomplete_callbacks_get_400_and_change_nothing(client, settings, db, change, reason):
    before = scalar(db, "SELECT count(*) FROM callbacks")
    response = client.post("/billing/callback", data={**callback_body(settings, "PB1TX"), **change})
    assert response.status_code == 400 and reason in response.text
    assert scalar(db, "SELECT count(*) FROM callbacks") == before
    assert scalar(db, "SELECT count(*) FROM anomalies") == 0


def test_callback_needs_post_and_a_form(client):
    assert client.get("/billing/callback").status_code == 405
    response = client.post("/billing/callback", content=b"\x00\xff not a form",
                           headers={"content-type": "application/octet-stream"})
    assert response.status_code == 400


def test_a_huge_callback_body_is_refused(client):
    response = client.post("/billing/callback", content=b"a=" + b"x" * 70_000,
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413
