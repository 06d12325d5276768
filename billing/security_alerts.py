"""Security alerts: an email to the account's own address whenever something about how it is
reached changes. They cannot be turned off; that is the point of them.

Each says what happened, when (in the account's time zone), from which IP address and which
browser (a short "Chrome on Linux"), and what to do if it was not them. They are queued in
the same transaction as the change, in the account's language.

New browsers: every browser carries a long-lived random `device` cookie; only its SHA-256 is
kept per account (`known_browsers`). A login from a browser whose cookie the account has not
seen is announced, except the very first login of an account (sign-up, an accepted invitation,
or the first login after this feature shipped), when every browser is new.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime

from sqlite_utils import Database

from billing import clock
from billing import mail
from billing.db import one, scalar
from billing.settings import Settings

KINDS = ("password_changed", "email_changed", "two_factor_on", "two_factor_off", "recovery_code_used",
         "new_browser")


# --- user agents ---------------------------------------------------------------------------------

# Order matters: Edge and Opera say "Chrome" too, Chrome says "Safari", so the specific come first.
_BROWSERS = (
    ("Edge", re.compile(r"\bEdg(e|A|iOS)?/")),
    ("Opera", re.compile(r"\b(OPR|Opera)/")),
    ("Samsung Internet", re.compile(r"\bSamsungBrowser/")),
    ("Firefox", re.compile(r"\b(Firefox|FxiOS)/")),
    ("Chrome", re.compile(r"\b(Chrome|CriOS|Chromium|HeadlessChrome)/")),
    ("Safari", re.compile(r"\bVersion/[\d.]+.*\bSafari/")),
)
_SYSTEMS = (
    ("iOS", re.compile(r"\b(iPhone|iPad|iPod)\b")),
    ("Android", re.compile(r"\bAndroid\b")),
    ("ChromeOS", re.compile(r"\bCrOS\b")),
    ("Windows", re.compile(r"\bWindows\b")),
    ("macOS", re.compile(r"\bMac OS X\b|\bMacintosh\b")),
    ("Linux", re.compile(r"\bLinux\b|\bX11\b")),
)


def describe_agent(user_agent: str | None) -> tuple[str | None, str | None]:
    """('Chrome', 'Linux') from a User-Agent header; None for what cannot be told."""
    text = user_agent or ""
    browser = next((name for name, pattern in _BROWSERS if pattern.search(text)), None)
    system = next((name for name, pattern in _SYSTEMS if pattern.search(text)), None)
    return browser, system


# --- sending -------------------------------------------------------------------------------------


def _time_zone(db: Database, settings: Settings, user: dict) -> str:
    """A customer's company time zone; staff read the operator's."""
    if user.get("company_id"):
        found = scalar(db, "SELECT timezone FROM companies WHERE id = ?", [user["company_id"]])
        if found:
            return found
    return settings.timezone


def send(db: Database, now: datetime, settings: Settings, user: dict, kind: str, *, ip: str | None,
         user_agent: str | None, to: str | None = None, **details) -> None:
    """Inside the write that makes the change: queue the alert to the account's address
    (`to`: the old address, for an email change), in the account's language."""
    if kind not in KINDS:
        raise ValueError(f"unknown security alert {kind!r}")
    browser, system = describe_agent(user_agent)
    locale = scalar(db, "SELECT locale FROM users WHERE id = ?", [user["id"]]) or settings.default_locale
    name = scalar(db, "SELECT name FROM users WHERE id = ?", [user["id"]]) or user.get("name")
    context = {"kind": kind, "name": name, "when": clock.iso(now), "tz": _time_zone(db, settings, user),
               "ip": ip or None, "browser": browser, "system": system,
               "reset_url": settings.url("/auth/forgot-password"),
               "account_url": settings.url("/admin/account" if user.get("role") == "staff" else "/billing/account"),
               "is_staff": user.get("role") == "staff", **details}
    mail.enqueue(db, now, settings, template="security_alert", to=to or user["email"],
                 dedupe_key=f"security:{kind}:{user['id']}:{secrets.token_hex(8)}",
                 company_id=user.get("company_id"), locale=locale, context=context)


# --- browsers ------------------------------------------------------------------------------------


def new_device_token() -> str:
    return secrets.token_urlsafe(32)


def fingerprint(device_token: str) -> str:
    return hashlib.sha256(device_token.encode()).hexdigest()


def note_browser(db: Database, now: datetime, settings: Settings, user: dict, device_token: str, *,
                 ip: str | None, user_agent: str | None) -> bool:
    """Inside a write, at a completed login: remember this browser for the account, and alert
    when the account knew other browsers but not this one. True when an alert was queued."""
    digest = fingerprint(device_token)
    known = one(db, "SELECT id FROM known_browsers WHERE user_id = ? AND fingerprint = ?", [user["id"], digest])
    if known:
        db.execute("UPDATE known_browsers SET last_seen = ?, ip = ?, user_agent = ? WHERE id = ?",
                   [clock.iso(now), ip, (user_agent or "")[:300], known["id"]])
        return False
    others = scalar(db, "SELECT count(*) FROM known_browsers WHERE user_id = ?", [user["id"]])
    db.execute("""INSERT INTO known_browsers (user_id, fingerprint, first_seen, last_seen, ip, user_agent)
                  VALUES (?, ?, ?, ?, ?, ?)""",
               [user["id"], digest, clock.iso(now), clock.iso(now), ip, (user_agent or "")[:300]])
    if others:
        send(db, now, settings, user, "new_browser", ip=ip, user_agent=user_agent)
    return bool(others)
