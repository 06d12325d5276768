"""A new customer in a real browser: register, see the trial, log out and in, reset the password."""

import re

from playwright.sync_api import expect

from tests.browser.conftest import open_mail, expect_cursor_in

PASSWORD = "ilk parolam güçlü olsun"
NEW_PASSWORD = "yeni ve daha uzun parola"


def test_register_trial_logout_login_and_reset_password(page):
    page.goto("/pricing")
    page.get_by_role("link", name="Start free trial").first.click()

    page.get_by_label("Company name").fill("Karadeniz Yazılım A.Ş.")
    page.get_by_label("Your name").fill("Şule Öztürk")
    page.get_by_label("Email").fill("sule@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account and start trial").click()

    expect(page).to_have_url(re.compile(r"/billing/$"))
    expect(page.get_by_role("heading", name="Karadeniz Yazılım A.Ş.")).to_be_visible()
    expect(page.get_by_text("14 days left")).to_be_visible()
    expect(page.get_by_text("Welcome aboard!")).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/auth/login$"))
    expect(page.get_by_text("You have been logged out.")).to_be_visible()

    page.get_by_label("Email").fill("sule@example.com")
    page.get_by_label("Password").fill("not my password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Email or password is incorrect.")).to_be_visible()
    # The email is kept and the cursor waits in the password field; wait for htmx to put it there.
    expect(page.get_by_label("Email")).to_have_value("sule@example.com")
    expect_cursor_in(page, "Password")

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("14 days left")).to_be_visible()
    page.get_by_role("button", name="Log out").click()

    page.get_by_role("link", name="Forgot your password?").click()
    page.get_by_label("Email").fill("sule@example.com")
    page.get_by_role("button", name="Send reset link").click()
    expect(page.get_by_text("Check your email")).to_be_visible()

    open_mail(page, "Reset your PayTR Billing password")
    reset_link = page.get_by_role("link", name=re.compile(r"auth.reset"))
    reset_link.click()

    expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_label("Confirm password").fill("something else entirely")
    page.get_by_role("button", name="Set new password").click()
    expect(page.get_by_text("The two passwords do not match.")).to_be_visible()
    expect_cursor_in(page, "Confirm password")
    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_label("Confirm password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Set new password").click()

    expect(page.get_by_text("Your password has been changed")).to_be_visible()
    page.get_by_label("Email").fill("sule@example.com")
    page.get_by_label("Password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/billing/$"))
    expect(page.get_by_text("14 days left")).to_be_visible()
