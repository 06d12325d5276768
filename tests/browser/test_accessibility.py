"""Every page of the product, in English and in Turkish, checked at 1280 and 390 px by the
suite's accessibility check (axe-core's WCAG 2.2 A/AA rules, no sideways scroll; see
tests/browser/conftest.py): public and auth pages, a customer's dashboard and every page under
it, the staff console's pages, the error pages and forms showing their validation errors.

One live server and one browser context per language (two tests, which the suite's two workers
run side by side); the data is made with the product's own flows (sign up, pay in PayTR's
iframe, a staff refund, invite a colleague), then the context walks the pages.
The check itself runs as the test goes (before each browser call) and fails the test at the end,
listing every page, width and rule at fault."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_admin_flow import STAFF_PASSWORD, create_staff
from tests.browser.test_checkout_flow import PASSWORD, pay_in_iframe
from tests.browser.test_turkish_flow import pay_in_iframe_in_turkish

CUSTOMERS = {
    # language: (browser locale, email, company, register button, subscribe button)
    "en": ("en-GB", "erisim@example.com", "Erişilebilir Yazılım A.Ş.", "Create account and start trial", "Subscribe to Starter"),
    "tr": ("tr-TR", "ulasim@example.com", "Ulaşılabilir Bilişim Ltd. Şti.", "Hesap oluştur ve denemeyi başlat", "Starter planına abone ol"),
}
STAFF_EMAIL = "erisim-ops@example.com"


def sign_up_and_pay(page, lang):
    _, email, company, register_button, subscribe_button = CUSTOMERS[lang]
    page.goto("/auth/register?plan=starter")
    page.locator("#company_name, [name=company_name]").first.fill(company)
    page.locator("[name=name]").fill("Deniz Aydın")
    page.locator("[name=email]").fill(email)
    page.locator("[name=password]").fill(PASSWORD)
    page.get_by_role("button", name=register_button).click()
    page.get_by_role("button", name=subscribe_button).click()
    if lang == "en":
        pay_in_iframe(page, "4355 0843 5508 4358")
    else:
        pay_in_iframe_in_turkish(page, "4355 0843 5508 4358")
    expect(page.locator("#payment-status h1")).not_to_have_text(re.compile("…"), timeout=20_000)


def log_in(page, email, password):
    page.goto("/auth/login")
    page.locator("[name=email]").fill(email)
    page.locator("[name=password]").fill(password)
    page.locator("form button[type=submit]").first.click()
    expect(page.locator("a.whoami")).to_be_visible()


def log_out(page):
    page.locator("header form[action='/auth/logout'] button").click()
    expect(page.locator("a.whoami")).to_have_count(0)


def visit(page, path):
    page.goto(path)
    expect(page.locator("h1")).to_have_count(1)


SKIP_LINK = {"en": "Skip to main content", "tr": "Ana içeriğe geç"}


def skip_link_goes_to_main(page, lang):
    """The first Tab reaches the skip link; following it puts the focus on the page's content."""
    page.goto("/pricing")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name=SKIP_LINK[lang])).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main#main")).to_be_focused()


def walk_public_pages(page):
    for path in ("/", "/pricing", "/auth/login", "/auth/register", "/auth/forgot-password", "/api/docs",
                 # Links that no longer work: a reset, an invitation, a portal link.
                 "/auth/reset/not-a-token", "/auth/invite/not-a-token", "/portal/not-a-token"):
        visit(page, path)
    # PayTR's emulator (in development the app mounts it): its own pages, checked like ours.
    page.goto("/paytr-emulator/")
    # Forms showing their validation errors.
    page.goto("/auth/register")
    page.locator("main form").first.evaluate("f => f.noValidate = true")
    page.locator("main form button[type=submit]").first.click()
    expect(page.locator(".field.has-error").first).to_be_visible()
    page.goto("/auth/login")
    page.locator("[name=email]").fill("nobody@example.com")
    page.locator("[name=password]").fill("not the password")
    page.locator("form button[type=submit]").first.click()
    expect(page.locator(".alert, .error").first).to_be_visible()
    # Error pages.
    assert page.goto("/no-such-page").status == 404
    expect(page.locator("h1")).to_have_count(1)


def walk_customer_pages(page, lang):
    _, email, *_ = CUSTOMERS[lang]
    log_in(page, email, PASSWORD)
    for path in ("/billing/", "/billing/timeline", "/billing/team", "/billing/account", "/billing/details",
                 "/billing/cancel", "/billing/plan/team", "/pricing", "/"):
        visit(page, path)
    # The invoice, its credit note, an email the customer was sent.
    page.goto("/billing/")
    invoice = page.locator("a[href^='/billing/invoices/']").first.get_attribute("href")
    visit(page, invoice)
    visit(page, page.locator("a[href^='/billing/credit-notes/']").first.get_attribute("href"))
    page.goto("/billing/timeline")
    email_link = page.locator("a[href^='/billing/emails/']").first
    if email_link.count():
        visit(page, email_link.get_attribute("href"))
    # A checkout page (a renewal paid now) and PayTR's form in it.
    visit(page, "/billing/renew")
    page.locator("main form button[type=submit]").first.click()
    expect(page.locator("#paytriframe")).to_be_visible()
    expect(page.frame_locator("#paytriframe").locator("input").first).to_be_visible()
    # Billing details with validation errors.
    page.goto("/billing/details")
    page.locator("[name=tax_id]").fill("12345")
    page.locator("form.stacked button[type=submit]").first.click()
    expect(page.locator(".field.has-error").first).to_be_visible()
    # The team page with an invitation and an invalid one.
    page.goto("/billing/team")
    page.locator("#team form [name=email]").fill("not an email")
    page.locator("#team form:has([name=email])").evaluate("f => f.noValidate = true")
    page.locator("#team form button[type=submit]").last.click()
    expect(page.locator(".field.has-error").first).to_be_visible()
    page.locator("#team form [name=email]").fill(f"colleague-{lang}@example.com")
    page.locator("#team form button[type=submit]").last.click()
    expect(page.get_by_text(f"colleague-{lang}@example.com").first).to_be_visible()
    # A customer on a staff page: 403.
    assert page.goto("/admin/").status in (403, 404)
    expect(page.locator("h1")).to_have_count(1)
    log_out(page)


def walk_staff_pages(page, lang):
    log_in(page, STAFF_EMAIL, STAFF_PASSWORD)
    console = page.locator("nav.subnav a")
    paths = [href for href in (console.nth(i).get_attribute("href") for i in range(console.count()))]
    assert len(paths) >= 8, paths
    for path in paths + ["/admin/account", "/admin/plans/new", "/admin/clock", "/api/docs", "/auth/two-factor/setup"]:
        visit(page, path)
    # A customer's page, a payment's refund page, plans, staff members, webhooks.
    page.goto("/admin/")
    page.locator("[name=q]").first.fill(CUSTOMERS[lang][2].split()[0])
    # The list changes as one types; a screen reader hears how many customers are left.
    expect(page.get_by_role("status").filter(has_text=re.compile(r"(^|\s)1(\s|$)"))).to_have_count(1)
    page.locator("a[href^='/admin/companies/']").first.click()
    expect(page.locator("h1")).to_have_count(1)
    company = page.url
    for details in page.locator("details").all():  # every action form, open
        details.evaluate("d => d.open = true")
    page.locator("h1").click()
    visit(page, page.locator("a[href$='/refund']").first.get_attribute("href"))
    page.locator("main form").first.evaluate("f => f.noValidate = true")
    page.locator("main form button[type=submit]").first.click()  # no reason: the error
    expect(page.locator(".field.has-error, .error").first).to_be_visible()
    visit(page, company)
    page.goto("/admin/plans")
    visit(page, page.locator("a[href^='/admin/plans/']:not([href$='/new'])").first.get_attribute("href"))
    page.goto("/admin/plans/new")
    page.locator("main form").first.evaluate("f => f.noValidate = true")
    page.locator("main form button[type=submit]").first.click()
    expect(page.locator(".field.has-error").first).to_be_visible()
    page.goto("/admin/staff")
    visit(page, page.locator("a[href^='/admin/staff/']").first.get_attribute("href"))
    page.goto("/admin/webhooks")
    page.locator("[name=url]").fill(f"https://hooks.example.com/{lang}")
    page.locator("form[action='/admin/webhooks'] button[type=submit]").click()
    expect(page.locator("h1")).to_have_count(1)
    page.goto("/admin/webhooks")
    visit(page, page.locator("a[href^='/admin/webhooks/']").first.get_attribute("href"))
    page.goto("/admin/api-keys")
    page.goto("/dev/mail")
    page.locator("a[href^='/dev/mail/']").first.click()
    expect(page.locator("h1")).to_have_count(1)
    log_out(page)


def refund_part(page, company):
    log_in(page, STAFF_EMAIL, STAFF_PASSWORD)
    page.goto("/admin/")
    page.locator("[name=q]").first.fill(company.split()[0])
    page.get_by_role("link", name=company).click()
    page.locator("a[href$='/refund']").first.click()
    page.locator("[name=amount]").fill("5,00")
    page.locator("[name=reason]").fill("Erişilebilirlik testi")
    page.locator("form.stacked button[type=submit]").first.click()
    page.locator("form button[type=submit][name=confirm], form button[value=confirm]").or_(
        page.get_by_role("button", name=re.compile("Confirm refund|İadeyi onayla"))).first.click()
    expect(page.locator(".alert.success").first).to_be_visible()
    log_out(page)


@pytest.mark.parametrize("lang", list(CUSTOMERS))
def test_every_page_at_both_widths(browser, live_server, lang):
    """One language per test, so the two run side by side on the suite's two workers."""
    create_staff(live_server, STAFF_EMAIL)
    page = browser.new_context(base_url=live_server.url, locale=CUSTOMERS[lang][0]).new_page()
    page.set_default_timeout(15_000)
    sign_up_and_pay(page, lang)
    log_out(page)
    refund_part(page, CUSTOMERS[lang][2])  # a credit note for the customer's pages
    skip_link_goes_to_main(page, lang)
    walk_public_pages(page)
    walk_customer_pages(page, lang)
    walk_staff_pages(page, lang)
    expect(page.locator("html")).to_have_attribute("lang", lang)


def test_the_check_finds_a_missing_text_alternative_and_a_page_wider_than_a_phone(browser, live_server, a11y_checker):
    """The check itself: a page spoiled on purpose is reported at the right width, and only
    because a Playwright call ran (the hook that drives the check is in place)."""
    page = browser.new_context(base_url=live_server.url).new_page()
    page.goto("/pricing")
    page.evaluate("""() => {
        const img = document.createElement('img'); img.src = '/static/none.png';
        const wide = document.createElement('div'); wide.style.width = '600px'; wide.textContent = 'wide';
        document.querySelector('main').append(img, wide);
    }""")
    expect(page.locator("main img")).to_have_count(1)  # a call: the check runs before it
    found = "\n".join(a11y_checker.failures)
    assert "axe critical image-alt" in found and "at 1280 px" in found
    assert "sideways scroll at 390 px" in found and "div (right edge" in found
    assert "sideways scroll at 1280 px" not in found
    a11y_checker.failures.clear()  # found on purpose
