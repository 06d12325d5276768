"""The PayTR emulator, checked against PayTR's published protocol.

Tokens and hashes are computed here straight from the published recipes with
hmac/base64 (not through billing.paytr.protocol), so the emulator and this file can
only agree if both follow PayTR. Callbacks go to a small merchant app served through
httpx.ASGITransport; `retry_base` is tiny so retries are fast.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import asyncio
import dataclasses
import re
import time
from datetime import timedelta

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from billing.paytr.emulator import EmulatorConfig, create_emulator

MERCHANT_ID, KEY, SALT = "123456", "EmuKey0123456789", "EmuSalt987654321"
CONFIG = EmulatorConfig(merchant_id=MERCHANT_ID, merchant_key=KEY, merchant_salt=SALT,
                        notification_url="http://merchant/paytr/callback", retry_base=0.01, retry_max=0.05,
                        callback_timeout=2.0)

# Field orders as PayTR's documentation publishes them (the salt comes after).
GET_TOKEN_ORDER = ("merchant_id", "user_ip", "merchant_oid", "email", "payment_amount", "user_basket",
                   "no_installment", "max_installment", "currency", "test_mode")
DIRECT_ORDER = ("merchant_id", "user_ip", "merchant_oid", "email", "payment_amount", "payment_type",
                "installment_count", "currency", "test_mode", "non_3d")

TEST_CARDS = ["4355084355084358", "5406675406675403", "9792030394440796"]
BASKET = base64.b64encode(json.dumps([["Starter plan, 1 month", "29.00", 1]]).encode()).decode()
OK_URL, FAIL_URL = "https://shop.example/billing/paid", "https://shop.example/billing/failed"


def published_token(*values: str) -> str:
    message = "".join(values) + SALT
    return base64.b64encode(hmac.new(KEY.encode(), message.encode(), hashlib.sha256).digest()).decode()


def assert_published_callback_hash(form: dict) -> None:
    message = form["merchant_oid"] + SALT + form["status"] + form["total_amount"]
    expected = base64.b64encode(hmac.new(KEY.encode(), message.encode(), hashlib.sha256).digest()).decode()
    assert form["hash"] == expected


def get_token_form(oid: str = "PB1T1", **changes) -> dict:
    fields = {"merchant_id": MERCHANT_ID, "user_ip": "85.34.78.112", "merchant_oid": oid,
              "email": "ayse@example.com", "payment_amount": "2900", "user_basket": BASKET, "no_installment": "1",
              "max_installment": "0", "currency": "USD", "test_mode": "1", "user_name": "Ayşe Yılmaz",
              "user_address": "Kadıköy, İstanbul", "user_phone": "05550000000", "merchant_ok_url": OK_URL,
              "merchant_fail_url": FAIL_URL, "timeout_limit": "30", "debug_on": "0", "lang": "en"}
    fields.update(changes)
    fields = {name: value for name, value in fields.items() if value is not None}
    fields["paytr_token"] = published_token(*(fields.get(name, "") for name in GET_TOKEN_ORDER))
    return fields


def direct_form(oid: str, card: str = TEST_CARDS[0], **changes) -> dict:
    fields = {"merchant_id": MERCHANT_ID, "user_ip": "85.34.78.112", "merchant_oid": oid,
              "email": "ayse@example.com", "payment_amount": "29.00", "payment_type": "card",
              "installment_count": "0", "currency": "USD", "test_mode": "1", "non_3d": "0",
              "cc_owner": "AYSE YILMAZ", "card_number": card, "expiry_month": "12", "expiry_year": "30",
              "cvv": "000", "merchant_ok_url": OK_URL, "merchant_fail_url": FAIL_URL, "user_name": "Ayşe Yılmaz",
              "user_address": "Kadıköy, İstanbul", "user_phone": "05550000000", "user_basket": BASKET}
    fields.update(changes)
    fields["paytr_token"] = published_token(*(fields[name] for name in DIRECT_ORDER))
    return fields


def recurring_form(oid: str, utoken: str, ctoken: str) -> dict:
    fields = {"merchant_id": MERCHANT_ID, "user_ip": "85.34.78.112", "merchant_oid": oid,
              "email": "ayse@example.com", "payment_amount": "29.00", "payment_type": "card",
              "installment_count": "0", "currency": "USD", "test_mode": "1", "non_3d": "1", "utoken": utoken,
              "ctoken": ctoken, "recurring_payment": "1", "user_name": "Ayşe Yılmaz",
              "user_address": "Kadıköy, İstanbul", "user_phone": "05550000000", "user_basket": BASKET,
              "merchant_ok_url": OK_URL, "merchant_fail_url": FAIL_URL}
    fields["paytr_token"] = published_token(*(fields[name] for name in DIRECT_ORDER))
    return fields


def card_fields(number: str = TEST_CARDS[0], **changes) -> dict:
    fields = {"cc_owner": "AYSE YILMAZ", "card_number": number, "expiry": "12/30", "cvv": "000"}
    fields.update(changes)
    return fields


class Merchant:
    """The merchant's notification URL: records each callback, answers OK unless told otherwise."""

    def __init__(self):
        self.forms: list[dict] = []
        self.answers: list[tuple[int, str]] = []  # given first, in order; then "OK"
        self.app = Starlette(routes=[Route("/paytr/callback", self.notify, methods=["POST"])])

    async def notify(self, request: Request) -> Response:
        self.forms.append(dict(await request.form()))
        status, body = self.answers.pop(0) if self.answers else (200, "OK")
        return Response(body, status_code=status, media_type="text/plain")


class PayTR:
    """A test client of the emulator, with the steps every test repeats."""

    def __init__(self, client: TestClient, emulator, merchant: Merchant, prefix: str = ""):
        self.client, self.emulator, self.merchant, self.prefix = client, emulator, merchant, prefix

    def post(self, path: str, data: dict, **kwargs) -> httpx.Response:
        return self.client.post(self.prefix + path, data=data, **kwargs)

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.client.get(self.prefix + path, **kwargs)

    def token(self, oid: str = "PB1T1", **changes) -> str:
        answer = self.post("/odeme/api/get-token", get_token_form(oid, **changes)).json()
        assert answer["status"] == "success", answer
        return answer["token"]

    def pay(self, oid: str = "PB1T1", number: str = TEST_CARDS[0], **changes) -> httpx.Response:
        return self.post(f"/odeme/guvenli/{self.token(oid, **changes)}", card_fields(number))

    def wait(self) -> None:
        self.client.portal.call(self.emulator.wait_idle, 5)

    def status(self, oid: str) -> dict:
        return self.post("/odeme/durum-sorgu", {"merchant_id": MERCHANT_ID, "merchant_oid": oid,
                                                "paytr_token": published_token(MERCHANT_ID, oid)}).json()

    def refund(self, oid: str, amount: str, reference_no: str | None = None) -> dict:
        form = {"merchant_id": MERCHANT_ID, "merchant_oid": oid, "return_amount": amount,
                "paytr_token": published_token(MERCHANT_ID, oid, amount)}
        if reference_no:
            form["reference_no"] = reference_no
        return self.post("/odeme/iade", form).json()


def serve(merchant: Merchant, prefix: str = "", state_path=None):
    """Yield a PayTR helper (mounted under `prefix` if given); deliveries stopped and clients closed after."""
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=merchant.app), base_url="http://merchant")
    emulator_app = create_emulator(CONFIG, callback_client=http, state_path=state_path)
    root = Starlette(routes=[Mount(prefix, app=emulator_app)]) if prefix else emulator_app
    with TestClient(root, base_url="http://paytr.test") as client:
        emulator = emulator_app.state.emulator
        yield PayTR(client, emulator, merchant, prefix)
        client.portal.call(emulator.aclose)
        client.portal.call(http.aclose)


@pytest.fixture
def merchant():
    return Merchant()


@pytest.fixture
def paytr(merchant):
    yield from serve(merchant)


def text_of(response: httpx.Response) -> str:
    return re.sub(r"\s+", " ", response.text)


# --- get-token -----------------------------------------------------------------------------


def test_get_token_answers_a_token_and_records_a_pending_order(paytr):
    answer = paytr.post("/odeme/api/get-token", get_token_form("PB1T1"))
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "success" and re.fullmatch(r"[A-Za-z0-9_-]{20,}", body["token"])
    assert paytr.emulator.transaction("PB1T1").status == "pending"
    assert paytr.status("PB1T1") == {"status": "error", "err_no": "005", "err_msg": "Ödeme henüz tamamlanmadı"}


def test_get_token_signs_an_absent_currency_as_empty_and_reads_it_as_tl(paytr):
    paytr.pay("PB1T2", currency=None)
    assert paytr.status("PB1T2")["currency"] == "TL"


@pytest.mark.parametrize(("changes", "reason"), [
    ({"payment_amount": "99"}, "payment_amount en az 100"),
    ({"payment_amount": "29.00"}, "payment_amount 100 ile çarpılmış"),
    ({"merchant_oid": "PB-1"}, "merchant_oid yalnızca harf ve rakam"),
    ({"merchant_oid": "A" * 65}, "en fazla 64"),
    ({"user_phone": None}, "Zorunlu alan eksik: user_phone"),
    ({"merchant_id": "999999"}, "merchant_id geçersiz"),
    ({"currency": "JPY"}, "currency geçersiz"),
    ({"email": "not-an-email"}, "email geçersiz"),
    ({"user_basket": "bm90IGpzb24="}, "user_basket geçersiz"),
    ({"user_basket": base64.b64encode(b"[]").decode()}, "user_basket geçersiz"),
])
def test_get_token_refuses_what_paytr_refuses(paytr, changes, reason):
    form = get_token_form("PB1T1", **changes)
    answer = paytr.post("/odeme/api/get-token", form).json()
    assert answer["status"] == "failed" and reason in answer["reason"]
    assert paytr.emulator.transaction(form["merchant_oid"]) is None


def test_get_token_refuses_a_token_not_made_with_the_published_formula(paytr):
    form = get_token_form("PB1T1")
    # Same fields, but the salt left out: what a merchant gets wrong most often.
    form["paytr_token"] = base64.b64encode(hmac.new(KEY.encode(), "".join(
        form[name] for name in GET_TOKEN_ORDER).encode(), hashlib.sha256).digest()).decode()
    answer = paytr.post("/odeme/api/get-token", form).json()
    assert answer["status"] == "failed" and answer["reason"].startswith("paytr_token geçersiz")
    assert paytr.emulator.transaction("PB1T1") is None


def test_get_token_refuses_a_merchant_oid_used_before(paytr):
    paytr.token("PB1T1")
    answer = paytr.post("/odeme/api/get-token", get_token_form("PB1T1", payment_amount="9900")).json()
    assert answer == {"status": "failed", "reason": "merchant_oid daha önce kullanılmış: PB1T1"}
    assert paytr.emulator.transaction("PB1T1").amount == 2900


def test_get_token_fault_refuse_answers_the_configured_reason(paytr):
    paytr.emulator.set_faults(get_token="refuse", refuse_reason="Mağaza kapalı")
    assert paytr.post("/odeme/api/get-token", get_token_form()).json() == {"status": "failed",
                                                                           "reason": "Mağaza kapalı"}
    assert paytr.emulator.transactions() == []


def test_get_token_fault_timeout_answers_late_and_still_records_the_order(paytr):
    paytr.emulator.set_faults(get_token="timeout", timeout_seconds=0.3)
    started = time.monotonic()
    answer = paytr.post("/odeme/api/get-token", get_token_form("PB1T1")).json()
    assert time.monotonic() - started >= 0.3
    # A caller that gave up must ask the status query before trying again: the order exists.
    assert answer["status"] == "success" and paytr.emulator.transaction("PB1T1") is not None


# --- the payment page ----------------------------------------------------------------------


def test_payment_page_shows_amount_basket_labels_and_test_cards(paytr):
    page = paytr.get(f"/odeme/guvenli/{paytr.token()}")
    assert page.status_code == 200
    text = text_of(page)
    for label, name in [("Name on card", "cc_owner"), ("Card number", "card_number"),
                        ("Expiry (MM/YY)", "expiry"), ("CVV", "cvv")]:
        assert f'<label for="{name}">{label}</label>' in text and f'name="{name}"' in text
    assert '<button class="wide" type="submit">Pay 29.00 USD</button>' in text
    assert "Starter plan, 1 month" in text and "PayTR emulator" in text
    assert "Test cards" in text and all(card in text for card in TEST_CARDS + ["4000000000000002"])


def test_payment_page_of_an_unknown_or_expired_token_is_a_404(paytr):
    assert paytr.get("/odeme/guvenli/nope").status_code == 404
    token = paytr.token("PB1T1", timeout_limit="5")
    paytr.emulator.transaction("PB1T1").created -= timedelta(minutes=6)
    page = paytr.get(f"/odeme/guvenli/{token}")
    assert page.status_code == 404 and "expired" in page.text
    assert paytr.post(f"/odeme/guvenli/{token}", card_fields()).status_code == 404


@pytest.mark.parametrize("card", TEST_CARDS)
def test_paying_with_a_test_card_sends_a_signed_success_callback(paytr, merchant, card):
    page = paytr.pay("PB1T1", card)
    assert page.status_code == 200
    assert f"window.top.location.href = \"{OK_URL}\"" in page.text
    assert f'<a href="{OK_URL}" target="_top">' in page.text
    paytr.wait()
    [form] = merchant.forms
    assert_published_callback_hash(form)
    assert form["merchant_oid"] == "PB1T1" and form["status"] == "success" and form["total_amount"] == "2900"
    assert form["payment_amount"] == "2900" and form["currency"] == "USD" and form["test_mode"] == "1"
    assert form["payment_type"] == "card" and form["installment_count"] == "0" and "utoken" not in form
    assert paytr.emulator.transaction("PB1T1").delivered


@pytest.mark.parametrize(("card", "message"), [
    ("4000000000000002", "Kartın bakiyesi yetersiz (insufficient funds)"),
    ("4000000000000069", "Kartın son kullanma tarihi geçmiş (expired card)"),
    ("4111111111111111", "Test modunda yalnızca test kartları kullanılabilir"),
])
def test_a_declined_card_sends_a_failed_callback_with_the_reason(paytr, merchant, card, message):
    page = paytr.pay("PB1T1", card)
    assert f"window.top.location.href = \"{FAIL_URL}\"" in page.text and message in page.text
    paytr.wait()
    [form] = merchant.forms
    assert_published_callback_hash(form)
    assert form["status"] == "failed" and form["total_amount"] == "0"
    assert form["failed_reason_code"] == "0" and form["failed_reason_msg"] == message
    assert paytr.status("PB1T1") == {"status": "failed", "err_msg": message}


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"cc_owner": " "}, "cc_owner", "Enter the name printed on the card."),
    ({"card_number": "4355084355084359"}, "card_number", "This card number is not valid."),
    ({"card_number": "4355 0843"}, "card_number", "This card number is not valid."),
    ({"expiry": "13/30"}, "expiry", "Enter the expiry date as MM/YY."),
    ({"expiry": "1230"}, "expiry", "Enter the expiry date as MM/YY."),
    ({"expiry": "01/20"}, "expiry", "This card has expired."),
    ({"cvv": "12"}, "cvv", "The CVV is the 3 digits on the back of the card."),
])
def test_invalid_card_input_is_a_422_next_to_the_field_and_decides_nothing(paytr, merchant, changes, field, message):
    token = paytr.token("PB1T1")
    page = paytr.post(f"/odeme/guvenli/{token}", {**card_fields(), **changes})
    assert page.status_code == 422
    assert f'<p class="error" id="{field}-error">{message}</p>' in page.text
    assert 'value="000"' not in page.text  # the CVV is never echoed back
    paytr.wait()
    assert merchant.forms == [] and paytr.emulator.transaction("PB1T1").status == "pending"
    assert paytr.post(f"/odeme/guvenli/{token}", card_fields()).status_code == 200  # still payable


def test_a_payment_page_can_be_paid_only_once(paytr, merchant):
    token = paytr.token("PB1T1")
    assert paytr.post(f"/odeme/guvenli/{token}", card_fields()).status_code == 200
    again = paytr.post(f"/odeme/guvenli/{token}", card_fields("4000000000000002"))
    assert again.status_code == 409 and "already processed" in again.text
    assert "already processed" in paytr.get(f"/odeme/guvenli/{token}").text
    paytr.wait()
    assert [form["status"] for form in merchant.forms] == ["success"]


# --- callback delivery -------------------------------------------------------------------------


def test_a_callback_is_retried_with_backoff_until_the_answer_is_exactly_ok(paytr, merchant):
    merchant.answers = [(200, "NOT OK"), (200, "NOT OK")]
    paytr.pay("PB1T1")
    paytr.wait()
    attempts = paytr.emulator.transaction("PB1T1").attempts
    assert [(a.body, a.delivered) for a in attempts] == [("NOT OK", False), ("NOT OK", False), ("OK", True)]
    assert len(merchant.forms) == 3 and all(form == merchant.forms[0] for form in merchant.forms)
    first_gap, second_gap = ((later.at - earlier.at).total_seconds() for earlier, later in zip(attempts, attempts[1:]))
    assert first_gap >= 0.01 and second_gap >= 0.02  # retry_base, then doubled


@pytest.mark.parametrize(("status", "body"), [(200, "OK\n"), (200, " OK"), (200, "ok"), (500, "OK"), (302, "")])
def test_only_http_200_with_body_exactly_ok_counts_as_delivered(paytr, merchant, status, body):
    merchant.answers = [(status, body)]
    paytr.pay("PB1T1")
    paytr.wait()
    first, second = paytr.emulator.transaction("PB1T1").attempts
    assert first.answer == f"HTTP {status}" and first.body == body and not first.delivered
    assert second.delivered


def test_a_callback_to_an_unreachable_merchant_is_recorded_and_retried(merchant):
    emulator_app = create_emulator(EmulatorConfig(MERCHANT_ID, KEY, SALT, "http://127.0.0.1:9/callback",
                                                  retry_base=0.01, callback_timeout=1.0))
    emulator = emulator_app.state.emulator
    with TestClient(emulator_app) as client:
        token = client.post("/odeme/api/get-token", data=get_token_form("PB1T1")).json()["token"]
        client.post(f"/odeme/guvenli/{token}", data=card_fields())
        with pytest.raises(TimeoutError):
            client.portal.call(emulator.wait_idle, 0.3)
        attempts = emulator.transaction("PB1T1").attempts
        assert len(attempts) >= 2 and not any(attempt.delivered for attempt in attempts)
        assert "ConnectError" in attempts[0].answer


def test_a_host_can_attach_its_callback_client_after_creating_the_emulator(merchant):
    emulator_app = create_emulator(CONFIG)  # the host's own client does not exist yet
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=merchant.app), base_url="http://merchant")
    emulator_app.state.emulator.attach_callback_client(http)
    with TestClient(emulator_app) as client:
        paytr = PayTR(client, emulator_app.state.emulator, merchant)
        paytr.pay("PB1T1")
        paytr.wait()
        assert [form["merchant_oid"] for form in merchant.forms] == ["PB1T1"]
        client.portal.call(http.aclose)


def test_duplicate_callbacks_fault_delivers_each_copy(paytr, merchant):
    paytr.emulator.set_faults(duplicate_callbacks=3)
    paytr.pay("PB1T1")
    paytr.wait()
    assert len(merchant.forms) == 3 and all(form == merchant.forms[0] for form in merchant.forms)
    assert sorted(a.delivery for a in paytr.emulator.transaction("PB1T1").attempts if a.delivered) == [1, 2, 3]


def test_drop_first_fault_loses_attempts_without_sending_them(paytr, merchant):
    paytr.emulator.set_faults(drop_first=2)
    paytr.pay("PB1T1")
    paytr.wait()
    attempts = paytr.emulator.transaction("PB1T1").attempts
    assert [a.answer.startswith("dropped") for a in attempts] == [True, True, False]
    assert attempts[-1].delivered and len(merchant.forms) == 1


def test_callback_delay_fault_holds_the_first_attempt(paytr, merchant):
    paytr.emulator.set_faults(callback_delay=0.3)
    paytr.pay("PB1T1")
    assert merchant.forms == []
    paytr.wait()
    transaction = paytr.emulator.transaction("PB1T1")
    assert (transaction.attempts[0].at - transaction.decided_at).total_seconds() >= 0.3


def test_send_callback_again_starts_a_new_delivery(paytr, merchant):
    paytr.pay("PB1T1")
    paytr.wait()
    answer = paytr.post("/transactions/PB1T1/callback", {}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    paytr.wait()
    assert len(merchant.forms) == 2 and merchant.forms[0] == merchant.forms[1]
    assert [a.delivery for a in paytr.emulator.transaction("PB1T1").attempts] == [1, 2]
    detail = paytr.post("/transactions/PB1T1/callback", {"back": "detail"}, follow_redirects=False)
    assert detail.headers["location"] == "/transactions/PB1T1"


def test_send_callback_again_replaces_a_delivery_still_retrying(paytr, merchant):
    merchant.answers = [(500, "down")] * 10_000
    paytr.pay("PB1T1")
    transaction = paytr.emulator.transaction("PB1T1")
    while len(transaction.attempts) < 2:
        time.sleep(0.01)
    paytr.post("/transactions/PB1T1/callback", {})
    first_delivery = [a for a in transaction.attempts if a.delivery == 1]
    time.sleep(0.2)  # several retry intervals
    assert [a for a in transaction.attempts if a.delivery == 1] == first_delivery
    assert any(a.delivery == 2 for a in transaction.attempts)
    merchant.answers = []
    paytr.wait()
    assert transaction.attempts[-1].delivery == 2 and transaction.attempts[-1].delivered


def test_a_pending_transaction_has_no_callback_to_send(paytr, merchant):
    paytr.token("PB1T1")
    assert paytr.post("/transactions/PB1T1/callback", {}).status_code == 409
    paytr.wait()
    assert merchant.forms == []


# --- status query and refunds ----------------------------------------------------------------


def test_status_query_of_a_paid_order_writes_amounts_like_php(paytr):
    paytr.pay("PB1T1", payment_amount="1080", currency="TL")
    answer = paytr.status("PB1T1")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", answer.pop("payment_date"))
    assert answer == {"status": "success", "payment_amount": "10.8", "payment_total": "10.8", "currency": "TL",
                      "taksit": "0", "kart_marka": "Visa", "masked_pan": "435508******4358", "test_mode": "1",
                      "returns": []}


def test_status_query_errors(paytr):
    assert paytr.status("NOSUCH") == {"status": "error", "err_no": "004", "err_msg": "Sipariş bulunamadı"}
    paytr.pay("PB1T1")
    bad = paytr.post("/odeme/durum-sorgu", {"merchant_id": MERCHANT_ID, "merchant_oid": "PB1T1",
                                            "paytr_token": published_token(MERCHANT_ID, "PB1T2")}).json()
    assert bad == {"status": "error", "err_no": "003", "err_msg": "paytr_token geçersiz"}


def test_refunds_are_recorded_not_deduplicated_and_listed_by_the_status_query(paytr):
    paytr.pay("PB1T1")
    first = paytr.refund("PB1T1", "10.00", "R1")
    assert first == {"status": "success", "is_test": 1, "merchant_oid": "PB1T1", "return_amount": "10.00",
                     "reference_no": "R1"}
    assert paytr.refund("PB1T1", "10.00", "R1")["status"] == "success"  # same reference_no: refunded again
    over = paytr.refund("PB1T1", "9.01")
    assert over["status"] == "error" and over["err_no"] == "007" and "kalan: 9.00" in over["err_msg"]
    returns = paytr.status("PB1T1")["returns"]
    assert [(r["return_amount"], r["reference_no"]) for r in returns] == [("10", "R1"), ("10", "R1")]
    assert paytr.status("PB1T1")["payment_amount"] == "29"
    detail = text_of(paytr.get("/transactions/PB1T1"))
    assert "refunded 20.00 USD" in detail and detail.count("<code>R1</code>") == 2


def test_refund_faults_refuse_or_answer_too_late_after_refunding(paytr):
    paytr.pay("PB1T1")
    paytr.emulator.faults = paytr.emulator.faults.changed({"refund": "refuse", "refuse_reason": "İade yetkisi yok"})
    assert paytr.refund("PB1T1", "5.00", "R1") == {"status": "error", "err_no": "009", "err_msg": "İade yetkisi yok"}
    assert paytr.emulator.transaction("PB1T1").refunds == []
    paytr.emulator.faults = paytr.emulator.faults.changed({"refund": "timeout", "timeout_seconds": 0.05})
    assert paytr.refund("PB1T1", "5.00", "R2")["status"] == "success"  # late, but the money went back
    assert [r["reference_no"] for r in paytr.status("PB1T1")["returns"]] == ["R2"]


@pytest.mark.parametrize(("amount", "err_no"), [("10,50", "006"), ("0", "006"), ("1.234", "006"), ("-1", "006")])
def test_refund_refuses_malformed_amounts(paytr, amount, err_no):
    paytr.pay("PB1T1")
    assert paytr.refund("PB1T1", amount)["err_no"] == err_no
    assert paytr.emulator.transaction("PB1T1").refunds == []


def test_refund_of_unknown_unpaid_or_failed_orders_and_bad_tokens(paytr):
    assert paytr.refund("NOSUCH", "1.00")["err_no"] == "004"
    paytr.token("PB1T1")
    assert paytr.refund("PB1T1", "1.00")["err_no"] == "005"
    paytr.pay("PB1T2", "4000000000000002")
    assert paytr.refund("PB1T2", "1.00")["err_no"] == "005"
    paytr.pay("PB1T3")
    bad = paytr.post("/odeme/iade", {"merchant_id": MERCHANT_ID, "merchant_oid": "PB1T3", "return_amount": "29.00",
                                     "paytr_token": published_token(MERCHANT_ID, "PB1T3", "1.00")}).json()
    assert bad == {"status": "error", "err_no": "003", "err_msg": "paytr_token geçersiz"}
    assert paytr.refund("PB1T3", "1.00", "bad-ref")["err_no"] == "008"


# --- Direct API and stored cards -----------------------------------------------------------------


def card_list(paytr: PayTR, utoken: str, token: str | None = None):
    return paytr.post("/odeme/capi/list", {"merchant_id": MERCHANT_ID, "utoken": utoken,
                                           "paytr_token": token or published_token(utoken)}).json()


def card_delete(paytr: PayTR, utoken: str, ctoken: str):
    return paytr.post("/odeme/capi/delete", {"merchant_id": MERCHANT_ID, "utoken": utoken, "ctoken": ctoken,
                                             "paytr_token": published_token(ctoken, utoken)}).json()


def test_direct_api_stores_a_card_and_charges_it_from_the_server(paytr, merchant):
    page = paytr.post("/odeme", direct_form("PB1D1", store_card="1"))
    assert page.status_code == 200 and f'<a href="{OK_URL}" target="_top">' in page.text
    paytr.wait()
    stored_callback = merchant.forms[-1]
    assert_published_callback_hash(stored_callback)
    assert stored_callback["status"] == "success" and stored_callback["total_amount"] == "2900"
    utoken = stored_callback["utoken"]

    [card] = card_list(paytr, utoken)
    assert card == {"ctoken": card["ctoken"], "last_4": "4358", "month": "12", "year": "30", "c_bank": "Test Bank",
                    "require_cvv": "0", "c_name": "AYSE YILMAZ", "c_brand": "visa", "c_type": "credit",
                    "schema": "VISA", "initial": "435508", "businessCard": "n"}

    assert paytr.post("/odeme", recurring_form("PB1R1", utoken, card["ctoken"])).json() == {"status": "success"}
    paytr.wait()
    assert merchant.forms[-1]["merchant_oid"] == "PB1R1" and merchant.forms[-1]["status"] == "success"
    assert "utoken" not in merchant.forms[-1]

    paytr.emulator.set_card_outcome("4358", "insufficient_funds")
    assert paytr.post("/odeme", recurring_form("PB1R2", utoken, card["ctoken"])).json() == {"status": "success"}
    paytr.wait()
    failed = merchant.forms[-1]
    assert_published_callback_hash(failed)
    assert (failed["merchant_oid"], failed["status"], failed["total_amount"]) == ("PB1R2", "failed", "0")
    assert failed["failed_reason_msg"] == "Kartın bakiyesi yetersiz (insufficient funds)"

    assert card_delete(paytr, utoken, card["ctoken"]) == {"status": "success"}
    assert card_list(paytr, utoken) == []
    assert card_delete(paytr, utoken, card["ctoken"]) == {"status": "error",
                                                          "err_msg": "Kart yok veya daha önce silinmiş"}
    gone = paytr.post("/odeme", recurring_form("PB1R3", utoken, card["ctoken"])).json()
    assert gone["status"] == "failed" and "kayıtlı kart bulunamadı" in gone["reason"]


def test_a_programmed_outcome_persists_until_changed_and_the_full_number_wins(paytr, merchant):
    paytr.post("/odeme", direct_form("PB1D1", store_card="1"))
    paytr.wait()
    utoken = merchant.forms[-1]["utoken"]
    ctoken = card_list(paytr, utoken)[0]["ctoken"]
    paytr.emulator.set_card_outcome("4358", "expired_card")
    for oid in ("PB1R1", "PB1R2"):
        paytr.post("/odeme", recurring_form(oid, utoken, ctoken))
    paytr.emulator.set_card_outcome("4355 0843 5508 4358", "success")
    paytr.post("/odeme", recurring_form("PB1R3", utoken, ctoken))
    paytr.wait()
    assert [(f["merchant_oid"], f["status"]) for f in merchant.forms[1:]] == [
        ("PB1R1", "failed"), ("PB1R2", "failed"), ("PB1R3", "success")]
    with pytest.raises(ValueError):
        paytr.emulator.set_card_outcome("4358", "stolen")


def test_direct_api_adds_a_card_to_an_existing_utoken(paytr, merchant):
    paytr.post("/odeme", direct_form("PB1D1", store_card="1"))
    paytr.wait()
    utoken = merchant.forms[-1]["utoken"]
    paytr.post("/odeme", direct_form("PB1D2", TEST_CARDS[1], store_card="1", utoken=utoken))
    paytr.wait()
    assert merchant.forms[-1]["utoken"] == utoken
    assert sorted(card["last_4"] for card in card_list(paytr, utoken)) == ["4358", "5403"]
    unknown = paytr.post("/odeme", direct_form("PB1D3", store_card="1", utoken="nosuchuser"))
    assert unknown.status_code == 400 and "utoken geçersiz" in unknown.text


def test_a_merchant_oid_is_single_use_across_the_iframe_and_direct_apis(paytr):
    paytr.token("PB1T1")
    reused = paytr.post("/odeme", direct_form("PB1T1"))
    assert reused.status_code == 400 and "merchant_oid daha önce kullanılmış: PB1T1" in reused.text
    paytr.post("/odeme", direct_form("PB1D1"))
    assert "daha önce kullanılmış" in paytr.post("/odeme/api/get-token", get_token_form("PB1D1")).json()["reason"]


def test_a_declined_direct_payment_stores_no_card(paytr, merchant):
    page = paytr.post("/odeme", direct_form("PB1D1", "4000000000000002", store_card="1"))
    assert f'<a href="{FAIL_URL}" target="_top">' in page.text
    paytr.wait()
    assert merchant.forms[-1]["status"] == "failed" and "utoken" not in merchant.forms[-1]
    assert paytr.emulator.stored_cards() == {}


@pytest.mark.parametrize(("changes", "reason"), [
    ({"card_number": "4355084355084359"}, "card_number: This card number is not valid."),
    ({"expiry_year": "20"}, "expiry: This card has expired."),
    ({"cvv": ""}, "Zorunlu alan eksik: cvv"),
    ({"payment_amount": "29,00"}, "payment_amount nokta ile ayrılmış"),
    ({"payment_amount": "0.99"}, "payment_amount en az 1.00"),
    ({"payment_type": "eft"}, "payment_type card olmalı"),
    ({"merchant_oid": "PB_1"}, "merchant_oid yalnızca harf ve rakam"),
])
def test_direct_api_refuses_invalid_browser_forms_with_a_400(paytr, merchant, changes, reason):
    page = paytr.post("/odeme", direct_form("PB1D1", **changes))
    assert page.status_code == 400 and reason in page.text
    paytr.wait()
    assert merchant.forms == [] and paytr.emulator.transaction("PB1D1") is None


def test_direct_api_refuses_a_bad_token(paytr):
    form = direct_form("PB1D1")
    form["payment_amount"] = "1.00"  # changed after signing
    page = paytr.post("/odeme", form)
    assert page.status_code == 400 and "paytr_token geçersiz" in page.text


def test_stored_card_charges_refuse_bad_tokens_and_unknown_cards(paytr, merchant):
    paytr.post("/odeme", direct_form("PB1D1", store_card="1"))
    paytr.wait()
    utoken = merchant.forms[-1]["utoken"]
    ctoken = card_list(paytr, utoken)[0]["ctoken"]
    tampered = recurring_form("PB1R1", utoken, ctoken)
    tampered["payment_amount"] = "290.00"
    assert paytr.post("/odeme", tampered).json()["reason"].startswith("paytr_token geçersiz")
    unknown = paytr.post("/odeme", recurring_form("PB1R2", utoken, "nosuchcard")).json()
    assert unknown["status"] == "failed"
    no_recurring = recurring_form("PB1R3", utoken, ctoken)
    del no_recurring["recurring_payment"]
    assert "recurring_payment=1" in paytr.post("/odeme", no_recurring).json()["reason"]
    assert card_list(paytr, utoken, token=published_token("someone else"))["err_msg"] == "paytr_token geçersiz"
    assert card_list(paytr, "nosuchuser") == []
    paytr.wait()
    assert len(merchant.forms) == 1


# --- pages, faults and the mount prefix -----------------------------------------------------------


def test_index_lists_transactions_newest_first_with_their_callbacks(paytr, merchant):
    assert "No transactions yet. Start a checkout in the app." in paytr.get("/").text
    merchant.answers = [(200, "NOT OK")]
    paytr.pay("PB1T1")
    paytr.token("PB1T2")
    paytr.wait()
    text = text_of(paytr.get("/"))
    assert text.index("PB1T2") < text.index("PB1T1")
    assert "29.00 USD" in text and ">delivered</td>" in text
    assert text.count("Send callback again") == 1  # only the decided transaction has one
    detail = text_of(paytr.get("/transactions/PB1T1"))
    assert "<code>NOT OK</code>" in detail and "<code>OK</code>" in detail
    assert paytr.get("/transactions/NOSUCH").status_code == 404


def test_faults_api_reads_sets_and_validates(paytr):
    defaults = paytr.get("/_faults").json()
    assert defaults == {"duplicate_callbacks": 1, "callback_delay": 0.0, "drop_first": 0, "get_token": "ok",
                        "refuse_reason": "Mağaza API yetkisi kapalı (emulated refusal)", "timeout_seconds": 30.0,
                        "refund": "ok", "api_latency": 0.0}
    changed = paytr.client.post("/_faults", json={"duplicate_callbacks": 2, "get_token": "refuse"}).json()
    assert changed["duplicate_callbacks"] == 2 and changed["get_token"] == "refuse"
    assert paytr.post("/_faults", {"drop_first": "3"}).json()["drop_first"] == 3
    for bad in ({"get_token": "sometimes"}, {"duplicate_callbacks": 0}, {"nonsense": 1}, {"drop_first": "x"},
                {"refund": "maybe"}, {"api_latency": 61}, {"api_latency": "slow"}):
        answer = paytr.client.post("/_faults", json=bad)
        assert answer.status_code == 400 and answer.json()["error"]
    not_an_object = paytr.client.post("/_faults", content=b"[1]", headers={"content-type": "application/json"})
    assert not_an_object.status_code == 400
    assert paytr.emulator.faults.drop_first == 3 and paytr.emulator.faults.get_token == "refuse"


def test_faults_and_outcomes_forms_on_the_page(paytr, merchant):
    form = {"duplicate_callbacks": "2", "callback_delay": "0", "drop_first": "1", "get_token": "ok",
            "refuse_reason": "Kapalı", "timeout_seconds": "5"}
    saved = paytr.post("/faults", form, follow_redirects=False)
    assert saved.status_code == 303 and paytr.emulator.faults.duplicate_callbacks == 2
    refused = paytr.post("/faults", {**form, "callback_delay": "soon"})
    assert refused.status_code == 400 and "callback_delay must be a number" in refused.text
    paytr.emulator.set_faults(duplicate_callbacks=1, drop_first=0)
    paytr.post("/odeme", direct_form("PB1D1", store_card="1"))
    paytr.wait()
    page = paytr.get("/").text
    assert 'name="card" value="4355084355084358"' in page
    assert paytr.post("/cards/outcome", {"card": "4355084355084358", "outcome": "expired_card"},
                      follow_redirects=False).status_code == 303
    assert paytr.post("/cards/outcome", {"card": "4358", "outcome": "lost"}).status_code == 400
    utoken = merchant.forms[-1]["utoken"]
    paytr.post("/odeme", recurring_form("PB1R1", utoken, card_list(paytr, utoken)[0]["ctoken"]))
    paytr.wait()
    assert merchant.forms[-1]["failed_reason_msg"] == "Kartın son kullanma tarihi geçmiş (expired card)"


@pytest.fixture
def mounted(merchant):
    yield from serve(merchant, prefix="/paytr-emulator")


def test_mounted_under_a_prefix_every_link_and_action_keeps_it(mounted, merchant):
    token = mounted.token("PB1T1")
    page = mounted.get(f"/odeme/guvenli/{token}").text
    assert f'action="/paytr-emulator/odeme/guvenli/{token}"' in page
    assert mounted.post(f"/odeme/guvenli/{token}", card_fields()).status_code == 200
    mounted.wait()
    index = mounted.get("/").text
    for fragment in ('href="/paytr-emulator/transactions/PB1T1"', 'action="/paytr-emulator/faults"',
                     'action="/paytr-emulator/transactions/PB1T1/callback"', 'href="/paytr-emulator/"'):
        assert fragment in index
    assert not re.search(r'(href|action)="/(?!paytr-emulator)', index)
    resent = mounted.post("/transactions/PB1T1/callback", {}, follow_redirects=False)
    assert resent.headers["location"] == "/paytr-emulator/"
    mounted.wait()
    assert len(merchant.forms) == 2


# --- state kept across restarts -------------------------------------------------------------


def test_saved_state_outlives_a_restart_and_undelivered_callbacks_are_sent_again(tmp_path):
    state = tmp_path / "paytr-emulator.pickle"
    down = Merchant()
    down.answers = [(503, "down")] * 1000  # the merchant never answers OK before the restart
    first = serve(down, state_path=state)
    paytr = next(first)
    paytr.pay("PB1T1")
    paytr.emulator.store_card(paytr.emulator.transaction("PB1T1").card, "U1")
    paytr.emulator.set_card_outcome("4358", "insufficient_funds")
    paytr.client.portal.call(asyncio.sleep, 0.1)
    assert not paytr.emulator.transaction("PB1T1").delivered
    paytr.client.portal.call(paytr.emulator.aclose)  # what the host does at shutdown: the state is written
    first.close()

    up = Merchant()
    again = serve(up, state_path=state)
    paytr = next(again)
    transaction = paytr.emulator.transaction("PB1T1")
    assert transaction.status == "success" and transaction.attempts  # the history came back
    assert [c.card.last4 for c in paytr.emulator.cards_of("U1")] == ["4358"]
    assert paytr.emulator.card_outcome(transaction.card) == "insufficient_funds"
    assert paytr.client.portal.call(paytr.emulator.resume_deliveries) == 1
    paytr.wait()
    assert transaction.delivered and [f["merchant_oid"] for f in up.forms] == ["PB1T1"]
    again.close()


def test_an_unreadable_state_file_starts_empty(tmp_path, caplog):
    state = tmp_path / "paytr-emulator.pickle"
    state.write_bytes(b"not a pickle")
    paytr_gen = serve(Merchant(), state_path=state)
    paytr = next(paytr_gen)
    assert paytr.emulator.transactions() == [] and "could not load" in caplog.text
    paytr.pay("PB1T1")  # and it saves over the bad file
    paytr.client.portal.call(paytr.emulator.aclose)
    paytr_gen.close()
    assert create_emulator(CONFIG, state_path=state).state.emulator.transaction("PB1T1") is not None


# --- the way back to the shop, and PayTR's iframe resizer ------------------------------------


def test_pages_link_back_to_the_shop_except_the_ones_inside_its_iframe(merchant):
    config = dataclasses.replace(CONFIG, app_url="http://127.0.0.1:8000/", app_name="PayTR Billing")
    with TestClient(create_emulator(config), base_url="http://paytr.test") as client:
        back = '<a class="back" href="http://127.0.0.1:8000/" target="_top">← Back to PayTR Billing</a>'
        assert back in client.get("/").text
        assert back in client.get("/transactions/NOSUCH").text
        token = client.post("/odeme/api/get-token", data=get_token_form("PB1T1")).json()["token"]
        payment = client.get(f"/odeme/guvenli/{token}").text
        assert "Back to PayTR Billing" not in payment  # shown inside the shop's checkout
        assert '<script src="/js/iframe-resizer-content.js" defer></script>' in payment


def test_serves_a_resizer_at_paytrs_path_and_the_height_reporter(paytr):
    resizer = paytr.get("/js/iframeResizer.min.js")
    assert resizer.status_code == 200 and resizer.headers["content-type"].startswith("text/javascript")
    assert "window.iFrameResize = function (options, target)" in resizer.text
    assert "event.origin !== origin" in resizer.text  # heights only from the frame's own origin
    reporter = paytr.get("/js/iframe-resizer-content.js").text
    assert "parentOrigin = event.origin" in reporter and "postMessage(" in reporter
