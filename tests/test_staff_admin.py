"""Staff management at /admin/staff (invite, role, deactivate, never zero admins), the staff's
own account page, and staff sessions (12 hours, 30 minutes idle) against customers'."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from billing import accounts, audit, staff_accounts
from billing.accounts import FormError
from billing.db import one, rows, scalar
from conftest import PASSWORD, START, login, outbox, post, register, second_browser, visible


def staff(db, password_hash, email="ops@example.com", role="admin"):
    return accounts.create_staff(db, START, email=email, name=email.split("@")[0].title(),
                                 password_hash=password_hash, staff_role=role)


@pytest.fixture
def admin(client, db, password_hash):
    member = staff(db, password_hash)
    assert login(client, email="ops@example.com").status_code == 303
    return member


def test_the_list_shows_each_member_role_two_factor_last_login_and_status(client, db, admin, password_hash):
    staff(db, password_hash, "finans@example.com", "finance")
    page = visible(client.get("/admin/staff"))
    assert "ops@example.com" in page and "finans@example.com" in page
    assert "Administrator" in page and "Finance" in page
    assert "Off" in page and "Active" in page and "Never" in page  # finance never logged in
    assert "Staff" in visible(client.get("/admin/"))  # the section bar links here


def test_only_admins_manage_staff(client, app, db, admin, password_hash):
    staff(db, password_hash, "destek@example.com", "support")
    support = second_browser(app)
    login(support, email="destek@example.com")
    assert support.get("/admin/staff").status_code == 403
    refused = post(support, "/admin/staff/invite", {"email": "x@example.com", "role": "admin", "reason": "r"},
                   token_from="/admin/")
    assert refused.status_code == 403
    assert scalar(db, "SELECT count(*) FROM staff_invites") == 0
    assert "Staff" not in [a for a in re.findall(r">([^<]+)</a>", support.get("/admin/").text)]


def test_an_invite_is_emailed_once_used_and_makes_the_role(client, app, db, admin):
    sent = post(client, "/admin/staff/invite", {"email": "Yeni@Example.com", "role": "finance",
                                                "reason": "New finance hire"}, token_from="/admin/staff")
    assert sent.status_code == 303
    invite = one(db, "SELECT * FROM staff_invites")
    assert invite["email"] == "yeni@example.com" and invite["staff_role"] == "finance"
    (email,) = outbox(db, template="staff_invite")
    assert email["to_addr"] == "yeni@example.com" and "as finance" in email["body_text"]
    link = re.search(r"http://testserver(/auth/staff-invite/\S+)", email["body_text"]).group(1)
    assert link.split("/")[-1] not in invite["token_hash"]  # only a hash is kept
    entry = one(db, "SELECT * FROM audit_log WHERE action = 'staff.invite'")
    assert entry["reason"] == "New finance hire" and entry["staff_email"] == "ops@example.com"

    newcomer = second_browser(app)
    assert "Join the staff" in visible(newcomer.get(link))
    joined = post(newcomer, link, {"name": "Yeni Kişi", "password": "a fresh long passphrase"}, token_from=link)
    assert joined.status_code == 303 and joined.headers["location"] == "/admin/"
    user = accounts.user_by_email(db, "yeni@example.com")
    assert user["role"] == "staff" and user["staff_role"] == "finance"
    assert newcomer.get("/admin/").status_code == 200
    used_again = second_browser(app).get(link)
    assert used_again.status_code == 410


def test_an_invite_needs_a_reason_and_a_free_address(client, db, admin):
    no_reason = post(client, "/admin/staff/invite", {"email": "a@example.com", "role": "support", "reason": " "},
                     token_from="/admin/staff")
    assert no_reason.status_code == 422 and "Give a reason" in visible(no_reason)
    taken = post(client, "/admin/staff/invite", {"email": "ops@example.com", "role": "support", "reason": "x"},
                 token_from="/admin/staff")
    assert taken.status_code == 422 and "already has an account" in visible(taken)
    assert scalar(db, "SELECT count(*) FROM staff_invites") == 0


def test_an_invite_expires_after_seven_days(client, app, db, admin, clock):
    post(client, "/admin/staff/invite", {"email": "late@example.com", "role": "support", "reason": "hire"},
         token_from="/admin/staff")
    link = re.search(r"(/auth/staff-invite/\S+)", outbox(db, template="staff_invite")[0]["body_text"]).group(1)
    clock.advance(timedelta(days=7, seconds=1))
    assert second_browser(app).get(link).status_code == 410


def test_changing_a_role_is_audited_with_before_and_after(client, db, admin, password_hash):
    member = staff(db, password_hash, "destek@example.com", "support")
    done = post(client, f"/admin/staff/{member['id']}/role", {"role": "finance", "reason": "Moved to finance"},
                token_from="/admin/staff")
    assert done.status_code == 303
    assert accounts.user_by_id(db, member["id"])["staff_role"] == "finance"
    entry = audit.entry(db, scalar(db, "SELECT max(id) FROM audit_log"))
    assert entry["action"] == "staff.role_change" and entry["target"] == f"staff:{member['id']}"
    assert entry["before"] == {"role": "support"} and entry["after"] == {"role": "finance"}
    assert entry["reason"] == "Moved to finance"


def test_deactivating_ends_their_sessions_at_once_and_blocks_login_until_reactivated(client, app, db, admin,
                                                                                     password_hash):
    member = staff(db, password_hash, "destek@example.com", "support")
    theirs = second_browser(app)
    login(theirs, email="destek@example.com")
    assert theirs.get("/admin/").status_code == 200
    done = post(client, f"/admin/staff/{member['id']}/deactivate", {"reason": "Left the company"},
                token_from="/admin/staff")
    assert done.status_code == 303
    assert theirs.get("/admin/", follow_redirects=False).headers["location"].startswith("/auth/login")
    again = login(theirs, email="destek@example.com")
    assert again.status_code == 403 and "This account has been deactivated" in visible(again)
    wrong = login(theirs, email="destek@example.com", password="not the password")
    assert "deactivated" not in visible(wrong)  # only whoever knows the password learns it
    assert accounts.check_login(db, START, "destek@example.com", PASSWORD, "1.1.1.1") is None
    assert "Deactivated" in visible(client.get("/admin/staff"))
    post(client, f"/admin/staff/{member['id']}/reactivate", {"reason": "Came back"}, token_from="/admin/staff")
    assert login(second_browser(app), email="destek@example.com").status_code == 303
    actions = [r["action"] for r in rows(db, "SELECT action FROM audit_log ORDER BY id")]
    assert actions == ["staff.deactivate", "staff.reactivate"]


def test_the_last_active_admin_cannot_be_demoted_or_deactivated(client, app, db, admin, password_hash):
    demote = post(client, f"/admin/staff/{admin['id']}/role", {"role": "support", "reason": "oops"},
                  token_from="/admin/staff")
    assert demote.status_code == 422
    assert "There must always be at least one active administrator" in visible(demote)
    assert accounts.user_by_id(db, admin["id"])["staff_role"] == "admin"
    other = staff(db, password_hash, "second@example.com", "admin")
    # Deactivating the other admin leaves one: allowed. Then the remaining one cannot be demoted.
    assert post(client, f"/admin/staff/{other['id']}/deactivate", {"reason": "left"},
                token_from="/admin/staff").status_code == 303
    assert post(client, f"/admin/staff/{admin['id']}/role", {"role": "finance", "reason": "x"},
                token_from="/admin/staff").status_code == 422
    with pytest.raises(FormError, match="at least one active administrator"):
        staff_accounts.deactivate(db, START, other, admin["id"], "x")
    assert scalar(db, "SELECT count(*) FROM audit_log WHERE action = 'staff.role_change'") == 0


def test_no_one_deactivates_themselves(client, db, admin, password_hash):
    staff(db, password_hash, "second@example.com", "admin")
    answer = post(client, f"/admin/staff/{admin['id']}/deactivate", {"reason": "x"}, token_from="/admin/staff")
    assert answer.status_code == 422 and "cannot deactivate your own account" in visible(answer)


def test_staff_changes_ask_for_the_password_again_after_ten_minutes(client, db, admin, clock, password_hash):
    member = staff(db, password_hash, "destek@example.com", "support")
    clock.advance(timedelta(minutes=11))
    stale = post(client, f"/admin/staff/{member['id']}/role", {"role": "finance", "reason": "x"},
                 token_from="/admin/staff", headers={"referer": "http://testserver/admin/staff"})
    assert stale.status_code == 303 and stale.headers["location"] == "/auth/confirm?next=/admin/staff"
    assert accounts.user_by_id(db, member["id"])["staff_role"] == "support"


def test_create_staff_on_the_command_line_makes_an_admin(db, password_hash):
    assert staff(db, password_hash, "cli@example.com", "admin")["staff_role"] == "admin"


# --- the staff's own account page ------------------------------------------------------------------------


def test_the_header_name_links_to_my_account(client, admin):
    page = client.get("/admin/")
    assert 'href="/admin/account"' in page.text
    mine = visible(client.get("/admin/account"))
    assert "My account" in mine and "Administrator" in mine and "Two-factor authentication" in mine


def test_staff_change_their_name_language_and_password(client, app, db, admin):
    post(client, "/admin/account/name", {"name": "Operasyon"}, token_from="/admin/account")
    post(client, "/admin/account/language", {"locale": "tr"}, token_from="/admin/account")
    user = accounts.user_by_id(db, admin["id"])
    assert user["name"] == "Operasyon" and user["locale"] == "tr"
    other = second_browser(app)
    login(other, email="ops@example.com")
    changed = post(client, "/admin/account/password", {"current_password": PASSWORD, "new_password": "another long phrase",
                                                       "new_password_confirm": "another long phrase"},
                   token_from="/admin/account")
    assert changed.status_code == 303
    assert client.get("/admin/account").status_code == 200  # this session stays
    assert other.get("/admin/", follow_redirects=False).status_code == 303  # the other one ended


# --- sessions ---------------------------------------------------------------------------------------------


def test_a_staff_session_ends_after_thirty_idle_minutes(client, clock, admin):
    clock.advance(timedelta(minutes=29))
    assert client.get("/admin/").status_code == 200
    clock.advance(timedelta(minutes=29))  # 58 minutes in, but active 29 minutes ago
    assert client.get("/admin/").status_code == 200
    clock.advance(timedelta(minutes=30))
    gone = client.get("/admin/", follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"].startswith("/auth/login")


def test_a_staff_session_ends_after_twelve_hours_however_active(client, clock, admin):
    for _ in range(12 * 3 - 1):
        clock.advance(timedelta(minutes=20))
        assert client.get("/admin/").status_code == 200
    clock.advance(timedelta(minutes=20))  # 12 hours after logging in
    assert client.get("/admin/", follow_redirects=False).status_code == 303


def test_a_customer_session_keeps_the_old_rule(client, clock, db):
    register(client)
    clock.advance(timedelta(hours=13))
    assert client.get("/billing/").status_code == 200
    clock.advance(timedelta(days=13))
    assert client.get("/billing/").status_code == 200


def test_a_staff_session_made_before_the_rule_still_ends_at_twelve_hours(db, password_hash):
    member = staff(db, password_hash)
    token = accounts.create_session(db, START, member["id"])
    db.execute("UPDATE sessions SET expires_at = '2026-12-27T09:00:00Z'")  # as the 30-day rule made them
    assert accounts.session_user(db, START + timedelta(minutes=10), token) is not None
    for minutes in range(20, 12 * 60, 20):
        assert accounts.session_user(db, START + timedelta(minutes=minutes), token) is not None
    assert accounts.session_user(db, START + timedelta(hours=12), token) is None


def test_a_members_page_shows_their_account_and_only_the_actions_that_apply(client, db, admin, password_hash):
    member = staff(db, password_hash, "destek@example.com", "support")
    page = visible(client.get(f"/admin/staff/{member['id']}"))
    assert "destek@example.com" in page and "Support" in page and "Change role" in page and "Deactivate" in page
    assert "Reactivate" not in page and "Reset two-factor" not in page  # two-factor is off
    staff_accounts.deactivate(db, START, admin, member["id"], "left")
    page = visible(client.get(f"/admin/staff/{member['id']}"))
    assert "Reactivate" in page and "Change role" not in page
    assert client.get("/admin/staff/999").status_code == 404


def test_an_admin_resets_a_lost_two_factor_and_the_member_is_told(client, app, db, admin, password_hash):
    import pyotp

    from billing import two_factor

    member = staff(db, password_hash, "destek@example.com", "support")
    secret = two_factor.pending_secret(db, app.state.settings, member)
    two_factor.confirm_enrolment(db, START, app.state.settings, member, pyotp.TOTP(secret).at(START))
    done = post(client, f"/admin/staff/{member['id']}/two-factor-reset", {"reason": "Lost phone, verified by call"},
                token_from="/admin/staff")
    assert done.status_code == 303
    assert accounts.user_by_id(db, member["id"])["totp_enabled_at"] is None
    entry = audit.entry(db, scalar(db, "SELECT max(id) FROM audit_log"))
    assert entry["action"] == "staff.two_factor_reset" and entry["reason"] == "Lost phone, verified by call"
    subjects = [m["subject"] for m in outbox(db, to_addr="destek@example.com")]
    assert "Two-factor authentication was turned off for your PayTR Billing account" in subjects
