"""Domain rules for accounts, with a fixed clock."""

from datetime import timedelta

import pytest

from billing import accounts
from billing.accounts import FormError, InvalidToken
from billing.db import one, rows, scalar
from conftest import PASSWORD, START, make_company, outbox


def test_registration_creates_company_owner_trial_event_and_welcome(db, settings, password_hash):
    user = accounts.register(db, START, settings, company_name="Çiçek Ltd.", name="Ömer Çelik",
                             email="omer@example.com", password_hash=password_hash, plan="team")
    assert user["role"] == "owner"
    company = one(db, "SELECT * FROM companies WHERE id = ?", [user["company_id"]])
    assert company["name"] == "Çiçek Ltd."
    sub = one(db, "SELECT * FROM subscriptions WHERE company_id = ?", [company["id"]])
    assert (sub["status"], sub["plan"], sub["trial_ends_at"]) == ("trialing", "team", "2026-12-11T09:00:00Z")
    event = one(db, "SELECT * FROM events WHERE company_id = ?", [company["id"]])
    assert event["kind"] == "company.registered" and event["actor"] == f"user:{user['id']}"
    [mail] = outbox(db, template="welcome")
    assert mail["to_addr"] == "omer@example.com"
    assert "14-day trial" in mail["subject"]
    assert "11 December 2026" in mail["body_text"] and "Hello Ömer," in mail["body_html"]  # greeted by first name


def test_email_is_unique_case_insensitive_and_trimmed(db, settings, password_hash):
    make_company(db, settings, START, password_hash, email="ayse@example.com")
    assert accounts.normalize_email("  Ayse@Example.COM ") == "ayse@example.com"
    with pytest.raises(FormError) as err:
        make_company(db, settings, START, password_hash, email=accounts.normalize_email(" AYSE@example.com"))
    assert "already exists" in err.value.errors["email"]
    assert scalar(db, "SELECT count(*) FROM companies") == 1  # the failed attempt left nothing behind


@pytest.mark.parametrize("password, message", [
    ("short", "at least 8"),
    ("", "at least 8"),
    ("x" * 1025, "at most 1024"),
    ("password123", "too common"),
    ("Galatasaray", "too common"),
    ("QWERTY123", "too common"),
    ("ayse@example.com", "must not be your email"),
])
def test_password_rules(password, message):
    with pytest.raises(FormError, match=message):
        accounts.check_password(password, "ayse@example.com")


def test_long_passwords_are_not_truncated():
    long_password = "çok uzun bir parola " * 10  # 200 characters
    assert accounts.check_password(long_password) == long_password
    hashed = accounts.hash_password(long_password)
    assert hashed.startswith("$argon2id$")
    assert accounts.password_matches(hashed, long_password)
    assert not accounts.password_matches(hashed, long_password[:-1])
    assert not accounts.password_matches(hashed, long_password[:128])


@pytest.mark.parametrize("value", ["", "   ", "no-at-sign", "a@b", "a b@c.com", "x" * 250 + "@example.com"])
def test_bad_emails_are_refused(value):
    with pytest.raises(FormError):
        accounts.check_email(value)


def test_failed_logins_slow_down_then_lock_then_let_the_real_user_in(db, settings, password_hash):
    make_company(db, settings, START, password_hash, email="ayse@example.com")
    now = START
    for attempt in range(1, accounts.ACCOUNT_LOCK_AFTER + 1):
        assert accounts.check_login(db, now, "ayse@example.com", "wrong password!", "1.2.3.4") is None
        state = accounts.throttle(db, now, "ayse@example.com", "1.2.3.4")
        if attempt < accounts.SLOW_AFTER:
            assert state.delay == 0 and not state.locked
        elif attempt < accounts.ACCOUNT_LOCK_AFTER:
            assert state.delay > 0 and not state.locked
        now += timedelta(seconds=10)
    state = accounts.throttle(db, now, "ayse@example.com", "5.6.7.8")  # another address, same account
    assert state.locked and "Too many failed login attempts" in state.message
    assert "15 minutes" in state.message or "14 minutes" in state.message
    later = now + accounts.THROTTLE_WINDOW
    assert not accounts.throttle(db, later, "ayse@example.com", "1.2.3.4").locked
    assert accounts.check_login(db, later, "ayse@example.com", PASSWORD, "1.2.3.4") is not None
    assert accounts.throttle(db, later, "ayse@example.com", "1.2.3.4").delay == 0


def test_many_accounts_from_one_address_lock_that_address(db, settings):
    now = START
    for i in range(accounts.IP_LOCK_AFTER):
        accounts.check_login(db, now, f"nobody{i}@example.com", "guess guess", "9.9.9.9")
    assert accounts.throttle(db, now, "someone-else@example.com", "9.9.9.9").locked
    assert not accounts.throttle(db, now, "someone-else@example.com", "8.8.8.8").locked


def test_sessions_expire_when_idle_and_at_most_after_thirty_days(db, settings, password_hash):
    user = make_company(db, settings, START, password_hash)
    token = accounts.create_session(db, START, user["id"])
    assert accounts.session_user(db, START + timedelta(days=13), token)["id"] == user["id"]
    assert accounts.session_user(db, START + timedelta(days=13 + 14), token) is None
    token = accounts.create_session(db, START, user["id"])
    for day in range(1, 30):  # used every day, still ends at 30 days
        assert accounts.session_user(db, START + timedelta(days=day), token) is not None
    assert accounts.session_user(db, START + timedelta(days=30), token) is None
    assert accounts.session_user(db, START, "forged-token") is None


def test_reset_link_is_single_use_expires_and_ends_sessions(db, settings, password_hash):
    user = make_company(db, settings, START, password_hash, email="reset@example.com")
    session = accounts.create_session(db, START, user["id"])
    accounts.request_password_reset(db, START, settings, "RESET@example.com ")
    [mail] = outbox(db, template="password_reset")
    token = mail["body_text"].split("/auth/reset/")[1].split()[0]
    assert "20 minutes" in mail["body_text"]
    accounts.reset_password(db, START + timedelta(minutes=5), token, accounts.hash_password("a brand new secret"))
    assert accounts.session_user(db, START + timedelta(minutes=5), session) is None
    assert accounts.check_login(db, START + timedelta(minutes=6), "reset@example.com", "a brand new secret", "ip")
    with pytest.raises(InvalidToken):
        accounts.reset_password(db, START + timedelta(minutes=7), token, password_hash)

    accounts.request_password_reset(db, START, settings, "reset@example.com")
    token2 = outbox(db, template="password_reset")[-1]["body_text"].split("/auth/reset/")[1].split()[0]
    with pytest.raises(InvalidToken):
        accounts.reset_token_user(db, START + timedelta(minutes=20), token2)


def test_reset_for_unknown_email_sends_nothing(db, settings):
    accounts.request_password_reset(db, START, settings, "ghost@example.com")
    assert outbox(db, template="password_reset") == []


def test_reset_requests_are_capped_per_hour(db, settings, password_hash):
    make_company(db, settings, START, password_hash, email="spam@example.com")
    for i in range(accounts.RESETS_PER_HOUR + 3):
        accounts.request_password_reset(db, START + timedelta(minutes=i), settings, "spam@example.com")
    assert len(outbox(db, template="password_reset")) == accounts.RESETS_PER_HOUR


def test_invite_accept_and_roles(db, settings, password_hash):
    owner = make_company(db, settings, START, password_hash, email="boss@example.com")
    accounts.invite(db, START, settings, owner, "Colleague@Example.com".lower())
    [mail] = outbox(db, template="invite")
    token = mail["body_text"].split("/auth/invite/")[1].split()[0]
    member = accounts.accept_invite(db, START + timedelta(days=1), token, "Can Demir", password_hash)
    assert (member["company_id"], member["role"]) == (owner["company_id"], "member")
    with pytest.raises(InvalidToken):
        accounts.accept_invite(db, START + timedelta(days=1), token, "Again", password_hash)
    with pytest.raises(PermissionError):
        accounts.invite(db, START, settings, member, "x@example.com")
    with pytest.raises(FormError):
        accounts.invite(db, START, settings, owner, "colleague@example.com")  # already a user


def test_invites_expire_after_seven_days(db, settings, password_hash):
    owner = make_company(db, settings, START, password_hash)
    accounts.invite(db, START, settings, owner, "late@example.com")
    token = outbox(db, template="invite")[0]["body_text"].split("/auth/invite/")[1].split()[0]
    with pytest.raises(InvalidToken):
        accounts.invite_for_token(db, START + timedelta(days=7), token)


def test_staff_are_not_company_members(db, password_hash):
    staff = accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    assert staff["role"] == "staff" and staff["company_id"] is None
    assert rows(db, "SELECT * FROM companies") == []
