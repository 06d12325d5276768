"""TOTP two-factor authentication: enrolment, login in two steps, recovery codes, no replay,
throttling, mandatory enrolment for production staff, re-authentication by code."""

from __future__ import annotations

import re
from datetime import timedelta

import pyotp
import pytest

from billing import accounts, two_factor
from billing.clock import iso
from billing.db import one, scalar
from conftest import PASSWORD, START, login, make_settings, post, register, second_browser, visible

SECRET_RE = re.compile(r'id="totp-secret"[^>]*>([A-Z2-7 ]+)<')
CODES_RE = re.compile(r'id="recovery-codes"[^>]*>([^<]+)<')


def enrol(browser, clock):
    """Turn two-factor on through the pages, as a person would: read the key, type a code.
    Returns (secret, recovery codes)."""
    page = browser.get("/auth/two-factor/setup")
    assert page.status_code == 200, page.text
    secret = SECRET_RE.search(page.text).group(1).replace(" ", "")
    assert "<svg" in page.text  # the QR code, drawn here
    code = pyotp.TOTP(secret).at(clock.real_now())
    done = post(browser, "/auth/two-factor/setup", {"code": code}, token_from="/auth/two-factor/setup")
    assert done.status_code == 200, visible(done)
    assert "Save your recovery codes now" in visible(done)
    codes = CODES_RE.search(done.text).group(1).split()
    return secret, codes


def totp(secret, clock, steps=0):
    return pyotp.TOTP(secret).at(clock.real_now() + timedelta(seconds=30 * steps))


def log_out(browser):
    post(browser, "/auth/logout", token_from="/billing/account")


def password_step(browser, email="ayse@example.com"):
    answer = login(browser, email=email)
    assert answer.status_code == 303 and answer.headers["location"] == "/auth/two-factor", answer.text
    return answer


@pytest.fixture
def customer(client, db):
    assert register(client).status_code == 303
    return accounts.user_by_email(db, "ayse@example.com")


def test_enrol_shows_ten_codes_once_and_stores_only_sealed_secret_and_hashes(client, db, clock, customer):
    secret, codes = enrol(client, clock)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(re.fullmatch(r"[A-Z2-9]{4}(-[A-Z2-9]{4}){3}", c) for c in codes)
    row = one(db, "SELECT * FROM users WHERE id = ?", [customer["id"]])
    assert row["totp_enabled_at"] and secret not in row["totp_secret"]
    stored = [r[0] for r in db.execute("SELECT code_hash FROM recovery_codes").fetchall()]
    assert len(stored) == 10 and not set(codes) & set(stored)
    page = visible(client.get("/billing/account"))
    assert "10 recovery codes left" in page
    assert "Save your recovery codes now" not in page  # shown once, on the answer that made them


def test_a_wrong_first_code_does_not_turn_it_on(client, db, clock, customer):
    client.get("/auth/two-factor/setup")
    wrong = post(client, "/auth/two-factor/setup", {"code": "000000"}, token_from="/auth/two-factor/setup")
    assert wrong.status_code == 422 and "That code is not right" in visible(wrong)
    assert one(db, "SELECT totp_enabled_at FROM users")["totp_enabled_at"] is None


def test_the_enrol_page_keeps_one_secret_until_confirmed(client, customer):
    first = SECRET_RE.search(client.get("/auth/two-factor/setup").text).group(1)
    again = SECRET_RE.search(client.get("/auth/two-factor/setup").text).group(1)
    assert first == again


def test_login_takes_the_password_then_a_code(client, app, db, clock, customer):
    secret, _codes = enrol(client, clock)
    log_out(client)
    clock.advance(timedelta(seconds=31))
    password_step(client)
    assert client.get("/billing/", follow_redirects=False).status_code == 303  # not logged in yet
    assert "Enter the 6-digit code from your authenticator app." in visible(client.get("/auth/two-factor"))
    done = post(client, "/auth/two-factor", {"code": totp(secret, clock)}, token_from="/auth/two-factor")
    assert done.status_code == 303 and done.headers["location"] == "/billing/"
    assert client.get("/billing/").status_code == 200


def test_a_code_is_accepted_once_replay_refused(client, app, db, clock, customer):
    secret, _codes = enrol(client, clock)
    log_out(client)
    clock.advance(timedelta(seconds=31))
    code = totp(secret, clock)
    password_step(client)
    assert post(client, "/auth/two-factor", {"code": code}, token_from="/auth/two-factor").status_code == 303
    other = second_browser(app)
    password_step(other)
    replay = post(other, "/auth/two-factor", {"code": code}, token_from="/auth/two-factor")
    assert replay.status_code == 422 and "already used" in visible(replay)
    # The previous step's code is older than the one used: refused too.
    old = post(other, "/auth/two-factor", {"code": totp(secret, clock, -1)}, token_from="/auth/two-factor")
    assert old.status_code == 422


def test_codes_one_step_either_side_work_but_not_two(db, settings, password_hash):
    user = accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    secret = two_factor.pending_secret(db, settings, user)
    assert two_factor.confirm_enrolment(db, START, settings, user, pyotp.TOTP(secret).at(START)) is not None
    later = START + timedelta(minutes=5)
    assert two_factor.verify(db, later, settings, user, pyotp.TOTP(secret).at(later + timedelta(seconds=30))) == "totp"
    even_later = later + timedelta(minutes=5)
    assert two_factor.verify(db, even_later, settings, user,
                             pyotp.TOTP(secret).at(even_later - timedelta(seconds=60))) is None
    assert two_factor.verify(db, even_later, settings, user,
                             pyotp.TOTP(secret).at(even_later - timedelta(seconds=30))) == "totp"


def test_a_recovery_code_logs_in_once(client, app, db, clock, customer):
    _secret, codes = enrol(client, clock)
    log_out(client)
    password_step(client)
    used = post(client, "/auth/two-factor", {"code": codes[3].lower()}, token_from="/auth/two-factor")
    assert used.status_code == 303
    assert "9 are left" in visible(client.get("/billing/"))
    log_out(client)
    password_step(client)
    again = post(client, "/auth/two-factor", {"code": codes[3]}, token_from="/auth/two-factor")
    assert again.status_code == 422
    assert scalar(db, "SELECT count(*) FROM recovery_codes WHERE used_at IS NOT NULL") == 1


def test_new_codes_replace_the_old_ones(client, app, db, clock, customer):
    _secret, codes = enrol(client, clock)
    made = post(client, "/auth/two-factor/recovery-codes", token_from="/billing/account")
    assert made.status_code == 200 and "New recovery codes" in visible(made)
    fresh = CODES_RE.search(made.text).group(1).split()
    assert not set(fresh) & set(codes)
    assert two_factor.verify(db, START, app.state.settings, customer, codes[0]) is None
    assert two_factor.verify(db, START, app.state.settings, customer, fresh[0]) == "recovery"


def test_wrong_codes_are_throttled_apart_from_the_password(client, app, db, clock, customer):
    secret, _codes = enrol(client, clock)
    log_out(client)
    for _ in range(accounts.ACCOUNT_LOCK_AFTER):
        password_step(client)  # a right password each time must not wipe the count of wrong codes
        assert post(client, "/auth/two-factor", {"code": "123456"}, token_from="/auth/two-factor").status_code == 422
    password_step(client)
    locked = post(client, "/auth/two-factor", {"code": totp(secret, clock)}, token_from="/auth/two-factor")
    assert locked.status_code == 429 and "Too many failed login attempts" in visible(locked)
    assert client.get("/billing/", follow_redirects=False).status_code == 303


def test_the_code_step_expires(client, clock, customer):
    secret, _codes = enrol(client, clock)
    log_out(client)
    password_step(client)
    clock.advance(timedelta(minutes=6))
    late = post(client, "/auth/two-factor", {"code": totp(secret, clock)}, token_from="/auth/login")
    assert late.status_code == 303 and late.headers["location"] == "/auth/login"


def test_turning_it_off_needs_password_and_code(client, db, clock, customer):
    secret, _codes = enrol(client, clock)
    clock.advance(timedelta(seconds=31))
    no_code = post(client, "/auth/two-factor/disable", {"password": PASSWORD}, token_from="/auth/two-factor/disable")
    assert no_code.status_code == 422
    wrong_password = post(client, "/auth/two-factor/disable", {"password": "not it at all", "code": totp(secret, clock)},
                          token_from="/auth/two-factor/disable")
    assert wrong_password.status_code == 422 and "That password is not right." in visible(wrong_password)
    off = post(client, "/auth/two-factor/disable", {"password": PASSWORD, "code": totp(secret, clock)},
               token_from="/auth/two-factor/disable")
    assert off.status_code == 303
    row = one(db, "SELECT totp_secret, totp_enabled_at FROM users")
    assert row["totp_secret"] is None and row["totp_enabled_at"] is None
    assert scalar(db, "SELECT count(*) FROM recovery_codes") == 0
    log_out(client)
    assert login(client).headers["location"] == "/billing/"


def test_reauthentication_accepts_a_code(client, app, db, clock, password_hash):
    accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    assert login(client, email="ops@example.com").status_code == 303
    secret, _codes = enrol(client, clock)
    clock.advance(timedelta(minutes=11))
    asked = client.get("/admin/staff", follow_redirects=False)
    assert asked.status_code == 200  # reading the list needs no fresh proof
    page = client.get("/auth/confirm?next=/admin/staff")
    assert "Or a code from your authenticator app" in visible(page)
    wrong = post(client, "/auth/confirm", {"code": "000000", "next": "/admin/staff"}, token_from="/auth/confirm")
    assert wrong.status_code == 422
    right = post(client, "/auth/confirm", {"code": totp(secret, clock), "next": "/admin/staff"},
                 token_from="/auth/confirm")
    assert right.status_code == 303 and right.headers["location"] == "/admin/staff"
    assert one(db, "SELECT authenticated_at FROM sessions")["authenticated_at"] == iso(clock.real_now())


def test_the_secret_is_sealed_to_its_user_and_key(settings):
    sealed = two_factor.seal(settings, 7, "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")
    assert "JBSW" not in sealed
    assert two_factor.unseal(settings, 7, sealed) == "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    assert two_factor.unseal(settings, 8, sealed) is None  # moved to another user's row
    other = settings.replace(secret_key=type(settings.secret_key)("x" * 64))
    assert two_factor.unseal(other, 7, sealed) is None


# --- mandatory for production staff ----------------------------------------------------------------


@pytest.fixture
def production(tmp_path, clock):
    from billing.app import create_app
    from starlette.testclient import TestClient

    # Production rules without production's outside services: the environment flag is what the guard reads.
    settings = make_settings(tmp_path).replace(env="production")
    app = create_app(settings, clock=clock)
    with TestClient(app, base_url="http://testserver") as c:
        yield app, c


def test_production_staff_must_enrol_before_anything_else(production, clock, password_hash):
    app, client = production
    db = app.state.store.db()
    accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    assert login(client, email="ops@example.com").status_code == 303
    for path in ("/admin/", "/admin/staff", "/admin/account", "/billing/"):
        sent = client.get(path, follow_redirects=False)
        assert sent.status_code == 303 and sent.headers["location"] == "/auth/two-factor/setup", path
    page = client.get("/auth/two-factor/setup")
    assert "Staff accounts must use two-factor authentication" in visible(page)
    secret = SECRET_RE.search(page.text).group(1).replace(" ", "")
    done = post(client, "/auth/two-factor/setup", {"code": pyotp.TOTP(secret).at(clock.real_now())},
                token_from="/auth/two-factor/setup")
    assert done.status_code == 200
    assert client.get("/admin/").status_code == 200
    # And it cannot be turned off by the staff member themselves.
    refused = client.get("/auth/two-factor/disable")
    assert "Staff must keep two-factor authentication on" in visible(refused)


def test_customers_are_not_forced_to_enrol_in_production(production, clock, password_hash):
    app, client = production
    assert register(client).status_code == 303
    assert client.get("/billing/", follow_redirects=False).status_code == 200
