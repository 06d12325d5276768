"""The landing page in a real browser, on a phone: a visitor reads what is sold and a question,
starts a trial from a plan, subscribes, and then sees their plan marked and an upgrade offered."""

import re

from playwright.sync_api import expect

from tests.browser.test_checkout_flow import PASSWORD, pay_in_iframe


def no_sideways_scroll(page):
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_visitor_reads_the_landing_page_starts_a_trial_subscribes_and_is_offered_an_upgrade(page):
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_have_text("PayTR Billing for your team")
    expect(page.get_by_text("Every plan starts with a 14-day free trial.")).to_be_visible()
    no_sideways_scroll(page)

    answer = page.get_by_text("we never see or store your card number")
    expect(answer).to_be_hidden()
    page.get_by_text("Is it safe to pay by card?").click()
    expect(answer).to_be_visible()

    page.get_by_role("article", name="Team").get_by_role("link", name="Start free trial").click()
    page.get_by_label("Company name").fill("Marmara Yazılım A.Ş.")
    page.get_by_label("Your name").fill("Elif Kaya")
    page.get_by_label("Email").fill("elif@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account and start trial").click()
    expect(page).to_have_url(re.compile(r"/billing/$"))

    # On the trial: no second trial promised; the trial's plan is marked, every plan can be bought.
    page.goto("/")
    expect(page.get_by_text("Every plan starts with a 14-day free trial.")).to_have_count(0)
    expect(page.get_by_role("article", name="Team").get_by_text("Current plan")).to_be_visible()
    no_sideways_scroll(page)
    page.get_by_role("article", name="Starter").get_by_role("button", name="Subscribe to Starter").click()
    pay_in_iframe(page, "4355 0843 5508 4358")
    expect(page.get_by_role("heading", name="Your Starter plan is active")).to_be_visible(timeout=20_000)

    page.goto("/pricing")
    starter = page.get_by_role("article", name="Starter")
    expect(starter.get_by_text("Current plan")).to_be_visible()
    expect(starter.get_by_role("button")).to_have_count(0)
    expect(starter.get_by_role("link")).to_have_count(0)
    no_sideways_scroll(page)
    page.get_by_role("article", name="Team").get_by_role("link", name="Upgrade to Team").click()
    expect(page.get_by_role("heading", name="Change to Team")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile(r"^Upgrade and pay \$\d+\.\d\d$"))).to_be_visible()
