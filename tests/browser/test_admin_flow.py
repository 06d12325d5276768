"""The operator's staff in a real browser: find a customer, refund part of a payment through PayTR."""

import re
import subprocess
import sys

from playwright.sync_api import expect

from tests.browser.conftest import ROOT, open_mail, expect_cursor_in
from tests.browser.test_checkout_flow import pay_in_iframe, register

STAFF_PASSWORD = "operasyon ekibinin parolası"


def create_staff(live_server, email="ops@example.com"):
    """As an operator would: `python main.py create-staff EMAIL`, the password on stdin."""
    subprocess.run([sys.executable, "main.py", "create-staff", email], cwd=ROOT, env=live_server.env,
                   input=STAFF_PASSWORD, text=True, check=True, capture_output=True)


def test_staff_refund_part_of_a_payment(page, live_server):
    register(page, email="iade@example.com", company="Çağlayan Danışmanlık")
    page.get_by_role("button", name="Subscribe to Starter").click()
    pay_in_iframe(page, "4355 0843 5508 4358")
    expect(page.get_by_role("heading", name="Your Starter plan is active")).to_be_visible(timeout=20_000)
    page.get_by_role("button", name="Log out").click()

    create_staff(live_server)
    page.get_by_label("Email").fill("ops@example.com")
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_label("Search customers").fill("çağlayan")
    page.get_by_role("link", name="Çağlayan Danışmanlık").click()
    page.get_by_role("link", name=re.compile(r"^Refund PB")).click()

    expect(page.get_by_role("heading", name="Refund a payment")).to_be_visible()
    expect(page.get_by_label("Amount (USD)")).to_have_value("29.00")
    page.get_by_label("Amount (USD)").fill("12,50")
    page.get_by_role("button", name="Review the refund").click()
    expect(page.get_by_text("Say why")).to_be_visible()
    expect_cursor_in(page, "Reason")
    page.get_by_label("Reason").fill("Hizmet kesintisi için kısmi iade")
    page.get_by_role("button", name="Review the refund").click()
    expect(page.get_by_text(re.compile(r"Refund \$12\.50 of payment PB\w+ to Çağlayan Danışmanlık\?"))).to_be_visible()
    page.get_by_role("button", name="Confirm refund").click()

    expect(page.get_by_text("Refunded $12.50. The customer gets an email.")).to_be_visible()
    refunds = page.get_by_role("region", name="Refunds")
    expect(refunds).to_contain_text("$12.50")
    expect(refunds).to_contain_text("Hizmet kesintisi için kısmi iade")
    expect(refunds.locator(".badge")).to_have_text("Refunded")

    open_mail(page, re.compile(r"Refund issued: \$12.50 for Çağlayan Danışmanlık"))
    expect(page.get_by_text("Hizmet kesintisi için kısmi iade").first).to_be_visible()
