"""The console's lists in a real browser: typing a search narrows the list in place (htmx), a
filter and a sort change it, and on a 375 px phone every row is a labelled block with nothing
cut off or scrolled sideways; the payments report fits 1280 px."""

import re

from playwright.sync_api import expect

from tests.browser.test_admin_flow import STAFF_PASSWORD, create_staff
from tests.browser.test_checkout_flow import pay_in_iframe, register


def staff_login(page, live_server):
    create_staff(live_server)
    page.goto("/auth/login")
    page.get_by_label("Email").fill("ops@example.com")
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_search_and_filters_narrow_the_list_and_phones_get_labelled_rows(page, live_server):
    register(page, email="sirket@example.com", company="Boğaziçi Danışmanlık ŞİRKETİ")
    page.get_by_role("button", name="Subscribe to Starter").click()
    pay_in_iframe(page, "4355 0843 5508 4358")
    expect(page.get_by_role("heading", name="Your Starter plan is active")).to_be_visible(timeout=20_000)
    page.get_by_role("button", name="Log out").click()
    register(page, email="deneme@example.com", company="Işıklı Tekstil")
    page.get_by_role("button", name="Log out").click()

    staff_login(page, live_server)
    customers = page.locator("#companies")
    expect(customers.get_by_role("link", name="Işıklı Tekstil")).to_be_visible()
    page.get_by_label("Search customers").fill("şirketi")  # typed in lower case, stored in capitals
    expect(customers.get_by_role("link", name="Işıklı Tekstil")).to_have_count(0)
    expect(customers.get_by_role("link", name="Boğaziçi Danışmanlık ŞİRKETİ")).to_be_visible()
    expect(page).to_have_url(re.compile(r"q=%C5%9Fi|q=şi"))  # the URL follows, so the view can be shared
    page.get_by_label("Search customers").fill("")
    page.get_by_label("Status").select_option(label="Trial")
    expect(customers.get_by_role("link", name="Boğaziçi Danışmanlık ŞİRKETİ")).to_have_count(0)
    expect(customers.get_by_role("link", name="Işıklı Tekstil")).to_be_visible()
    page.get_by_label("Status").select_option(label="Any status")
    page.get_by_label("Sort").select_option(label="Highest MRR first")
    expect(customers.locator("tbody tr").first).to_contain_text("$29.00")

    page.set_viewport_size({"width": 375, "height": 800})
    page.reload()
    row = customers.locator("tbody tr").first
    mrr = row.locator('td[data-label="MRR"]')
    expect(mrr).to_contain_text("$29.00")
    # The cell names its column itself (the header row is hidden on a phone) and fits the screen.
    assert mrr.evaluate("td => getComputedStyle(td, '::before').content") == '"MRR"'
    box = mrr.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 375
    assert page.evaluate("document.documentElement.scrollWidth") <= 375

    page.goto("/admin/payments")
    amount = page.locator('#payments td[data-label="Amount"]').first
    expect(amount).to_have_text("$29.00")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.set_viewport_size({"width": 1280, "height": 800})
    page.reload()
    invoice = page.locator('#payments td[data-label="Invoice"]').first
    expect(invoice).to_have_text("INV-2026-000001")
    wrap = page.locator("#payments .table-wrap")
    assert wrap.evaluate("el => el.scrollWidth <= el.clientWidth")  # every column fits: no sideways scroll
