"""Saved cards in a real browser: the card form with one MM/YY field (and, without JavaScript,
PayTR's two expiry fields), a second card saved paying the next month, choosing the card
renewals charge and removing one."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import LiveServer

PASSWORD = "kayıtlı kart testi"


@pytest.fixture
def live_server(tmp_path):
    server = LiveServer(tmp_path / "data", PAYTR_RECURRING="1")
    yield server.start()
    server.stop()


def log_in(page):
    page.goto("/auth/login")
    page.get_by_label("Email").fill("ece@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/billing/$"))


def test_saving_two_cards_choosing_one_and_removing_the_other(browser, live_server, page):
    page.goto("/auth/register")
    page.get_by_label("Company name").fill("Lale Bahçesi Ltd")
    page.get_by_label("Your name").fill("Ece Kaya")
    page.get_by_label("Email").fill("ece@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account and start trial").click()
    page.get_by_role("button", name="Subscribe to Starter").click()
    page.get_by_role("radio", name="Save my card for automatic renewal").click()  # opens PayTR's card form

    # With JavaScript: one expiry field, which must read as MM/YY before anything goes to PayTR.
    expect(page.get_by_label("Expiry month (MM)")).to_have_count(0)
    page.get_by_label("Name on card").fill("ECE KAYA")
    page.get_by_label("Card number").fill("4355 0843 5508 4358")
    page.get_by_label("Expiry date").fill("13/30")
    page.get_by_label("CVV").fill("000")
    pay = page.get_by_role("button", name="Pay $29.00 and save the card")
    pay.click()
    expect(page.get_by_label("Expiry date")).to_have_js_property(
        "validationMessage", "Enter the expiry date as MM/YY, for example 08/29.")
    expect(page).to_have_url(re.compile(r"/billing/checkout/"))  # nothing was sent to PayTR
    page.get_by_label("Expiry date").fill("12/30")
    pay.click()
    expect(page.get_by_role("heading", name="Your Starter plan is active")).to_be_visible(timeout=20_000)
    expect(page.get_by_text("Charged to Visa ending 4358, the card you just saved")).to_be_visible()

    # Without JavaScript: PayTR's two expiry fields, drawn as one, and the same payment works.
    plain = browser.new_context(base_url=live_server.url, locale="en-GB", java_script_enabled=False).new_page()
    log_in(plain)
    plain.goto("/billing/renew")
    plain.get_by_role("button", name="Pay with a new card and save it for renewals").click()
    plain.get_by_label("Name on card").fill("ECE KAYA")
    plain.get_by_label("Card number").fill("5406675406675403")
    plain.get_by_label("Expiry month (MM)").fill("12")
    plain.get_by_label("Expiry year (YY)").fill("30")
    plain.get_by_label("CVV").fill("000")
    plain.get_by_role("button", name="Pay $29.00 and save the card").click()
    expect(plain.get_by_role("heading", name="Payment successful")).to_be_visible()
    plain.get_by_role("link", name="Return to the shop").click()
    expect(plain.get_by_role("heading", name=re.compile("Your Starter plan is active|Confirming"))).to_be_visible()

    # The dashboard: the new card pays renewals; the first one can be chosen again or removed.
    page.goto("/billing/")
    expect(page.get_by_text("Renewals are charged to")).to_contain_text("Mastercard ending 5403")
    page.get_by_role("button", name="Use for renewals: Visa ending 4358").click()
    expect(page.get_by_text("Renewals are now charged to Visa ending 4358.")).to_be_visible()
    page.get_by_role("button", name="Remove Mastercard ending 5403").click()
    expect(page.get_by_text("Mastercard ending 5403 was removed. Renewals are still charged to "
                            "Visa ending 4358.")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("Remove"))).to_have_count(1)
    # The iframe checkout the card form replaced is "Replaced", in grey: no money moved.
    replaced = page.get_by_role("region", name="Payments").get_by_text("Replaced", exact=True)
    expect(replaced).to_have_count(1)
    expect(replaced).to_have_css("background-color", "rgb(237, 242, 247)")
