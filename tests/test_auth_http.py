"""Registration, login, logout, reset and CSRF over HTTP, as a browser would send them."""

import re
from datetime import timedelta

import pytest

from billing import accounts
from billing.db import scalar
from conftest import PASSWORD, csrf, login, outbox, post, register, second_browser


def counts(db):
    return {t: scalar(db, f"SELECT count(*) FROM {t}") for t in ("companies", "users", "subscriptions", "outbox")}


def test_register_logs_in_and_lands_on_the_dashboard(client, db):
    response = register(client, email="  Ayse@Example.COM ")
    assert response.status_code == 303 and response.headers["location"] == "/billing/"
    page = client.get("/billing/")
    assert page.status_code == 200
    assert "Yılmaz Yazılım A.Ş." in page.text
    assert "14 days left" in page.text and "11 December 2026" in page.text
    assert "Welcome aboard" in page.text
    assert scalar(db, "SELECT email FROM users") == "ayse@example.com"


def test_register_from_a_plan_link_starts_that_plans_trial(client, db):
    page = client.get("/auth/register?plan=enterprise")
    assert "Enterprise" in page.text
    register(client, plan="enterprise")
    assert scalar(db, "SELECT plan FROM subscriptions") == "enterprise"


@pytest.mark.parametrize("field, value, message", [
    ("company_name", "", "Enter your company&#39;s name."),
    ("company_name", "x" * 201, "at most 200 characters"),
    ("name", "   ", "Enter your name."),
    ("name", "y" * 101, "at most 100 characters"),
    ("email", "", "Enter your email address."),
    ("email", "not-an-email", "Enter a valid email address"),
    ("password", "", "Use at least 8 characters."),
    ("password", "1234567", "Use at least 8 characters."),
    ("password", "p" * 2000, "at most 1024"),
    ("password", "password123", "too common"),
])
def test_bad_registration_input_gets_a_clear_error_and_changes_nothing(client, db, field, value, message):
    before = counts(db)
    response = register(client, **{{"company_name": "company"}.get(field, field): value})
    assert response.status_code == 422
    assert message in response.text
    assert counts(db) == before


def test_all_bad_fields_are_reported_at_once(client):
    response = post(client, "/auth/register", {"company_name": "", "name": "", "email": "x", "password": "1"})
    assert response.status_code == 422
    assert response.text.count('class="error"') == 4
    assert 'aria-invalid="true"' in response.text


def test_duplicate_email_is_refused(client, db):
    register(client, email="dup@example.com")
    client.cookies.clear()
    before = counts(db)
    response = register(client, email="DUP@example.com")
    assert response.status_code == 422 and "already exists" in response.text
    assert counts(db) == before


def test_htmx_gets_only_the_form_fragment_back(client):
    token = csrf(client, "/auth/register")
    response = client.post("/auth/register", data={"csrf_token": token, "email": "bad"},
                           headers={"HX-Request": "true"})
    assert response.status_code == 422
    assert response.text.lstrip().startswith("<form")
    assert "<html" not in response.text
    assert "HX-Request" in response.headers["vary"]


def test_htmx_success_redirects_with_hx_redirect(client):
    token = csrf(client, "/auth/register")
    response = client.post("/auth/register", headers={"HX-Request": "true"}, data={
        "csrf_token": token, "company_name": "Acme", "name": "Ali", "email": "ali@example.com", "password": PASSWORD})
    assert response.status_code == 200 and response.headers["hx-redirect"] == "/billing/"


def test_missing_or_wrong_csrf_token_is_refused_and_changes_nothing(client, db):
    client.get("/auth/register")
    before = counts(db)
    form = {"company_name": "Acme", "name": "Ali", "email": "ali@example.com", "password": PASSWORD}
    missing = client.post("/auth/register", data=form)
    wrong = client.post("/auth/register", data={**form, "csrf_token": "forged"})
    header_wrong = client.post("/auth/register", data=form, headers={"X-CSRF-Token": "forged"})
    for response in (missing, wrong, header_wrong):
        assert response.status_code == 403
        assert "This form has expired" in response.text
    assert counts(db) == before


def test_csrf_token_in_header_works_for_htmx(client, db):
    token = csrf(client, "/auth/register")
    response = client.post("/auth/register", headers={"X-CSRF-Token": token}, follow_redirects=False, data={
        "company_name": "Acme", "name": "Ali", "email": "ali@example.com", "password": PASSWORD})
    assert response.status_code == 303


def test_login_with_wrong_password_or_unknown_email_says_the_same(client):
    register(client)
    client.cookies.clear()
    wrong = login(client, password="not the password")
    unknown = login(client, email="nobody@example.com")
    for response in (wrong, unknown):
        assert response.status_code == 422
        assert "Email or password is incorrect." in response.text
        # The email stays filled in and the cursor goes to the password, the field to retype.
        assert re.search(r'<input id="f-password"[^>]*autofocus', response.text)
        assert not re.search(r'<input id="f-email"[^>]*autofocus', response.text)
    assert client.get("/billing/", follow_redirects=False).status_code == 303


def test_login_with_empty_fields(client):
    response = login(client, email="", password="")
    assert response.status_code == 422
    assert "Enter your email address." in response.text and "Enter your password." in response.text
    # Only the first field to fix takes the focus.
    assert re.search(r'<input id="f-email"[^>]*autofocus', response.text)
    assert response.text.count("autofocus") == 1


def test_login_is_case_insensitive_and_renews_the_session(client):
    register(client)
    first_sid = client.cookies.get("billing_session")
    client.post("/auth/logout", data={"csrf_token": csrf(client, "/billing/")})
    response = login(client, email="  AYSE@example.com")
    assert response.status_code == 303 and response.headers["location"] == "/billing/"
    assert client.cookies.get("billing_session") != first_sid


def test_session_cookie_flags(client):
    response = register(client)
    cookie = response.headers["set-cookie"]
    assert "billing_session=" in cookie
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert "secure" not in cookie.lower()  # BASE_URL is http here


@pytest.mark.parametrize("env", [{"BASE_URL": "https://billing.example.com"}])
def test_session_cookie_is_secure_behind_https(client):
    response = client.get("/auth/login")
    assert "secure" in response.headers["set-cookie"].lower()


def test_logout_really_ends_the_session(client):
    register(client)
    stolen = dict(client.cookies)
    assert post(client, "/auth/logout", token_from="/billing/").status_code == 303
    client.cookies.clear()
    client.cookies.update(stolen)  # replaying the old cookie must not work
    response = client.get("/billing/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/auth/login")


def test_logout_needs_post(client):
    assert client.get("/auth/logout").status_code == 405


def test_pages_that_need_login_redirect_with_next(client):
    response = client.get("/billing/team", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/auth/login?next=/billing/team"


def test_next_is_followed_inside_the_app(client):
    register(client)
    client.post("/auth/logout", data={"csrf_token": csrf(client, "/billing/")})
    response = login(client, next="/billing/team")
    assert response.headers["location"] == "/billing/team"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example",
                                    "javascript:alert(1)", "http:/evil.example", "billing/"])
def test_next_never_leaves_the_app(client, target):
    register(client)
    client.post("/auth/logout", data={"csrf_token": csrf(client, "/billing/")})
    response = login(client, next=target)
    assert response.headers["location"] == "/billing/"


def test_login_throttling_over_http(client, clock):
    register(client)
    client.cookies.clear()
    for _ in range(accounts.ACCOUNT_LOCK_AFTER):
        login(client, password="wrong wrong wrong")
    locked = login(client)  # even the right password is refused while locked
    assert locked.status_code == 429
    assert "Too many failed login attempts" in locked.text
    assert int(locked.headers["retry-after"]) > 0
    clock.advance(accounts.THROTTLE_WINDOW)
    assert login(client).status_code == 303


def test_forgot_password_answers_the_same_for_known_and_unknown(client, db):
    register(client, email="known@example.com")
    client.cookies.clear()
    known = post(client, "/auth/forgot-password", {"email": "known@example.com"})
    unknown = post(client, "/auth/forgot-password", {"email": "unknown@example.com"})
    strip = lambda r: re.sub(r"(known|unknown)@example.com", "EMAIL", r.text).replace(
        csrf_of(r), "")
    assert known.status_code == unknown.status_code == 200
    assert "Check your email" in known.text
    assert strip(known) == strip(unknown)
    assert [m["to_addr"] for m in outbox(db, template="password_reset")] == ["known@example.com"]


def csrf_of(response):
    match = re.search(r'name="csrf_token" value="([^"]+)"', response.text) or re.search(
        r'"X-CSRF-Token": "([^"]+)"', response.text)
    return match.group(1) if match else ""


def reset_link(db):
    body = outbox(db, template="password_reset")[-1]["body_text"]
    return re.search(r"http://testserver(/auth/reset/\S+)", body).group(1)


def test_reset_password_flow_ends_other_sessions(app, client, db):
    register(client, email="reset@example.com")
    other_device = second_browser(app)
    other_device.cookies.update(dict(client.cookies))
    assert other_device.get("/billing/", follow_redirects=False).status_code == 200

    post(client, "/auth/forgot-password", {"email": "reset@example.com"})
    link = reset_link(db)
    page = client.get(link)
    assert "Choose a new password" in page.text and "reset@example.com" in page.text
    mismatch = post(client, link, {"password": "a new long passphrase", "password_confirm": "different"},
                    token_from=link)
    assert mismatch.status_code == 422 and "do not match" in mismatch.text
    weak = post(client, link, {"password": "12345678", "password_confirm": "12345678"}, token_from=link)
    assert weak.status_code == 422 and "too common" in weak.text
    done = post(client, link, {"password": "a new long passphrase", "password_confirm": "a new long passphrase"},
                token_from=link)
    assert done.status_code == 303 and done.headers["location"] == "/auth/login"

    assert other_device.get("/billing/", follow_redirects=False).status_code == 303  # logged out there
    assert login(client, email="reset@example.com").status_code == 422  # old password gone
    assert login(client, email="reset@example.com", password="a new long passphrase").status_code == 303

    reused = client.get(link)
    assert reused.status_code == 410 and "expired or was already used" in reused.text


def test_expired_reset_link(client, db, clock):
    register(client, email="late@example.com")
    post(client, "/auth/forgot-password", {"email": "late@example.com"})
    link = reset_link(db)
    clock.advance(timedelta(minutes=20, seconds=1))
    page = client.get(link)
    assert page.status_code == 410 and "Send a new link" in page.text
    response = client.post(link, data={"csrf_token": csrf(client, "/auth/login"), "password": "x" * 20,
                                       "password_confirm": "x" * 20})
    assert response.status_code == 410


def test_unknown_reset_link(client):
    assert client.get("/auth/reset/not-a-real-token").status_code == 410


def test_oversized_body_is_refused(client):
    token = csrf(client, "/auth/register")
    response = client.post("/auth/register", data={"csrf_token": token, "company_name": "x" * 2_000_000})
    assert response.status_code == 413
