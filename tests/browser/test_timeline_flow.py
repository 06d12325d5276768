"""The timeline in a real browser on a phone: days as headings, the filter as links that htmx
follows without reloading (the address follows too), and nothing wider than the screen."""

import re

from playwright.sync_api import expect

PASSWORD = "zaman çizelgesi testi"


def no_sideways_scroll(page):
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{page.url} is {width[0]} px wide at {width[1]} px"


def test_the_timeline_on_a_phone_filters_by_kind(page):
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/auth/register")
    page.get_by_label("Company name").fill("Kır Çiçeği Tasarım Limited Şirketi")
    page.get_by_label("Your name").fill("Selin Çelik")
    page.get_by_label("Email").fill("selin.celik.uzun-bir-adres@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account and start trial").click()
    expect(page).to_have_url(re.compile(r"/billing/"))

    page.goto("/billing/timeline")
    expect(page.get_by_role("heading", level=1, name="Billing timeline")).to_be_visible()
    expect(page.get_by_role("heading", level=2, name="Today")).to_be_visible()
    expect(page.get_by_text("Account opened: your free trial started (14 days)")).to_be_visible()
    filters = page.get_by_role("navigation", name="Show in the timeline")
    expect(filters.get_by_role("link", name=re.compile(r"^All \d+"))).to_have_attribute("aria-current", "page")
    no_sideways_scroll(page)

    filters.get_by_role("link", name=re.compile(r"^Emails \d+")).focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/billing/timeline\?show=emails$"))
    emails = filters.get_by_role("link", name=re.compile(r"^Emails"))
    expect(emails).to_have_attribute("aria-current", "page")
    expect(emails).to_be_focused()  # the list changed around it; a keyboard user is where they were
    expect(page.get_by_text("Account opened")).to_have_count(0)
    expect(page.get_by_text(re.compile(r"^(We emailed you|An email to you is on its way): “Welcome"))).to_be_visible()
    no_sideways_scroll(page)

    filters.get_by_role("link", name=re.compile(r"^Payments 0")).click()
    expect(page.get_by_text("No payments yet.")).to_be_visible()
    page.get_by_role("link", name="Show everything").click()
    expect(page.get_by_text("Account opened: your free trial started (14 days)")).to_be_visible()
    page.set_viewport_size({"width": 1280, "height": 800})
    no_sideways_scroll(page)
