"""The checkout on a phone and a desktop: the summary first on a phone and beside the form on a
desktop, PayTR's iframe as tall as its page (PayTR's resizer; the emulator serves a compatible one)
so it never scrolls inside, the pay-once / save-the-card choice above the form, with and without
JavaScript; and the PayTR emulator's own pages on a phone."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import LiveServer

PASSWORD = "telefonda ödeme sayfası"
PHONE, DESKTOP = {"width": 390, "height": 844}, {"width": 1280, "height": 800}


@pytest.fixture
def live_server(tmp_path):
    server = LiveServer(tmp_path / "data", PAYTR_RECURRING="1")
    yield server.start()
    server.stop()


def register(page, email="telefon@example.com"):
    page.goto("/auth/register?plan=starter")
    page.get_by_label("Company name").fill("Kordon Kahve Ticaret Limited Şirketi")
    page.get_by_label("Your name").fill("Selin Arslan")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account and start trial").click()
    expect(page.get_by_text("14 days left")).to_be_visible()


def no_sideways_scroll(page):
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), page.url


def box(locator):
    return locator.bounding_box()


def expect_iframe_fits_its_page(page):
    """PayTR's page reported its height and the iframe took it: nothing scrolls inside."""
    expect(page.locator("#paytriframe")).to_have_attribute("scrolling", "no")  # set on the first report
    frame = page.locator("#paytriframe").content_frame
    expect(frame.get_by_role("button", name=re.compile(r"29[.,]00"))).to_be_visible()
    inner = page.locator("#paytriframe").element_handle().content_frame()
    for _ in range(50):  # a reported height is applied within a frame or two
        height = page.locator("#paytriframe").evaluate("frame => frame.clientHeight")
        scroll_height = inner.evaluate("document.documentElement.scrollHeight")
        if height >= scroll_height:
            break
        page.wait_for_timeout(100)
    assert height >= scroll_height, (height, scroll_height)
    assert inner.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    return height


def test_checkout_summary_first_on_a_phone_beside_on_a_desktop_and_the_iframe_fits(page):
    register(page)
    page.get_by_role("button", name="Subscribe to Starter").click()
    expect(page.get_by_role("heading", name="Pay for Starter")).to_be_visible()
    checkout = page.url
    summary = page.get_by_role("complementary", name="Order summary")
    payment = page.get_by_role("region", name="Payment")

    page.set_viewport_size(PHONE)
    page.goto(checkout)
    phone_height = expect_iframe_fits_its_page(page)
    no_sideways_scroll(page)
    assert box(summary)["y"] + box(summary)["height"] <= box(payment)["y"]  # what is paid for, first
    expect(summary).to_contain_text("Starter")
    expect(summary).to_contain_text("$29.00")
    expect(summary).to_contain_text("Monthly, VAT included")
    expect(summary).to_contain_text("Kordon Kahve Ticaret Limited Şirketi")
    reference = summary.get_by_text(re.compile("^Order reference "))
    assert box(reference)["x"] + box(reference)["width"] <= 390

    page.set_viewport_size(DESKTOP)
    page.goto(checkout)
    desktop_height = expect_iframe_fits_its_page(page)
    no_sideways_scroll(page)
    assert box(summary)["x"] > box(payment)["x"] + box(payment)["width"] - 1  # beside the form
    assert phone_height != desktop_height  # sized by its page, not the stylesheet's fallback

    # The choice, once, above PayTR's form; choosing opens the other form and back.
    choice = page.get_by_role("group", name="How do you want to pay?")
    assert box(choice)["y"] < box(page.locator("#paytriframe"))["y"]
    expect(page.get_by_role("radio", name="Pay once, without saving my card")).to_be_checked()
    expect(page.get_by_role("button", name="Show this payment form")).to_be_hidden()  # a choice sends itself
    page.get_by_role("radio", name="Save my card for automatic renewal").click()
    expect(page.get_by_role("button", name="Pay $29.00 and save the card")).to_be_visible()
    expect(page.get_by_role("radio", name="Save my card for automatic renewal")).to_be_checked()
    expect(page.get_by_text("Save my card for automatic renewal", exact=True)).to_have_count(1)
    page.get_by_role("radio", name="Pay once, without saving my card").click()
    expect_iframe_fits_its_page(page)
    page.goto("/billing/")
    payments = page.get_by_role("region", name="Payments")
    expect(payments.get_by_text("Replaced", exact=True)).to_have_count(2)  # one checkout open, never two


def test_in_turkish_on_a_phone_the_iframe_fits_too(page):
    register(page, "turkce@example.com")
    page.get_by_role("button", name="Türkçe").click()
    expect(page.locator("html")).to_have_attribute("lang", "tr")
    page.set_viewport_size(PHONE)
    page.goto("/billing/")
    page.get_by_role("button", name="Starter planına abone ol").click()
    expect(page.get_by_role("group", name="Nasıl ödemek istersiniz?")).to_be_visible()
    expect_iframe_fits_its_page(page)
    no_sideways_scroll(page)


def test_without_javascript_the_iframe_has_a_fixed_height_and_the_choice_a_button(browser, live_server, page):
    register(page, "betiksiz@example.com")
    plain = browser.new_context(base_url=live_server.url, locale="en-GB", java_script_enabled=False,
                                viewport=PHONE).new_page()
    plain.goto("/auth/login")
    plain.get_by_label("Email").fill("betiksiz@example.com")
    plain.get_by_label("Password").fill(PASSWORD)
    plain.get_by_role("button", name="Log in").click()
    plain.get_by_role("button", name="Subscribe to Starter").click()
    iframe = plain.locator("#paytriframe")
    expect(iframe).to_be_visible()
    plain.wait_for_load_state()
    assert iframe.evaluate("frame => frame.clientHeight") >= 900
    no_sideways_scroll(plain)
    plain.get_by_role("radio", name="Save my card for automatic renewal").check()
    plain.get_by_role("button", name="Show this payment form").click()
    expect(plain.get_by_role("button", name="Pay $29.00 and save the card")).to_be_visible()
    expect(plain.get_by_role("radio", name="Save my card for automatic renewal")).to_be_checked()
    plain.context.close()


def test_the_emulators_pages_fit_a_phone_and_lead_back_to_the_app(live_server, page):
    register(page, "emulator@example.com")
    page.get_by_role("button", name="Subscribe to Starter").click()
    src = page.locator("#paytriframe").get_attribute("src")
    page.set_viewport_size(PHONE)

    page.goto(src)  # PayTR's payment page on its own, as wide as a phone
    no_sideways_scroll(page)
    expect(page.locator("h1")).to_have_count(1)
    expect(page.get_by_role("link", name=re.compile("Back to"))).to_have_count(0)  # it lives in the shop's iframe
    page.get_by_label("Name on card").fill("SELIN ARSLAN")
    page.get_by_label("Card number").fill("4355 0843 5508 4358")
    page.get_by_label("Expiry (MM/YY)").fill("12/30")
    page.get_by_label("CVV").fill("000")
    page.get_by_role("button", name="Pay 29.00 USD").click()
    expect(page.get_by_role("heading", name="Your Starter plan is active")).to_be_visible(timeout=20_000)

    page.goto("/paytr-emulator/")
    expect(page.get_by_role("heading", name="Transactions", level=1)).to_be_visible()
    no_sideways_scroll(page)
    back = page.get_by_role("link", name="← Back to PayTR Billing")
    expect(back).to_have_attribute("href", live_server.url + "/")
    page.get_by_role("link", name=re.compile(r"^PB")).first.click()
    expect(page.locator("h1")).to_have_count(1)
    no_sideways_scroll(page)
    page.get_by_role("link", name="← Back to PayTR Billing").click()
    expect(page).to_have_url(live_server.url + "/")


def test_a_choice_made_before_the_script_arrived_still_opens_its_form(page):
    register(page, "erken@example.com")
    page.route("**/static/js/checkout.js", lambda route: route.abort())  # the script is slow to come
    page.get_by_role("button", name="Subscribe to Starter").click()
    page.get_by_role("radio", name="Save my card for automatic renewal").click()
    expect(page.get_by_role("button", name="Show this payment form")).to_be_visible()
    page.unroute("**/static/js/checkout.js")
    page.add_script_tag(url="/static/js/checkout.js")  # ...and arrives
    expect(page.get_by_role("button", name="Pay $29.00 and save the card")).to_be_visible()
