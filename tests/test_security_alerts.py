"""Security alerts: to the account's own address, in its language and time zone, saying when,
from which IP and browser, and what to do; for password changes, email changes (to the old
address, with an undo link), two-factor on and off, recovery codes, and new browsers."""

from __future__ import annotations

import re
from datetime import timedelta

import pyotp
import pytest

from billing import accounts, security_alerts, two_factor
from billing.db import one, scalar
from conftest import PASSWORD, START, login, outbox, post, register, second_browser, visible

CHROME_LINUX = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36"
SAFARI_IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                 "Version/17.5 Mobile/15E148 Safari/604.1")


def alerts(db, to=None):
    found = [m for m in outbox(db, template="security_alert")]
    return [m for m in found if to is None or m["to_addr"] == to]


@pytest.fixture
def customer(client, db):
    client.headers["user-agent"] = CHROME_LINUX
    assert register(client).status_code == 303
    return accounts.user_by_email(db, "ayse@example.com")


@pytest.mark.parametrize("agent, expected", [
    (CHROME_LINUX, ("Chrome", "Linux")),
    (SAFARI_IPHONE, ("Safari", "iOS")),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 "
     "Safari/537.36 Edg/130.0.0.0", ("Edge", "Windows")),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:131.0) Gecko/20100101 Firefox/131.0", ("Firefox", "macOS")),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Mobile "
     "Safari/537.36", ("Chrome", "Android")),
    ("curl/8.5.0", (None, None)),
])
def test_user_agents_are_named_shortly(agent, expected):
    assert security_alerts.describe_agent(agent) == expected


def test_the_first_login_of_a_fresh_account_does_not_alert_but_a_new_browser_does(client, app, db, customer):
    assert alerts(db) == []  # signing up remembered this browser
    post(client, "/auth/logout", token_from="/billing/")
    assert login(client).status_code == 303  # the same browser: its device cookie is known
    assert alerts(db) == []
    phone = second_browser(app)
    phone.headers["user-agent"] = SAFARI_IPHONE
    assert login(phone).status_code == 303
    (alert,) = alerts(db)
    assert alert["to_addr"] == "ayse@example.com"
    assert alert["subject"] == "New login to your PayTR Billing account from a browser we haven't seen"
    text = alert["body_text"]
    assert "Safari on iOS" in text and "IP address: testclient" in text
    assert "27 November 2026" in text and "(Europe/Istanbul)" in text and "12:00" in text  # 09:00Z in Istanbul
    assert "If it wasn't, choose a new password now" in text and "/auth/forgot-password" in text
    assert scalar(db, "SELECT count(*) FROM known_browsers WHERE user_id = ?", [customer["id"]]) == 2
    # Only a hash of the device cookie is kept.
    cookie = phone.cookies.get("device")
    assert cookie and scalar(db, "SELECT count(*) FROM known_browsers WHERE fingerprint = ?", [cookie]) == 0


def test_an_account_without_known_browsers_is_not_alerted_on_its_first_login(db, settings, password_hash):
    staff = accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    from billing.db import write
    with write(db):
        assert not security_alerts.note_browser(db, START, settings, staff, "a" * 43, ip="1.2.3.4", user_agent="")
        assert security_alerts.note_browser(db, START, settings, staff, "b" * 43, ip="1.2.3.4", user_agent="")
        assert not security_alerts.note_browser(db, START, settings, staff, "b" * 43, ip="1.2.3.4", user_agent="")


def test_changing_the_password_alerts_in_the_accounts_language_and_time_zone(client, db, customer):
    db.execute("UPDATE users SET locale = 'tr'")
    db.execute("UPDATE companies SET timezone = 'America/New_York'")
    changed = post(client, "/billing/account/password",
                   {"current_password": PASSWORD, "new_password": "yepyeni uzun bir parola",
                    "new_password_confirm": "yepyeni uzun bir parola"}, token_from="/billing/account")
    assert changed.status_code == 303
    (alert,) = alerts(db)
    assert alert["locale"] == "tr" and alert["subject"] == "PayTR Billing şifreniz değiştirildi"
    assert "America/New_York" in alert["body_text"] and "04:00" in alert["body_text"]  # 09:00Z in New York
    assert "Linux üzerinde Chrome" in alert["body_text"]


def test_a_wrong_current_password_changes_nothing_and_sends_nothing(client, db, customer):
    wrong = post(client, "/billing/account/password",
                 {"current_password": "not my password", "new_password": "yepyeni uzun bir parola",
                  "new_password_confirm": "yepyeni uzun bir parola"}, token_from="/billing/account")
    assert wrong.status_code == 422 and "That password is not right." in visible(wrong)
    assert alerts(db) == []
    assert accounts.check_login(db, START, "ayse@example.com", PASSWORD, "1.1.1.1") is not None


def test_a_password_reset_alerts_too(client, db, customer):
    post(client, "/auth/logout", token_from="/billing/")
    post(client, "/auth/forgot-password", {"email": "ayse@example.com"}, token_from="/auth/forgot-password")
    (reset_mail,) = outbox(db, template="password_reset")
    link = re.search(r"http://testserver(/auth/reset/\S+)", reset_mail["body_text"]).group(1)
    post(client, link, {"password": "a brand new phrase", "password_confirm": "a brand new phrase"}, token_from=link)
    (alert,) = alerts(db)
    assert alert["subject"] == "Your PayTR Billing password was changed"
    assert "with a reset link" in alert["body_text"]


def test_changing_the_email_tells_the_old_address_and_the_undo_link_takes_it_back(client, app, db, customer):
    changed = post(client, "/billing/account/email", {"new_email": "yeni@example.com", "email_password": PASSWORD},
                   token_from="/billing/account")
    assert changed.status_code == 303
    assert accounts.user_by_id(db, customer["id"])["email"] == "yeni@example.com"
    (alert,) = alerts(db)
    assert alert["to_addr"] == "ayse@example.com"  # the OLD address
    assert "from ayse@example.com to yeni@example.com" in alert["body_text"]
    assert "undo the change within 7 days" in alert["body_text"]
    undo = re.search(r"http://testserver(/auth/undo-email/\S+)", alert["body_text"]).group(1)

    other = second_browser(app)
    page = other.get(undo)
    assert "Put my address back" in visible(page)
    done = post(other, undo, token_from=undo)
    assert done.status_code == 303 and done.headers["location"].startswith("/auth/reset/")
    assert accounts.user_by_id(db, customer["id"])["email"] == "ayse@example.com"
    assert scalar(db, "SELECT count(*) FROM sessions WHERE user_id = ?", [customer["id"]]) == 0
    assert client.get("/billing/", follow_redirects=False).status_code == 303  # the changer is logged out
    chosen = post(other, done.headers["location"], {"password": "mine again, longer", "password_confirm":
                                                    "mine again, longer"}, token_from=done.headers["location"])
    assert chosen.status_code == 303
    assert accounts.check_login(db, START, "ayse@example.com", "mine again, longer", "1.1.1.1") is not None
    assert other.get(undo).status_code == 410  # used once


def test_the_undo_link_lasts_seven_days(client, app, db, clock, customer):
    post(client, "/billing/account/email", {"new_email": "yeni@example.com", "email_password": PASSWORD},
         token_from="/billing/account")
    undo = re.search(r"(/auth/undo-email/\S+)", alerts(db)[0]["body_text"]).group(1)
    clock.advance(timedelta(days=7, minutes=1))
    assert second_browser(app).get(undo).status_code == 410


def test_an_email_change_needs_the_password_and_a_free_address(client, db, customer, password_hash):
    accounts.create_staff(db, START, email="taken@example.com", name="T", password_hash=password_hash)
    wrong = post(client, "/billing/account/email", {"new_email": "yeni@example.com", "email_password": "nope nope"},
                 token_from="/billing/account")
    assert wrong.status_code == 422 and "That password is not right." in visible(wrong)
    taken = post(client, "/billing/account/email", {"new_email": "taken@example.com", "email_password": PASSWORD},
                 token_from="/billing/account")
    assert taken.status_code == 422 and "Another account uses this address" in visible(taken)
    assert accounts.user_by_id(db, 1)["email"] == "ayse@example.com" and alerts(db) == []


def test_staff_change_their_email_with_the_same_alert(client, db, password_hash):
    accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    login(client, email="ops@example.com")
    post(client, "/admin/account/email", {"new_email": "ops2@example.com", "email_password": PASSWORD},
         token_from="/admin/account")
    (alert,) = alerts(db)
    assert alert["to_addr"] == "ops@example.com" and "/auth/undo-email/" in alert["body_text"]


def test_two_factor_on_off_and_recovery_codes_alert(db, settings, clock, password_hash):
    user = accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    secret = two_factor.pending_secret(db, settings, user)
    codes = two_factor.confirm_enrolment(db, START, settings, user, pyotp.TOTP(secret).at(START), ip="10.1.2.3",
                                         user_agent=CHROME_LINUX)
    assert two_factor.verify(db, START, settings, user, codes[0], ip="10.9.9.9", user_agent=SAFARI_IPHONE) == "recovery"
    two_factor.disable(db, START, settings, user, ip="10.1.2.3", user_agent=CHROME_LINUX)
    on, used, off = alerts(db)
    assert on["subject"] == "Two-factor authentication was turned on for your PayTR Billing account"
    assert "10.1.2.3" in on["body_text"] and "Chrome on Linux" in on["body_text"]
    assert "tell an administrator" in on["body_text"]  # staff are told to tell an admin
    assert used["subject"] == "A recovery code was used to log in to your PayTR Billing account"
    assert "9 recovery codes are left" in used["body_text"] and "10.9.9.9" in used["body_text"]
    assert off["subject"] == "Two-factor authentication was turned off for your PayTR Billing account"
    assert all(a["to_addr"] == "ops@example.com" for a in (on, used, off))


def test_alerts_render_in_turkish_with_the_html_part(db, settings, password_hash):
    user = accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    db.execute("UPDATE users SET locale = 'tr'")
    from billing.db import write
    with write(db):
        security_alerts.send(db, START, settings, user, "new_browser", ip="10.0.0.1", user_agent=SAFARI_IPHONE)
    (alert,) = alerts(db)
    assert alert["locale"] == "tr"
    assert "Tarayıcı: iOS üzerinde Safari" in alert["body_text"] and "IP adresi: 10.0.0.1" in alert["body_text"]
    assert "10.0.0.1" in alert["body_html"] and "<html lang=\"tr\">" in alert["body_html"]
    assert alert["subject"] == "PayTR Billing hesabınıza tanımadığımız bir tarayıcıdan giriş yapıldı"
