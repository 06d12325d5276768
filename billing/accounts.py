"""Companies, users, passwords, sessions, password resets, invites, login throttling.

Passwords are hashed with argon2id before any transaction opens (hashing is
deliberately slow); the write itself is short. Tokens that travel in links or
cookies are random, and only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import sqlite3
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from email_validator import EmailNotValidError, validate_email
from sqlite_utils import Database

from billing import clock, events, i18n, mail, plans, subscriptions
from billing.db import one, rows, scalar, write
from billing.settings import Settings
from billing.i18n import gettext as _, ngettext
from billing.text import UnsafeText, clean as clean_text


def N_(message: str) -> str:
    """Marks a module constant for the catalog; it is translated where it is shown (`_(CONSTANT)`)."""
    return message


PASSWORD_MIN = 8
PASSWORD_MAX = 1024  # long passphrases are welcome; argon2 hashes all of it, no truncation
NAME_MAX = 100
COMPANY_MAX = 200
EMAIL_MAX = 254

SESSION_IDLE = timedelta(days=14)
SESSION_MAX = timedelta(days=30)
SESSION_TOUCH = timedelta(minutes=5)  # last_seen_at is written at most this often (a customer's idle is 14 days)
# Staff can refund and change prices: their sessions are short. Idle is measured from last_seen_at,
# which lags the last request by up to STAFF_SESSION_TOUCH, so that is kept small: a staff session
# ends between 29.75 and 30 minutes after its last request, never later.
STAFF_SESSION_IDLE = timedelta(minutes=30)
STAFF_SESSION_MAX = timedelta(hours=12)
STAFF_SESSION_TOUCH = timedelta(seconds=15)
EMAIL_UNDO_TTL = timedelta(days=7)
RESET_TTL = timedelta(minutes=20)
RESETS_PER_HOUR = 5
INVITE_TTL = timedelta(days=7)

THROTTLE_WINDOW = timedelta(minutes=15)
SLOW_AFTER = 3  # failures before each further try is slowed down
ACCOUNT_LOCK_AFTER = 5  # failures for one account within the window
IP_LOCK_AFTER = 20  # failures from one address within the window (sign-ups and invites to taken addresses too)
RESETS_PER_IP_HOUR = 20  # reset requests from one address; beyond, the same answer and no email
ATTEMPTS_KEPT = timedelta(hours=1)  # the longest window any count looks back over

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


class FormError(Exception):
    """Bad input; `errors` maps a form field to a message for the person typing."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


class InvalidToken(Exception):
    """A reset or invite link that is unknown, expired or already used."""


class Deactivated(Exception):
    """The password was right, but an admin deactivated this staff account."""


@dataclass(frozen=True)
class Throttle:
    delay: float  # seconds to wait before checking the password
    locked_for: timedelta | None  # refuse outright for this long
    attempt_id: int | None = None  # the attempt `start_login` recorded (as failed until it succeeds)

    @property
    def locked(self) -> bool:
        return self.locked_for is not None

    @property
    def message(self) -> str:
        minutes = max(1, math.ceil(self.locked_for.total_seconds() / 60)) if self.locked_for else 0
        return ngettext("Too many failed login attempts. For your security, try again in %(num)d minute, "
                        "or reset your password.",
                        "Too many failed login attempts. For your security, try again in %(num)d minutes, "
                        "or reset your password.", minutes)


class TooManyAttempts(Exception):
    """This client address made too many failed attempts (logins, sign-ups or invites to
    addresses that have an account): refuse until the window passes."""

    def __init__(self, throttle: Throttle):
        super().__init__(throttle.message)
        self.throttle = throttle

    @property
    def message(self) -> str:
        minutes = max(1, math.ceil(self.throttle.locked_for.total_seconds() / 60))
        return ngettext("Too many attempts from your network. For your security, try again in %(num)d minute.",
                        "Too many attempts from your network. For your security, try again in %(num)d minutes.",
                        minutes)


# --- input ------------------------------------------------------------------------


def _parse_email(text: str):
    # The library's form is what we store: NFC, the domain in Unicode (örnek.com.tr, even when
    # typed as xn--rnek-4qa.com.tr). Lower-cased first, as the users table requires.
    return validate_email(text.strip().lower(), check_deliverability=False, allow_smtputf8=True)


def normalize_email(value: str) -> str:
    """The stored form of an address, for lookups (login, reset): the same one `check_email`
    gives. Something that is not an address is only trimmed and lower-cased, and finds no one."""
    text = (value or "").strip().lower()
    try:
        return _parse_email(text).normalized.lower()
    except EmailNotValidError:
        return text


def check_email(value: str, field: str = "email", *, smtputf8: bool = False) -> str:
    """A valid address in its stored form, or FormError. `smtputf8`: the mail path (settings'
    `smtp_smtputf8`) can deliver to a part before the @ that is not ASCII; without it such an
    address would be accepted here and could never be mailed, so it is refused."""
    text = (value or "").strip()
    if not text:
        raise FormError({field: _("Enter your email address.")})
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        raise FormError({field: _("An email address cannot contain control characters. Type it again.")})
    if "," in text or ";" in text:
        raise FormError({field: _("Enter one email address, without commas or semicolons.")})
    try:
        parsed = _parse_email(text)
    except EmailNotValidError as exc:
        message = _("Enter a valid email address, like name@company.com.")
        if i18n.current() == "en":  # the library explains what is wrong, in English only
            message = f"{message} {exc}"
        raise FormError({field: message}) from None
    email = parsed.normalized.lower()
    if len(email) > EMAIL_MAX:
        raise FormError({field: _("An email address can be at most %(max)d characters.", max=EMAIL_MAX)})
    if parsed.ascii_email is None and not smtputf8:
        # An IDNA domain is fine (it travels as xn--...); only the part before the @ needs SMTPUTF8.
        local = email.rpartition("@")[0]
        odd = "".join(dict.fromkeys(ch for ch in local if not ch.isascii()))
        raise FormError({field: _("This address has characters our mail server cannot deliver to "
                                  "(%(characters)s); use another address.", characters=odd)})
    return email


# What `check_text` says for each label its callers use, as whole sentences (Turkish puts the
# name of the field in a different case in each sentence, so a label cannot be slotted in).
TEXT_MESSAGES = {
    "your company's name": (N_("Enter your company's name."),
                            N_("Your company's name must be at most %(max)d characters.")),
    "your name": (N_("Enter your name."), N_("Your name must be at most %(max)d characters.")),
    "the company's name": (N_("Enter the company's name."),
                           N_("The company's name must be at most %(max)d characters.")),
    "the owner's name": (N_("Enter the owner's name."), N_("The owner's name must be at most %(max)d characters.")),
    "a name for the key": (N_("Enter a name for the key."),
                           N_("A name for the key must be at most %(max)d characters.")),
}


def check_text(value: str, field: str, label: str, maximum: int) -> str:
    """Free text a person typed (a name): cleaned, present, not too long. `label` names it in the
    messages ("your name"); the labels of TEXT_MESSAGES have whole translated sentences."""
    try:
        cleaned = clean_text(value)
    except UnsafeText as exc:
        raise FormError({field: str(exc)}) from None
    missing, too_long = TEXT_MESSAGES.get(label, (None, None))
    if not cleaned:
        raise FormError({field: _(missing) if missing else _("Enter %(label)s.", label=label)})
    if len(cleaned) > maximum:
        raise FormError({field: _(too_long, max=maximum) if too_long else
                         _("%(label)s: at most %(max)d characters.", label=label, max=maximum)})
    return cleaned


@cache
def common_passwords() -> frozenset[str]:
    path = Path(__file__).with_name("common_passwords.txt")
    return frozenset(
        line.strip().casefold()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    )


def check_password(password: str, email: str = "", field: str = "password") -> str:
    password = password or ""
    if len(password) < PASSWORD_MIN:
        raise FormError({field: _("Use at least %(min)d characters.", min=PASSWORD_MIN)})
    if len(password) > PASSWORD_MAX:
        raise FormError({field: _("Use at most %(max)d characters.", max=PASSWORD_MAX)})
    if password.casefold() in common_passwords():
        raise FormError({field: _("This password is too common and easy to guess. Choose another.")})
    if email and password.casefold() == email.casefold():
        raise FormError({field: _("Your password must not be your email address.")})
    return password


def collect(*checks) -> list:
    """Run several field checks and raise one FormError naming every bad field."""
    errors: dict[str, str] = {}
    values = []
    for check in checks:
        try:
            values.append(check())
        except FormError as exc:
            errors.update(exc.errors)
            values.append(None)
    if errors:
        raise FormError(errors)
    return values


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


# Verifying against this when the email is unknown keeps both answers equally slow.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def _token() -> tuple[str, str]:
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- registration -------------------------------------------------------------------


def register(
    db: Database,
    now: datetime,
    settings: Settings,
    *,
    company_name: str,
    name: str,
    email: str,
    password_hash: str,
    plan: str | None = None,
    ip: str | None = None,
    locale: str | None = None,
) -> dict:
    """Create the company, its owner and a trial, record it and queue the welcome email
    (in `locale`, the language the owner signed up in, which is also saved as theirs).

    From the web (`ip` given), an address that already has an account counts against the
    client's address like a failed login, so the form cannot be used to list who has an
    account; TooManyAttempts once that address is locked."""
    with write(db):
        if plans.subscribable(db, plan) is None:
            plan = plans.default_code(db)
        taken = _address_taken(db, now, email, ip, "register")
        if not taken:
            user_id = create_company(db, now, settings, company_name, name, email, password_hash, plan,
                                     locale=locale)
    if taken:  # raised after the commit: the attempt must stay recorded
        raise FormError({"email": _(ADDRESS_TAKEN)})
    return user_by_id(db, user_id)


ADDRESS_TAKEN = N_("An account with this email already exists. Log in or reset your password.")


def _address_taken(db: Database, now: datetime, email: str, ip: str | None, kind: str) -> bool:
    """Inside a write: does `email` have an account? Counted as a failed attempt from `ip`
    when it does; TooManyAttempts (nothing revealed) when `ip` is already locked."""
    if ip is not None:
        state = _ip_throttle(db, now, ip)
        if state.locked:
            raise TooManyAttempts(state)
    if user_by_email(db, email) is None:
        return False
    if ip is not None:
        _record_attempt(db, now, email, ip, kind)
    return True


# The password_hash of an owner made through the API: not an argon2 hash, so no password ever
# matches it (`password_matches` answers False); the reset email or a portal link lets them in.
NO_PASSWORD = "!none"


def create_company(db, now, settings, company_name, name, email, password_hash, plan, *, timezone=None,
                   external_id=None, locale=None, actor=None) -> int:
    """Inside a write: the company, its owner, the trial, the audit event and the welcome email,
    as web sign-up and the API's customer create both make them. Returns the owner's id."""
    company_id = db.execute(
        "INSERT INTO companies (name, timezone, created_at, external_id) VALUES (?, ?, ?, ?)",
        [company_name, timezone or settings.timezone, clock.iso(now), external_id],
    ).lastrowid
    user_id = _insert_user(db, now, company_id, email, name, password_hash, "owner")
    if locale:
        db.execute("UPDATE users SET locale = ? WHERE id = ?", [locale, user_id])
    chosen = plans.get(db, plan)
    subscriptions.start_trial(db, now, company_id, plan, chosen.trial_days)  # each plan says how long
    sub = subscriptions.for_company(db, company_id)
    events.record(db, now, "company.registered", f"{name} registered {company_name}; trial started",
                  company_id=company_id, actor=actor or f"user:{user_id}", plan=plan,
                  trial_ends_at=sub["trial_ends_at"])
    needs_password = password_hash == NO_PASSWORD
    mail.enqueue(db, now, settings, template="welcome", to=email, dedupe_key=f"welcome:{user_id}",
                 company_id=company_id,
                 context={"name": name, "company": company_name, "plan": chosen,
                          "trial_days": chosen.trial_days, "trial_ends_at": sub["trial_ends_at"],
                          "dashboard_url": settings.url("/billing/"),
                          "set_password_url": settings.url("/auth/forgot-password") if needs_password else None})
    return user_id


def _insert_user(db, now, company_id, email, name, password_hash, role) -> int:
    try:
        return db.execute(
            """INSERT INTO users (company_id, email, name, password_hash, role, created_at, password_changed_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            [company_id, email, name, password_hash, role, clock.iso(now), clock.iso(now)],
        ).lastrowid
    except sqlite3.IntegrityError:
        raise FormError({"email": _(ADDRESS_TAKEN)}) from None


def create_staff(db: Database, now: datetime, *, email: str, name: str, password_hash: str,
                 staff_role: str = "admin", actor: str = "cli") -> dict:
    """A staff account; `create-staff` on the command line makes an admin."""
    with write(db):
        user_id = _insert_user(db, now, None, email, name, password_hash, "staff")
        db.execute("UPDATE users SET staff_role = ? WHERE id = ?", [staff_role, user_id])
        events.record(db, now, "staff.created", f"Staff account {email} created ({staff_role})", actor=actor)
    return user_by_id(db, user_id)


def set_name(db: Database, now: datetime, user: dict, name: str) -> None:
    with write(db):
        db.execute("UPDATE users SET name = ? WHERE id = ?", [name, user["id"]])
        events.record(db, now, "user.renamed", f"{user['email']} is now called {name}",
                      company_id=user.get("company_id"), actor=events.user_actor(user))


def set_locale(db: Database, user_id: int, locale: str) -> None:
    """The user's language: pages when they are logged in, and every email to them."""
    from billing import i18n

    chosen = i18n.normalize(locale)
    if chosen is None:
        raise FormError({"locale": _("Choose English or Türkçe.")})
    with write(db):
        db.conn.execute("UPDATE users SET locale = ? WHERE id = ?", [chosen, user_id])


def user_by_email(db: Database, email: str) -> dict | None:
    return one(db, "SELECT * FROM users WHERE email = ?", [normalize_email(email)])


def user_by_id(db: Database, user_id: int) -> dict | None:
    return one(db, "SELECT * FROM users WHERE id = ?", [user_id])


def company(db: Database, company_id: int) -> dict | None:
    return one(db, "SELECT * FROM companies WHERE id = ?", [company_id])


# --- login and throttling --------------------------------------------------------------


def throttle(db: Database, now: datetime, email: str, ip: str, kind: str = "login") -> Throttle:
    """Where a login for `email` from `ip` stands: how long to slow it down, or to refuse it.
    A read; `start_login` decides and counts in one transaction. `kind` 'two_factor' counts
    wrong codes apart from wrong passwords: a right password must not wipe the count of codes."""
    since = clock.iso(now - THROTTLE_WINDOW)
    email = normalize_email(email)
    last_success = scalar(db, "SELECT max(created_at) FROM login_attempts WHERE email = ? AND kind = ? "
                              "AND succeeded = 1", [email, kind]) or ""
    account_failures = rows(
        db,
        """SELECT created_at FROM login_attempts
           WHERE email = ? AND kind = ? AND succeeded = 0 AND created_at >= ? AND created_at > ?
           ORDER BY created_at DESC""",
        [email, kind, since, last_success],
    )
    ip_failures = _ip_failures(db, now, ip)
    locked_until = max(filter(None, (_locked_until(account_failures, ACCOUNT_LOCK_AFTER),
                                     _locked_until(ip_failures, IP_LOCK_AFTER))), default=None)
    if locked_until and locked_until > now:
        return Throttle(delay=0, locked_for=locked_until - now)
    failures = max(len(account_failures), len(ip_failures) // 4)
    delay = 0.0 if failures < SLOW_AFTER else float(min(2 ** (failures - SLOW_AFTER), 4))
    return Throttle(delay=delay, locked_for=None)


def _ip_failures(db: Database, now: datetime, ip: str) -> list[dict]:
    """Failed attempts of every kind from one client address within the window, newest first."""
    return rows(db, "SELECT created_at FROM login_attempts WHERE ip = ? AND succeeded = 0 AND created_at >= ? "
                    "ORDER BY created_at DESC LIMIT ?", [ip, clock.iso(now - THROTTLE_WINDOW), IP_LOCK_AFTER])


def _locked_until(failures: list[dict], limit: int) -> datetime | None:
    if len(failures) < limit:
        return None
    return clock.parse(failures[limit - 1]["created_at"]) + THROTTLE_WINDOW


def _ip_throttle(db: Database, now: datetime, ip: str) -> Throttle:
    until = _locked_until(_ip_failures(db, now, ip), IP_LOCK_AFTER)
    return Throttle(delay=0, locked_for=until - now if until and until > now else None)


def _record_attempt(db: Database, now: datetime, email: str, ip: str, kind: str, succeeded: bool = False) -> int:
    return db.execute("INSERT INTO login_attempts (email, ip, succeeded, created_at, kind) VALUES (?, ?, ?, ?, ?)",
                      [email[:EMAIL_MAX], ip, int(succeeded), clock.iso(now), kind]).lastrowid


def start_login(db: Database, now: datetime, email: str, ip: str, kind: str = "login") -> Throttle:
    """May this try check a password (or, `kind` 'two_factor', a second-factor code)? Decided and
    counted in one BEGIN IMMEDIATE transaction, the try recorded as failed until it is found
    right: so a burst of parallel guesses checks at most ACCOUNT_LOCK_AFTER, not one per request."""
    email = normalize_email(email)
    with write(db):
        state = throttle(db, now, email, ip, kind)
        if state.locked:
            return state
        attempt_id = _record_attempt(db, now, email, ip, kind)
    return Throttle(delay=state.delay, locked_for=None, attempt_id=attempt_id)


def attempt_succeeded(db: Database, attempt: Throttle) -> None:
    """A try `start_login` let through was right (a second-factor code): it no longer counts."""
    with write(db):
        db.execute("UPDATE login_attempts SET succeeded = 1 WHERE id = ?", [attempt.attempt_id])


def finish_login(db: Database, now: datetime, attempt: Throttle, email: str, password: str) -> dict | None:
    """Check the password of a try `start_login` let through: the user when it matches, else None."""
    if attempt.attempt_id is None:
        raise ValueError("this login try was refused (or never started); no password may be checked")
    user = user_by_email(db, normalize_email(email))
    # Verified against a dummy hash when the email is unknown: both answers take as long.
    ok = password_matches(user["password_hash"] if user else None, password) and user is not None
    if ok and user.get("deactivated_at"):
        raise Deactivated  # told only to whoever knows the password; counted as a failed try
    with write(db):
        if ok:
            db.execute("UPDATE login_attempts SET succeeded = 1 WHERE id = ?", [attempt.attempt_id])
            if _hasher.check_needs_rehash(user["password_hash"]):
                db.execute("UPDATE users SET password_hash = ? WHERE id = ?", [_hasher.hash(password), user["id"]])
        # Old attempts are only needed for their window; keep the table small.
        db.execute("DELETE FROM login_attempts WHERE created_at < ?", [clock.iso(now - ATTEMPTS_KEPT)])
    return user if ok else None


def check_login(db: Database, now: datetime, email: str, password: str, ip: str) -> dict | None:
    """`start_login` then `finish_login` without the slow-down: the user, or None when the
    password is wrong or the try was refused."""
    attempt = start_login(db, now, email, ip)
    if attempt.locked:
        return None
    try:
        return finish_login(db, now, attempt, email, password)
    except Deactivated:
        return None


# --- sessions ----------------------------------------------------------------------------


def _session_limits(role: str | None) -> tuple[timedelta, timedelta, timedelta]:
    """(max, idle, touch) for a session of a user with this role."""
    if role == "staff":
        return STAFF_SESSION_MAX, STAFF_SESSION_IDLE, STAFF_SESSION_TOUCH
    return SESSION_MAX, SESSION_IDLE, SESSION_TOUCH


def create_session(db: Database, now: datetime, user_id: int, ip: str = "", user_agent: str = "") -> str:
    token, digest = _token()
    with write(db):
        longest, _idle, _touch = _session_limits(scalar(db, "SELECT role FROM users WHERE id = ?", [user_id]))
        db.execute(
            """INSERT INTO sessions (id, user_id, created_at, last_seen_at, expires_at, ip, user_agent,
                                     authenticated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            [digest, user_id, clock.iso(now), clock.iso(now), clock.iso(now + longest), ip, user_agent[:300],
             clock.iso(now)],
        )
    return token


def session_user(db: Database, now: datetime, token: str | None) -> dict | None:
    """The logged-in user for a session token, or None if it ended or expired."""
    if not token or not isinstance(token, str):
        return None
    row = one(
        db,
        """SELECT s.id AS session_id, s.created_at AS session_created_at, s.last_seen_at, s.expires_at,
                  s.authenticated_at, u.*,
                  sub.status AS subscription_status, sub.current_period_end AS subscription_period_end
           FROM sessions s JOIN users u ON u.id = s.user_id
           LEFT JOIN subscriptions sub ON sub.company_id = u.company_id
           WHERE s.id = ?""",
        [token_hash(token)],
    )
    if row is None:
        return None
    last_seen = clock.parse(row["last_seen_at"])
    longest, idle, touch = _session_limits(row["role"])
    # The age is checked from created_at too: a staff session made before the 12-hour rule
    # (expires_at 30 days out) still ends at 12 hours.
    if (now >= clock.parse(row["expires_at"]) or now - clock.parse(row["session_created_at"]) >= longest
            or now - last_seen >= idle or row["deactivated_at"]):
        with write(db):
            db.execute("DELETE FROM sessions WHERE id = ?", [row["session_id"]])
        return None
    if now - last_seen >= touch:
        with write(db):
            db.execute("UPDATE sessions SET last_seen_at = ? WHERE id = ?", [clock.iso(now), row["session_id"]])
    return row


def reauthenticate(db: Database, now: datetime, token: str, user: dict, password: str) -> bool:
    """The person behind a session gave their password again: sensitive actions open for 10 minutes."""
    if not password_matches(user.get("password_hash"), password):
        return False
    mark_authenticated(db, now, token)
    return True


def mark_authenticated(db: Database, now: datetime, token: str) -> None:
    with write(db):
        db.execute("UPDATE sessions SET authenticated_at = ? WHERE id = ?", [clock.iso(now), token_hash(token)])


def end_session(db: Database, token: str | None) -> None:
    if token:
        with write(db):
            db.execute("DELETE FROM sessions WHERE id = ?", [token_hash(token)])


# --- password reset -------------------------------------------------------------------------


def request_password_reset(db: Database, now: datetime, settings: Settings, email: str,
                           ip: str | None = None) -> None:
    """Email a single-use link if the account exists. The caller's answer is the same either way,
    and so is the work before it: a token, one write transaction with the same queries, the
    email only queued (the sender sends it later), so the time taken does not tell either."""
    token, digest = _token()
    with write(db):
        user = user_by_email(db, email)
        recent = scalar(db, "SELECT count(*) FROM password_resets WHERE user_id = ? AND created_at > ?",
                        [user["id"] if user else None, clock.iso(now - timedelta(hours=1))])
        from_ip = 0
        if ip is not None:
            from_ip = scalar(db, "SELECT count(*) FROM login_attempts WHERE ip = ? AND kind = 'reset' "
                                 "AND created_at > ?", [ip, clock.iso(now - timedelta(hours=1))])
            _record_attempt(db, now, email, ip, "reset", succeeded=True)
        if user is None or recent >= RESETS_PER_HOUR or from_ip >= RESETS_PER_IP_HOUR:
            return  # unknown, or someone is hammering the form (the links already sent still work)
        db.execute(
            "INSERT INTO password_resets (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
            [digest, user["id"], clock.iso(now), clock.iso(now + RESET_TTL)],
        )
        events.record(db, now, "user.password_reset_requested", f"Password reset requested for {user['email']}",
                      company_id=user["company_id"], actor=f"user:{user['id']}")
        # The user is loaded already: their language is passed, so a known address costs no extra read.
        mail.enqueue(db, now, settings, template="password_reset", to=user["email"],
                     dedupe_key=f"password-reset:{digest}", company_id=user["company_id"],
                     locale=user.get("locale") or settings.default_locale,
                     context={"name": user["name"], "reset_url": settings.url(f"/auth/reset/{token}"),
                              "minutes": int(RESET_TTL.total_seconds() // 60)})


def reset_token_user(db: Database, now: datetime, token: str) -> dict:
    row = one(
        db,
        """SELECT r.expires_at, r.used_at, u.* FROM password_resets r JOIN users u ON u.id = r.user_id
           WHERE r.token_hash = ?""",
        [token_hash(token or "")],
    )
    if row is None or row["used_at"] or now >= clock.parse(row["expires_at"]):
        raise InvalidToken(_("This password reset link has expired or was already used."))
    return row


def reset_password(db: Database, now: datetime, token: str, password_hash: str, settings: Settings | None = None,
                   ip: str | None = None, user_agent: str | None = None) -> dict:
    """Set the new password, use up the link, and end every session of the user. With
    `settings` (always, from the web), the account is told by a security alert."""
    with write(db):
        user = reset_token_user(db, now, token)
        db.execute("UPDATE users SET password_hash = ?, password_changed_at = ? WHERE id = ?",
                   [password_hash, clock.iso(now), user["id"]])
        # This link and every other outstanding one stop working.
        db.execute("UPDATE password_resets SET used_at = ? WHERE user_id = ? AND used_at IS NULL",
                   [clock.iso(now), user["id"]])
        db.execute("DELETE FROM sessions WHERE user_id = ?", [user["id"]])
        events.record(db, now, "user.password_reset", f"{user['email']} set a new password with a reset link",
                      company_id=user["company_id"], actor=f"user:{user['id']}")
        if settings is not None:
            from billing import security_alerts

            security_alerts.send(db, now, settings, user, "password_changed", ip=ip, user_agent=user_agent,
                                 how="reset")
    return user


# --- changing one's own password and email -----------------------------------------------------


def change_password(db: Database, now: datetime, settings: Settings, user: dict, session_token: str | None,
                    password_hash: str, *, ip: str | None = None, user_agent: str | None = None) -> None:
    """A logged-in person's new password (they gave the current one). Every other session ends:
    whoever else was logged in with the old password is out. The account is told."""
    from billing import security_alerts

    with write(db):
        db.execute("UPDATE users SET password_hash = ?, password_changed_at = ? WHERE id = ?",
                   [password_hash, clock.iso(now), user["id"]])
        db.execute("DELETE FROM sessions WHERE user_id = ? AND id != ?", [user["id"], token_hash(session_token or "")])
        db.execute("UPDATE password_resets SET used_at = ? WHERE user_id = ? AND used_at IS NULL",
                   [clock.iso(now), user["id"]])
        events.record(db, now, "user.password_changed", f"{user['email']} changed their password",
                      company_id=user.get("company_id"), actor=events.user_actor(user))
        security_alerts.send(db, now, settings, user, "password_changed", ip=ip, user_agent=user_agent,
                             how="change")


def change_email(db: Database, now: datetime, settings: Settings, user: dict, new_email: str, *,
                 ip: str | None = None, user_agent: str | None = None) -> None:
    """A logged-in person's new address (they gave their password). The OLD address is told,
    with a link that undoes the change for EMAIL_UNDO_TTL: if someone else did it, the owner of
    the old mailbox takes the account back."""
    from billing import security_alerts

    if new_email == user["email"]:
        raise FormError({"email": _("This is already your email address.")})
    token, digest = _token()
    with write(db):
        if user_by_email(db, new_email) is not None:
            raise FormError({"email": _("Another account uses this address. Choose another.")})
        db.execute("UPDATE users SET email = ? WHERE id = ?", [new_email, user["id"]])
        db.execute("""INSERT INTO email_changes (token_hash, user_id, old_email, new_email, created_at, expires_at)
                      VALUES (?, ?, ?, ?, ?, ?)""",
                   [digest, user["id"], user["email"], new_email, clock.iso(now), clock.iso(now + EMAIL_UNDO_TTL)])
        # Reset links sent to the old address stop working: they were for a mailbox no longer the account's.
        db.execute("UPDATE password_resets SET used_at = ? WHERE user_id = ? AND used_at IS NULL",
                   [clock.iso(now), user["id"]])
        events.record(db, now, "user.email_changed", f"{user['email']} changed their email to {new_email}",
                      company_id=user.get("company_id"), actor=events.user_actor(user))
        security_alerts.send(db, now, settings, user, "email_changed", ip=ip, user_agent=user_agent,
                             to=user["email"], old_email=user["email"], new_email=new_email,
                             undo_url=settings.url(f"/auth/undo-email/{token}"), undo_days=EMAIL_UNDO_TTL.days)


def email_change_for_token(db: Database, now: datetime, token: str) -> dict:
    row = one(db, "SELECT * FROM email_changes WHERE token_hash = ?", [token_hash(token or "")])
    if row is None or row["used_at"] or now >= clock.parse(row["expires_at"]):
        raise InvalidToken(_("This link has expired or was already used."))
    return row


def undo_email_change(db: Database, now: datetime, token: str) -> str:
    """The old address comes back, every session ends and every other undo link stops working.
    Whoever changed it knew the password, so the owner is sent to choose a new one: the
    returned token is a fresh password-reset link (this link proved the mailbox is theirs)."""
    reset_token, reset_digest = _token()
    with write(db):
        change = email_change_for_token(db, now, token)
        holder = user_by_email(db, change["old_email"])
        if holder is not None and holder["id"] != change["user_id"]:
            raise FormError({"email": _("Another account has used %(email)s since; the change cannot be undone. "
                                        "Contact us.", email=change["old_email"])})
        user = user_by_id(db, change["user_id"])
        db.execute("UPDATE users SET email = ? WHERE id = ?", [change["old_email"], user["id"]])
        db.execute("UPDATE email_changes SET used_at = ? WHERE user_id = ? AND used_at IS NULL",
                   [clock.iso(now), user["id"]])
        db.execute("DELETE FROM sessions WHERE user_id = ?", [user["id"]])
        db.execute("UPDATE password_resets SET used_at = ? WHERE user_id = ? AND used_at IS NULL",
                   [clock.iso(now), user["id"]])
        db.execute("INSERT INTO password_resets (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                   [reset_digest, user["id"], clock.iso(now), clock.iso(now + RESET_TTL)])
        events.record(db, now, "user.email_change_undone",
                      f"The change of {change['old_email']} to {user['email']} was undone from the old address",
                      company_id=user["company_id"], actor=events.user_actor(user))
    return reset_token


# --- team: invites and members ------------------------------------------------------------------


def team(db: Database, now: datetime, company_id: int) -> dict:
    return {
        "members": rows(db, "SELECT id, name, email, role, created_at FROM users WHERE company_id = ? "
                            "ORDER BY role = 'owner' DESC, name", [company_id]),
        "invites": rows(db, """SELECT id, email, role, created_at, expires_at FROM invites
                               WHERE company_id = ? AND accepted_at IS NULL AND revoked_at IS NULL
                                 AND expires_at > ? ORDER BY id DESC""", [company_id, clock.iso(now)]),
    }


INVITEE_HAS_ACCOUNT = N_("This address already has an account, and an account belongs to one team. "
                         "They can log in, or reset their password if they forgot it.")


def invite(db: Database, now: datetime, settings: Settings, inviter: dict, email: str, role: str = "member",
           ip: str | None = None) -> None:
    """Invite `email` to the inviter's company. An address that already has an account counts
    against the client's address (`ip`, from the web) like a failed login: see `register`."""
    if inviter["role"] != "owner":
        raise PermissionError("Only the owner can invite colleagues.")
    if role not in ("member", "owner"):
        raise FormError({"role": _("Choose member or owner.")})
    with write(db):
        taken = _address_taken(db, now, email, ip, "invite")
        if not taken:
            _send_invite(db, now, settings, inviter, email, role)
    if taken:  # raised after the commit: the attempt must stay recorded
        raise FormError({"email": _(INVITEE_HAS_ACCOUNT)})


def _send_invite(db: Database, now: datetime, settings: Settings, inviter: dict, email: str, role: str) -> None:
    # A new invite to the same address replaces the old link.
    db.execute("""UPDATE invites SET revoked_at = ? WHERE company_id = ? AND email = ?
                  AND accepted_at IS NULL AND revoked_at IS NULL""", [clock.iso(now), inviter["company_id"], email])
    token, digest = _token()
    invite_id = db.execute(
        """INSERT INTO invites (token_hash, company_id, email, role, invited_by, created_at, expires_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)""",
        [digest, inviter["company_id"], email, role, inviter["id"], clock.iso(now), clock.iso(now + INVITE_TTL)],
    ).lastrowid
    the_company = company(db, inviter["company_id"])
    events.record(db, now, "team.invited", f"{inviter['name']} invited {email} as {role}",
                  company_id=inviter["company_id"], actor=f"user:{inviter['id']}", email=email, role=role)
    # The invitee has no account, so no language of their own yet: they get the inviter's.
    mail.enqueue(db, now, settings, template="invite", to=email, dedupe_key=f"invite:{invite_id}",
                 company_id=inviter["company_id"], locale=i18n.normalize(inviter.get("locale")) or i18n.current(),
                 context={"inviter": inviter["name"], "company": the_company["name"], "role": role,
                          "invite_url": settings.url(f"/auth/invite/{token}"),
                          "days": INVITE_TTL.days})


def invite_for_token(db: Database, now: datetime, token: str) -> dict:
    row = one(
        db,
        """SELECT i.*, c.name AS company_name FROM invites i JOIN companies c ON c.id = i.company_id
           WHERE i.token_hash = ?""",
        [token_hash(token or "")],
    )
    if row is None or row["accepted_at"] or row["revoked_at"] or now >= clock.parse(row["expires_at"]):
        raise InvalidToken(_("This invitation has expired, was withdrawn, or was already used."))
    return row


def accept_invite(db: Database, now: datetime, token: str, name: str, password_hash: str) -> dict:
    with write(db):
        inv = invite_for_token(db, now, token)
        user_id = _insert_user(db, now, inv["company_id"], inv["email"], name, password_hash, inv["role"])
        db.execute("UPDATE invites SET accepted_at = ? WHERE id = ?", [clock.iso(now), inv["id"]])
        events.record(db, now, "team.joined", f"{name} ({inv['email']}) joined as {inv['role']}",
                      company_id=inv["company_id"], actor=f"user:{user_id}")
    return user_by_id(db, user_id)


def revoke_invite(db: Database, now: datetime, actor: dict, invite_id: int) -> None:
    if actor["role"] != "owner":
        raise PermissionError("Only the owner can withdraw invitations.")
    with write(db):
        changed = db.execute(
            "UPDATE invites SET revoked_at = ? WHERE id = ? AND company_id = ? AND accepted_at IS NULL "
            "AND revoked_at IS NULL", [clock.iso(now), invite_id, actor["company_id"]]).rowcount
        if changed:
            events.record(db, now, "team.invite_withdrawn", f"{actor['name']} withdrew an invitation",
                          company_id=actor["company_id"], actor=f"user:{actor['id']}", invite_id=invite_id)


def remove_member(db: Database, now: datetime, actor: dict, user_id: int) -> None:
    if actor["role"] != "owner":
        raise PermissionError("Only the owner can remove colleagues.")
    if user_id == actor["id"]:
        raise FormError({"member": _("You cannot remove yourself.")})
    with write(db):
        member = one(db, "SELECT * FROM users WHERE id = ? AND company_id = ?", [user_id, actor["company_id"]])
        if member is None:
            raise LookupError("no such member")
        db.execute("DELETE FROM users WHERE id = ?", [user_id])  # sessions go with it
        events.record(db, now, "team.removed", f"{actor['name']} removed {member['name']} ({member['email']})",
                      company_id=actor["company_id"], actor=f"user:{actor['id']}")
