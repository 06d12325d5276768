"""Staff run a customer's subscription from the console in a real browser: a plan change with a
reason, seen on the customer's page and in the audit log; a refund through its confirmation step."""

import re

from playwright.sync_api import expect

from tests.browser.test_admin_flow import STAFF_PASSWORD, create_staff
from tests.browser.test_checkout_flow import pay_in_iframe, register

REASON = "Müşteri telefonla istedi: ÇĞİÖŞÜ çğıöşü"


def test_staff_change_a_plan_with_a_reason_and_refund_through_the_confirmation_step(page, live_server):
    register(page, email="konsol@example.com", company="Işıkçı Yazılım")
    page.get_by_role("button", name="Subscribe to Starter").click()
    pay_in_iframe(page, "4355 0843 5508 4358")
    expect(page.get_by_role("heading", name="Your Starter plan is active")).to_be_visible(timeout=20_000)
    page.get_by_role("button", name="Log out").click()

    create_staff(live_server)
    page.get_by_label("Email").fill("ops@example.com")
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_label("Search customers").fill("ışıkçı")
    page.get_by_role("link", name="Işıkçı Yazılım").click()

    # Change the plan now, at no charge, with a reason; a missing reason is asked for first.
    actions = page.get_by_role("region", name="Actions")
    actions.get_by_text("Change plan", exact=True).click()
    plan_form = actions.locator("details", has_text="Change plan")
    plan_form.get_by_label("New plan").select_option("team")
    plan_form.get_by_label("No charge and no refund").check()
    plan_form.get_by_role("button", name="Change now").click()
    expect(page.get_by_role("region", name="Actions").get_by_text("Give a reason")).to_be_visible()
    plan_form = page.get_by_role("region", name="Actions").locator("details", has_text="Change plan")
    plan_form.get_by_label("No charge and no refund").check()
    plan_form.get_by_label("Reason").fill(REASON)
    plan_form.get_by_role("button", name="Change now").click()
    expect(page.get_by_text("Işıkçı Yazılım is now on Team, at no charge. The customer gets an email.")).to_be_visible()

    audit = page.get_by_role("region", name="Staff actions")
    expect(audit).to_contain_text("Changed the plan now")
    expect(audit).to_contain_text("Starter → Team")
    expect(audit).to_contain_text(REASON)
    expect(audit).to_contain_text("ops@example.com")

    page.get_by_role("navigation", name="Admin console").get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    page.get_by_label("Customer (number or name)").fill("ışıkçı")
    page.get_by_label("Action").select_option(label="Changed the plan now")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.audit tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(REASON)
    expect(rows.first.get_by_role("link", name="Işıkçı Yazılım")).to_be_visible()

    # A refund: the first click shows the amount and the customer's email; only Confirm refunds.
    rows.first.get_by_role("link", name="Işıkçı Yazılım").click()
    page.get_by_role("link", name=re.compile(r"^Refund PB")).click()
    page.get_by_label("Amount (USD)").fill("5,00")
    page.get_by_label("Reason").fill("Hizmet kesintisi: ÇĞİÖŞÜ çğıöşü")
    page.get_by_role("button", name="Review the refund").click()
    expect(page.get_by_text(re.compile(r"Refund \$5\.00 of payment PB\w+ to Işıkçı Yazılım\?"))).to_be_visible()
    expect(page.get_by_text("The customer will get this email:")).to_be_visible()
    expect(page.get_by_label("Email text")).to_contain_text("Hizmet kesintisi: ÇĞİÖŞÜ çğıöşü")
    expect(page.get_by_text("Refund issued: $5.00 for Işıkçı Yazılım")).to_be_visible()
    page.get_by_role("button", name="Go back").click()
    expect(page.get_by_label("Amount (USD)")).to_have_value("5,00")
    page.get_by_role("button", name="Review the refund").click()
    page.get_by_role("button", name="Confirm refund").click()
    expect(page.get_by_text("Refunded $5.00. The customer gets an email.")).to_be_visible()
    expect(page.get_by_role("region", name="Staff actions")).to_contain_text("Refunded a payment")
    expect(page.get_by_role("region", name="Refunds")).to_contain_text("Hizmet kesintisi: ÇĞİÖŞÜ çğıöşü")
