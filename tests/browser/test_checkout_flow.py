"""Subscribing in a real browser: PayTR's iframe (the built-in emulator), the result pages,
the dashboard, the receipt email and the invoice."""

import re

from playwright.sync_api import expect

from tests.browser.conftest import open_mail, expect_cursor_in

PASSWORD = "kasım ayında abone oldum"


def register(page, email="odeme@example.com", company="Ege Bulut Hizmetleri Ltd."):
    page.goto("/auth/register?plan=starter")
    page.get_by_label("Company name").fill(company)
    page.get_by_label("Your name").fill("Deniz Aydın")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account and start trial").click()
    expect(page.get_by_text("14 days left")).to_be_visible()


def pay_in_iframe(page, card: str):
    frame = page.frame_locator("#paytriframe")
    frame.get_by_label("Name on card").fill("DENIZ AYDIN")
    frame.get_by_label("Card number").fill(card)
    frame.get_by_label("Expiry (MM/YY)").fill("12/30")
    frame.get_by_label("CVV").fill("000")
    frame.get_by_role("button", name="Pay 29.00 USD").click()


def add_billing_details(page):
    page.get_by_role("link", name="Add billing details").click()
    page.get_by_label("Legal name").fill("Ege Bulut Hizmetleri Limited Şirketi")
    page.get_by_label("Tax office").fill("Karşıyaka")
    page.get_by_label("Tax number").fill("12345")
    page.get_by_role("button", name="Save billing details").click()
    expect(page.get_by_text("A tax number is 10 digits")).to_be_visible()
    expect_cursor_in(page, "Tax number")
    page.get_by_label("Tax number").fill("1234567890")
    page.get_by_label("Billing address").fill("Bostanlı Mah. Cemal Gürsel Cad. No: 4\nKarşıyaka / İzmir")
    page.get_by_label("Phone").fill("0232 123 45 67")
    page.get_by_role("button", name="Save billing details").click()
    expect(page.get_by_text("Billing details saved")).to_be_visible()
    page.get_by_role("link", name="← Billing").click()
    expect(page.get_by_text("Ege Bulut Hizmetleri Limited Şirketi")).to_be_visible()


def test_subscribe_pay_with_a_test_card_and_see_it_active(page):
    register(page)
    add_billing_details(page)
    page.get_by_role("button", name="Subscribe to Starter").click()
    expect(page.get_by_role("heading", name="Pay for Starter")).to_be_visible()
    expect(page.get_by_text("$29.00")).to_be_visible()

    pay_in_iframe(page, "4355 0843 5508 4358")
    expect(page).to_have_url(re.compile(r"/billing/payment/success\?oid=\w+"))
    # The redirect proves nothing; the page turns active once PayTR's callback is applied.
    expect(page.get_by_role("heading", name="Your Starter plan is active")).to_be_visible(timeout=20_000)
    expect(page.get_by_text("Paid until 11 January 2027").or_(page.get_by_text(re.compile(r"Paid until \d+")))).to_be_visible()

    page.get_by_role("link", name="Go to billing").click()
    expect(page.locator(".badge.active")).to_have_text("Active")
    expect(page.get_by_text(re.compile(r"Paid until \d+ \w+ \d{4}"))).to_be_visible()
    payments = page.get_by_role("region", name="Payments")
    expect(payments.get_by_text("Paid", exact=True)).to_be_visible()
    invoice_link = page.get_by_role("link", name=re.compile(r"^INV-\d{4}-000001$"))
    expect(invoice_link).to_be_visible()

    open_mail(page, re.compile("Payment received"))
    expect(page.get_by_text(re.compile(r"We received \$29.00 for the Starter plan"))).to_be_visible()

    page.goto("/billing/")
    page.get_by_role("link", name=re.compile(r"^INV-\d{4}-000001$")).click()
    expect(page.get_by_role("heading", name=re.compile(r"Invoice INV-\d{4}-000001"))).to_be_visible()
    totals = page.get_by_role("table", name="Totals")
    expect(totals).to_contain_text("$24.17")
    expect(totals).to_contain_text("$4.83")
    expect(totals).to_contain_text("$29.00")
    billed_to = page.get_by_role("region", name="Billed to")
    expect(billed_to).to_contain_text("Ege Bulut Hizmetleri Limited Şirketi")
    expect(billed_to).to_contain_text("Karşıyaka / İzmir")
    expect(billed_to.get_by_role("row", name="VKN/TCKN / Tax number")).to_contain_text("1234567890")
    expect(billed_to.get_by_role("row", name="Vergi Dairesi / Tax office")).to_contain_text("Karşıyaka")
    expect(page.get_by_role("link", name="Download PDF")).to_have_attribute(
        "href", re.compile(r"^/billing/invoices/INV-\d{4}-000001\.pdf$"))


def test_declined_card_shows_the_reason_then_trying_again_succeeds(page):
    register(page, email="ret@example.com")
    page.get_by_role("button", name="Subscribe to Starter").click()
    pay_in_iframe(page, "4000 0000 0000 0002")
    expect(page).to_have_url(re.compile(r"/billing/payment/fail\?oid=\w+"))
    expect(page.get_by_role("heading", name="Your payment did not go through")).to_be_visible(timeout=20_000)
    expect(page.get_by_text("Your bank declined the payment.", exact=False)).to_be_visible()  # ours, from the code

    open_mail(page, re.compile("Payment failed"))
    expect(page.get_by_text(re.compile(r"PayTR said: Kartın bakiyesi yetersiz"))).to_be_visible()
    page.get_by_role("link", name=re.compile(r"payment.fail")).click()

    page.get_by_role("button", name="Try again").click()
    expect(page.get_by_role("heading", name="Pay for Starter")).to_be_visible()
    pay_in_iframe(page, "5406 6754 0667 5403")
    expect(page.get_by_role("heading", name="Your Starter plan is active")).to_be_visible(timeout=20_000)
