"""The operator's staff: invitations, roles, deactivation. Admins manage staff at /admin/staff.

The rule that holds everything up: at least one active admin always exists, or nobody could
manage staff, plans, keys or webhooks again without the command line. It is checked inside
the same BEGIN IMMEDIATE transaction as the change, so two admins demoting each other at the
same moment cannot both succeed. Every change writes its audit_log row (with the reason) in
that transaction too.
"""

from __future__ import annotations

from datetime import datetime

from sqlite_utils import Database

from billing import accounts, audit, clock, events, i18n, mail, roles
from billing.accounts import FormError, InvalidToken, _token, token_hash
from billing.db import one, rows, scalar, write
from billing.i18n import gettext as _
from billing.settings import Settings

INVITE_TTL = accounts.INVITE_TTL  # 7 days, like a colleague's invitation


def staff_list(db: Database) -> list[dict]:
    return rows(db, """SELECT u.id, u.name, u.email, u.staff_role, u.created_at, u.deactivated_at,
                              u.totp_enabled_at,
                              (SELECT max(s.created_at) FROM sessions s WHERE s.user_id = u.id) AS session_login,
                              (SELECT max(a.created_at) FROM login_attempts a
                                WHERE a.email = u.email AND a.kind = 'login' AND a.succeeded = 1) AS attempt_login,
                              (SELECT max(k.last_seen) FROM known_browsers k WHERE k.user_id = u.id) AS browser_login
                       FROM users u WHERE u.role = 'staff'
                       ORDER BY u.deactivated_at IS NOT NULL, u.name COLLATE NOCASE, u.id""")


def last_login(member: dict) -> str | None:
    """The newest trace of a login: a session, a recorded attempt (kept an hour), a browser seen."""
    found = [v for v in (member.get("session_login"), member.get("attempt_login"), member.get("browser_login")) if v]
    return max(found) if found else None


def pending_invites(db: Database, now: datetime) -> list[dict]:
    return rows(db, """SELECT i.*, u.name AS invited_by_name FROM staff_invites i
                       LEFT JOIN users u ON u.id = i.invited_by
                       WHERE i.accepted_at IS NULL AND i.revoked_at IS NULL AND i.expires_at > ?
                       ORDER BY i.id DESC""", [clock.iso(now)])


def check_role(role: str) -> str:
    if role not in roles.ROLES:
        raise FormError({"role": _("Choose a role: administrator, finance or support.")})
    return role


def _active_admins(db: Database, excluding: int | None = None) -> int:
    return scalar(db, "SELECT count(*) FROM users WHERE role = 'staff' AND coalesce(staff_role, 'admin') = 'admin' "
                      "AND deactivated_at IS NULL AND id != ?", [excluding or 0])


LAST_ADMIN = i18n.lazy_gettext("There must always be at least one active administrator. "
                               "Make someone else an administrator first.")


def invite(db: Database, now: datetime, settings: Settings, admin: dict, email: str, role: str, reason: str,
           ip: str | None = None) -> None:
    """Email a single-use link (7 days, only its hash kept) to join the staff with `role`."""
    role = check_role(role)
    reason = audit.check_reason(reason)
    token, digest = _token()
    with write(db):
        if accounts.user_by_email(db, email) is not None:
            raise FormError({"email": _("This address already has an account. Staff need an address of their own.")})
        db.execute("UPDATE staff_invites SET revoked_at = ? WHERE email = ? AND accepted_at IS NULL "
                   "AND revoked_at IS NULL", [clock.iso(now), email])  # a new invitation replaces the old link
        invite_id = db.execute(
            """INSERT INTO staff_invites (token_hash, email, staff_role, invited_by, created_at, expires_at)
               VALUES (?, ?, ?, ?, ?, ?)""",
            [digest, email, role, admin["id"], clock.iso(now), clock.iso(now + INVITE_TTL)]).lastrowid
        events.record(db, now, "staff.invited", f"{admin['email']} invited {email} to the staff as {role}",
                      actor=f"staff:{admin['id']}", email=email, role=role)
        audit.record(db, now, admin, "staff.invite", reason=reason, target=f"staff_invite:{invite_id}",
                     after={"email": email, "role": role}, ip=ip)
        # The invitee has no account, so no language yet: they get the inviting admin's.
        mail.enqueue(db, now, settings, template="staff_invite", to=email, dedupe_key=f"staff-invite:{invite_id}",
                     locale=i18n.normalize(admin.get("locale")) or i18n.current(),
                     context={"inviter": admin["name"], "role": role, "days": INVITE_TTL.days,
                              "invite_url": settings.url(f"/auth/staff-invite/{token}")})


def withdraw_invite(db: Database, now: datetime, admin: dict, invite_id: int, reason: str,
                    ip: str | None = None) -> None:
    reason = audit.check_reason(reason)
    with write(db):
        found = one(db, "SELECT * FROM staff_invites WHERE id = ? AND accepted_at IS NULL AND revoked_at IS NULL",
                    [invite_id])
        if found is None:
            raise LookupError("no such invitation")
        db.execute("UPDATE staff_invites SET revoked_at = ? WHERE id = ?", [clock.iso(now), invite_id])
        audit.record(db, now, admin, "staff.invite_withdrawn", reason=reason, target=f"staff_invite:{invite_id}",
                     before={"email": found["email"], "role": found["staff_role"]}, ip=ip)


def invite_for_token(db: Database, now: datetime, token: str) -> dict:
    row = one(db, "SELECT * FROM staff_invites WHERE token_hash = ?", [token_hash(token or "")])
    if row is None or row["accepted_at"] or row["revoked_at"] or now >= clock.parse(row["expires_at"]):
        raise InvalidToken(_("This invitation has expired, was withdrawn, or was already used."))
    return row


def accept_invite(db: Database, now: datetime, token: str, name: str, password_hash: str) -> dict:
    with write(db):
        inv = invite_for_token(db, now, token)
        user_id = accounts._insert_user(db, now, None, inv["email"], name, password_hash, "staff")
        db.execute("UPDATE users SET staff_role = ? WHERE id = ?", [inv["staff_role"], user_id])
        db.execute("UPDATE staff_invites SET accepted_at = ? WHERE id = ?", [clock.iso(now), inv["id"]])
        events.record(db, now, "staff.joined", f"{name} ({inv['email']}) joined the staff as {inv['staff_role']}",
                      actor=f"staff:{user_id}")
    return accounts.user_by_id(db, user_id)


def _member(db: Database, user_id: int) -> dict:
    member = one(db, "SELECT * FROM users WHERE id = ? AND role = 'staff'", [user_id])
    if member is None:
        raise LookupError("no such staff member")
    return member


def change_role(db: Database, now: datetime, admin: dict, user_id: int, role: str, reason: str,
                ip: str | None = None) -> dict:
    role = check_role(role)
    reason = audit.check_reason(reason)
    with write(db):
        member = _member(db, user_id)
        before = roles.role_of(member)
        if before == role:
            raise FormError({"role": _("%(name)s already has this role.", name=member["name"])})
        if before == roles.ADMIN and not member["deactivated_at"] and _active_admins(db, excluding=user_id) == 0:
            raise FormError({"role": str(LAST_ADMIN)})
        db.execute("UPDATE users SET staff_role = ? WHERE id = ?", [role, user_id])
        events.record(db, now, "staff.role_changed", f"{admin['email']} changed {member['email']} from {before} to {role}",
                      actor=f"staff:{admin['id']}")
        audit.record(db, now, admin, "staff.role_change", reason=reason, target=f"staff:{user_id}",
                     before={"role": before}, after={"role": role}, ip=ip)
    return member


def deactivate(db: Database, now: datetime, admin: dict, user_id: int, reason: str, ip: str | None = None) -> dict:
    """They cannot log in, and every session of theirs ends now (in this transaction)."""
    reason = audit.check_reason(reason)
    with write(db):
        member = _member(db, user_id)
        if member["deactivated_at"]:
            raise FormError({"reason": _("%(name)s is already deactivated.", name=member["name"])})
        if member["id"] == admin["id"]:
            raise FormError({"reason": _("You cannot deactivate your own account. Ask another administrator.")})
        if roles.role_of(member) == roles.ADMIN and _active_admins(db, excluding=user_id) == 0:
            raise FormError({"reason": str(LAST_ADMIN)})
        db.execute("UPDATE users SET deactivated_at = ? WHERE id = ?", [clock.iso(now), user_id])
        ended = db.execute("DELETE FROM sessions WHERE user_id = ?", [user_id]).rowcount
        events.record(db, now, "staff.deactivated", f"{admin['email']} deactivated {member['email']}",
                      actor=f"staff:{admin['id']}", sessions_ended=ended)
        audit.record(db, now, admin, "staff.deactivate", reason=reason, target=f"staff:{user_id}",
                     before={"active": True, "sessions": ended}, after={"active": False, "sessions": 0}, ip=ip)
    return member


def reactivate(db: Database, now: datetime, admin: dict, user_id: int, reason: str, ip: str | None = None) -> dict:
    reason = audit.check_reason(reason)
    with write(db):
        member = _member(db, user_id)
        if not member["deactivated_at"]:
            raise FormError({"reason": _("%(name)s is already active.", name=member["name"])})
        db.execute("UPDATE users SET deactivated_at = NULL WHERE id = ?", [user_id])
        events.record(db, now, "staff.reactivated", f"{admin['email']} reactivated {member['email']}",
                      actor=f"staff:{admin['id']}")
        audit.record(db, now, admin, "staff.reactivate", reason=reason, target=f"staff:{user_id}",
                     before={"active": False}, after={"active": True}, ip=ip)
    return member


def reset_two_factor(db: Database, now: datetime, settings: Settings, admin: dict, user_id: int, reason: str,
                     ip: str | None = None) -> dict:
    """A staff member lost both their authenticator and their recovery codes: an admin turns
    two-factor off for them (they are told by email, and must enrol again in production).
    Their sessions end, so the next login is a fresh one."""
    from billing import two_factor

    reason = audit.check_reason(reason)
    member = _member(db, user_id)
    if not member["totp_enabled_at"]:
        raise FormError({"reason": _("%(name)s has no two-factor authentication to reset.", name=member["name"])})
    if member["id"] == admin["id"]:
        raise FormError({"reason": _("Turn off your own two-factor authentication on your account page.")})
    with write(db):
        two_factor.disable(db, now, settings, member, ip=ip, user_agent=None, actor=f"staff:{admin['id']}")
        db.execute("DELETE FROM sessions WHERE user_id = ?", [user_id])
        audit.record(db, now, admin, "staff.two_factor_reset", reason=reason, target=f"staff:{user_id}",
                     before={"two_factor": True}, after={"two_factor": False}, ip=ip)
    return member
