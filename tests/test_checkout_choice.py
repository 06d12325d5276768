"""The checkout's one choice, above the payment form: pay once (PayTR's iframe) or save the card
for automatic renewal (PayTR's Direct API form). A changed choice is a new order at PayTR that
replaces the open one; the same choice sent again keeps it. And PayTR's iframe resizer: loaded
from PayTR's host (the emulator here), allowed by the Content-Security-Policy."""

import re

import pytest

from billing.db import rows
from billing.web.security import SecurityHeadersMiddleware
from conftest import post, register, visible
from test_cards import pay_choice


@pytest.fixture
def env():
    return {"PAYTR_RECURRING": "1"}


def start(client, data=None):
    response = post(client, "/billing/subscribe/starter", data, token_from="/billing/")
    assert response.headers["location"].startswith("/billing/checkout/"), response.headers["location"]
    return response.headers["location"]


def test_the_choice_comes_before_the_payment_form_and_is_stated_once(client):
    register(client)
    page = client.get(start(client)).text
    words = visible(client.get(start(client)))
    assert page.index("How do you want to pay?") < page.index('<iframe id="paytriframe"')
    assert words.count("Save my card for automatic renewal") == 1
    assert "Save my card for automatic renewal instead" not in words
    assert '<legend>How do you want to pay?</legend>' in page
    # Saving: the same choice above PayTR's card form, which no longer repeats it.
    form = client.get(start(client, {"save_card": "1"})).text
    assert form.index("How do you want to pay?") < form.index('<form class="stacked"')
    assert visible(client.get(start(client, {"save_card": "1"}))).count("Save my card for automatic renewal") == 1
    assert 'type="checkbox" id="save-card"' not in form and "Pay without saving the card" not in form


def test_a_changed_choice_replaces_the_checkout_and_the_same_choice_keeps_it(client, db):
    register(client)
    first = start(client)
    action, hidden, radios = pay_choice(client.get(first).text)
    assert (action, radios) == ("/billing/subscribe/starter", [("save_card", "0", True), ("save_card", "1", False)])
    assert hidden["current"] == first.rsplit("/", 1)[1]

    same = post(client, action, {**hidden, "save_card": "0"}, token_from=first)
    assert same.headers["location"] == first  # no new order at PayTR
    assert len(rows(db, "SELECT * FROM payments")) == 1

    saving = post(client, action, {**hidden, "save_card": "1"}, token_from=first)
    assert saving.headers["location"] != first
    payments = {p["merchant_oid"]: p for p in rows(db, "SELECT * FROM payments")}
    assert [(p["method"], p["status"]) for p in payments.values()] == [("iframe", "superseded"), ("direct", "pending")]
    assert "This checkout was replaced by a newer one." in visible(client.get(first))

    # Back to paying once: a fresh get-token, and still exactly one checkout open.
    action, hidden, _ = pay_choice(client.get(saving.headers["location"]).text)
    once = post(client, action, {**hidden, "save_card": "0"}, token_from=first)
    pending = rows(db, "SELECT * FROM payments WHERE status = 'pending'")
    assert [(p["method"], bool(p["paytr_token"])) for p in pending] == [("iframe", True)]
    assert once.headers["location"] == f"/billing/checkout/{pending[0]['merchant_oid']}"


def test_a_stale_current_checkout_does_not_stop_a_new_one(client, db):
    register(client)
    first = start(client)
    second = start(client)  # replaces the first
    answer = post(client, "/billing/subscribe/starter", {"current": first.rsplit("/", 1)[1], "save_card": "0"},
                  token_from="/billing/")
    assert answer.headers["location"] not in (first, second)
    assert len(rows(db, "SELECT * FROM payments WHERE status = 'pending'")) == 1


def test_the_checkout_loads_paytrs_resizer_from_paytrs_host(client, app):
    register(client)
    page = client.get(start(client))
    scripts = re.findall(r'<script src="([^"]+)"', page.text)
    assert scripts[-2:] == ["/paytr-emulator/js/iframeResizer.min.js", "/static/js/checkout.js"]
    resizer = client.get("/paytr-emulator/js/iframeResizer.min.js")
    assert resizer.status_code == 200 and resizer.headers["content-type"].startswith("text/javascript")
    assert "window.iFrameResize = function (options, target)" in resizer.text
    assert "[iFrameSizer]" in client.get("/paytr-emulator/js/iframe-resizer-content.js").text
    # The emulator is 'self'; the policy stays strict otherwise (no inline script).
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "frame-src 'self';" in policy


def test_with_paytr_itself_the_policy_allows_its_script_and_frame_only():
    policy = SecurityHeadersMiddleware(None, frame_sources="https://www.paytr.com").csp
    assert "script-src 'self' https://www.paytr.com;" in policy
    assert "frame-src 'self' https://www.paytr.com;" in policy
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
