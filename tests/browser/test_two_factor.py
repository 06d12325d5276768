"""Two-factor authentication in a real browser: a staff member enrols TOTP from their account
page (the code computed from the key the page shows), logs out, logs in with a code, then
with a recovery code; the recovery code does not work twice."""

import re

import pyotp
from playwright.sync_api import expect

from tests.browser.test_admin_flow import STAFF_PASSWORD, create_staff


def log_in_with_password(page):
    page.goto("/auth/login")
    page.get_by_label("Email").fill("ops@example.com")
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Log in").click()


def fresh_code(secret, used):
    """A code for a step not used yet: the server accepts each step once, so wait for the next."""
    totp = pyotp.TOTP(secret)
    while True:
        code = totp.now()
        if code not in used:
            used.add(code)
            return code
        import time
        time.sleep(1)


def test_enrol_then_log_in_with_a_code_and_with_a_recovery_code(page, live_server):
    create_staff(live_server)
    log_in_with_password(page)
    expect(page).to_have_url(re.compile(r"/admin/$"))

    page.get_by_role("link", name="ops", exact=True).click()  # the header name: My account
    expect(page.get_by_role("heading", name="My account")).to_be_visible()
    page.get_by_role("link", name="Turn on two-factor authentication").click()

    expect(page.get_by_role("heading", name="Set up two-factor authentication")).to_be_visible()
    expect(page.get_by_role("img", name="QR code for your authenticator app")).to_be_visible()
    secret = page.get_by_label("Setup key").inner_text().replace(" ", "")
    used: set[str] = set()
    page.get_by_label("Code from the app").fill("000000")
    page.get_by_role("button", name="Turn on two-factor authentication").click()
    expect(page.get_by_text("That code is not right.")).to_be_visible()
    page.get_by_label("Code from the app").fill(fresh_code(secret, used))
    page.get_by_role("button", name="Turn on two-factor authentication").click()

    expect(page.get_by_role("heading", name="Two-factor authentication is on")).to_be_visible()
    codes = page.get_by_label("Recovery codes").input_value().split()
    assert len(codes) == 10
    expect(page.get_by_role("link", name="Download the codes")).to_have_attribute("download", "recovery-codes.txt")
    page.get_by_role("link", name="I have saved them").click()
    expect(page.get_by_text("10 recovery codes left.")).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    log_in_with_password(page)
    expect(page.get_by_role("heading", name="Two-factor authentication")).to_be_visible()
    page.get_by_label("Code").fill(fresh_code(secret, used))
    page.get_by_role("button", name="Verify and log in").click()
    expect(page).to_have_url(re.compile(r"/admin/$"))

    page.get_by_role("button", name="Log out").click()
    log_in_with_password(page)
    page.get_by_label("Code").fill(codes[0])
    page.get_by_role("button", name="Verify and log in").click()
    expect(page).to_have_url(re.compile(r"/admin/$"))
    expect(page.get_by_text("You used a recovery code; 9 are left.")).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    log_in_with_password(page)
    page.get_by_label("Code").fill(codes[0])
    page.get_by_role("button", name="Verify and log in").click()
    expect(page.get_by_text("That code is not right, or was already used.")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/auth/two-factor$"))
