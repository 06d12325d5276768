"""A subscription's whole life in a real browser, with the staff's test clock: trial reminder,
a payment that saves the card, an automatic renewal, a declined renewal, the dunning email,
and paying from it."""

import re
import subprocess
import sys

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ROOT, LiveServer, open_mail

PASSWORD = "yaşam döngüsü testi"
STAFF_PASSWORD = "operasyon ekibi şifresi"


@pytest.fixture
def live_server(tmp_path):
    server = LiveServer(tmp_path / "data", PAYTR_RECURRING="1")
    subprocess.run([sys.executable, "main.py", "create-staff", "ops@example.com", "--name", "Operasyon"],
                   cwd=ROOT, env=server.env, input=STAFF_PASSWORD + "\n", text=True, check=True, timeout=60)
    yield server.start()
    server.stop()


def log_in(page, email, password):
    page.goto("/auth/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/(billing|admin)/$"))


def advance_clock(staff, amount):
    staff.goto("/admin/clock")
    staff.get_by_label("Advance by").fill(amount)
    staff.get_by_role("button", name="Advance the clock").click()
    expect(staff.get_by_text("Jobs ran as of")).to_be_visible(timeout=30_000)


def reload_until(page, url, locator, timeout_ms=20_000):
    """Callbacks land a moment after a tick: reload the page until the outcome shows."""
    for _ in range(timeout_ms // 250):
        page.goto(url)
        if locator.count():
            return
        page.wait_for_timeout(250)
    expect(locator).to_be_visible()


def test_trial_reminder_saved_card_renewal_dunning_and_recovery(browser, live_server, page):
    staff = browser.new_context(base_url=live_server.url, locale="en-GB").new_page()
    log_in(staff, "ops@example.com", STAFF_PASSWORD)
    expect(staff.get_by_role("heading", name="Admin console")).to_be_visible()

    # A new customer on a trial.
    page.goto("/auth/register")
    page.get_by_label("Company name").fill("Zeytin Dalı Yazılım")
    page.get_by_label("Your name").fill("Gül Şahin")
    page.get_by_label("Email").fill("gul@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account and start trial").click()
    expect(page.get_by_text("14 days left")).to_be_visible()

    # Eight days later the 7-day reminder has gone out.
    advance_clock(staff, "8d")
    expect(page.locator(".banner.testclock")).to_have_count(0)  # at real time there is no banner
    page.reload()
    expect(page.locator(".banner.testclock")).to_contain_text("Test clock")
    expect(page.get_by_text("6 days left")).to_be_visible()
    open_mail(page, re.compile("trial ends in 6 days"))
    expect(page.get_by_text(re.compile("ends on"))).to_be_visible()

    # Subscribe, saving the card for automatic renewal (PayTR's Direct API form).
    page.goto("/billing/")
    page.get_by_role("button", name="Subscribe to Starter").click()
    page.get_by_role("radio", name="Save my card for automatic renewal").click()  # opens PayTR's card form
    page.get_by_label("Name on card").fill("GUL SAHIN")
    page.get_by_label("Card number").fill("4355084355084358")
    page.get_by_label("Expiry date").fill("12/30")  # one MM/YY field; the page splits it for PayTR
    page.get_by_label("CVV").fill("000")
    page.get_by_role("button", name=re.compile("Pay \\$29.00 and save the card")).click()
    expect(page.get_by_role("heading", name="Your Starter plan is active")).to_be_visible(timeout=20_000)
    page.goto("/billing/")
    expect(page.get_by_text(re.compile("Visa ending"))).to_be_visible()
    expect(page.get_by_text(re.compile("we charge your saved card automatically"))).to_be_visible()

    # A month and more later: renewed automatically, with a second invoice.
    advance_clock(staff, "38d")  # sessions age in real time: the customer is still logged in
    invoices = page.get_by_role("region", name="Invoices").get_by_role("link", name=re.compile(r"^INV-"))
    reload_until(page, "/billing/", invoices.nth(1))
    expect(invoices).to_have_count(2)
    expect(page.locator(".badge.active")).to_have_text("Active")
    open_mail(page, re.compile(r"^Plan renewed: \$[0-9.]+ for Starter"))
    expect(page.get_by_text(re.compile("renewed automatically"))).to_be_visible()

    # The next renewal is declined by the bank.
    staff.goto("/paytr-emulator/")
    staff.locator("select[name=outcome]").first.select_option("insufficient_funds")
    staff.get_by_role("button", name="Set").first.click()
    advance_clock(staff, "31d")
    banner = page.locator(".banner.pastdue")
    reload_until(page, "/billing/", banner)
    expect(banner).to_contain_text("Your payment was due on")
    expect(page.get_by_text("Payment overdue.")).to_be_visible()

    # The dunning email's link leads to paying with another card; the plan is active again.
    open_mail(page, re.compile("We couldn't renew your Starter plan"))
    expect(page.get_by_text(re.compile("insufficient funds"))).to_be_visible()
    page.get_by_role("link", name=re.compile(r"billing.renew")).click()
    page.get_by_role("button", name="Pay $29.00").click()
    frame = page.frame_locator("#paytriframe")
    frame.get_by_label("Name on card").fill("GUL SAHIN")
    frame.get_by_label("Card number").fill("5406 6754 0667 5403")
    frame.get_by_label("Expiry (MM/YY)").fill("12/30")
    frame.get_by_label("CVV").fill("000")
    frame.get_by_role("button", name="Pay 29.00 USD").click()
    expect(page.get_by_role("heading", name="Your Starter plan is active")).to_be_visible(timeout=20_000)
    page.goto("/billing/")
    expect(page.locator(".banner.pastdue")).to_have_count(0)
    expect(page.locator(".badge.active")).to_have_text("Active")
