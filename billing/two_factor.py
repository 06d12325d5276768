"""TOTP two-factor authentication (RFC 6238, via pyotp) and one-time recovery codes.

The secret. An authenticator app and this server share a 160-bit secret; whoever reads it can
make codes. It is therefore never stored as it is: `seal` encrypts it with a key derived from
SECRET_KEY (HMAC-SHA256 as a pseudo-random function in counter mode, with a random 128-bit
nonce, and an HMAC-SHA256 tag over the user's id, the nonce and the ciphertext). A copy of the
database (a backup, a support dump, a log line of a users row) then gives no codes, and a
sealed secret moved to another user's row fails its tag. The standard library has no AES, and
this construction needs nothing beyond HMAC, which is a PRF. If SECRET_KEY is ever replaced, the
old secrets no longer open: those users log in with a recovery code and enrol again.

A code is accepted once: the newest 30-second step accepted is kept per user, and only a
later step is accepted (one step either side of now, for clocks a little apart). The update
that records it is conditional, so two requests racing with the same code cannot both win.

Recovery codes are 16 characters from a 32-letter alphabet: 80 random bits. Only their SHA-256
is kept. A slow hash (argon2) protects passwords people choose, which are guessable; nobody can
enumerate 2^80 codes, so a fast hash is as safe here, and lets a typed code be found by one
indexed lookup instead of ten argon2 verifications per attempt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from datetime import datetime

import pyotp
import segno
from markupsafe import Markup
from sqlite_utils import Database

from billing import clock, events
from billing.db import one, scalar, write
from billing.settings import Settings

STEP_SECONDS = 30
DIGITS = 6
WINDOW = 1  # steps accepted either side of the server's
RECOVERY_CODES = 10
RECOVERY_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # 32 letters: no 0/O or 1/I to misread
RECOVERY_LENGTH = 16


class AlreadyOn(Exception):
    """Two-factor authentication is on already; turn it off first to enrol another device."""


# --- sealing the secret ------------------------------------------------------------------------


def _key(settings: Settings, purpose: bytes) -> bytes:
    return hmac.new(str(settings.secret_key).encode(), b"billing two-factor v1 " + purpose, hashlib.sha256).digest()


def _stream(key: bytes, nonce: bytes, length: int) -> bytes:
    blocks = (hmac.new(key, nonce + i.to_bytes(4, "big"), hashlib.sha256).digest() for i in range(length // 32 + 1))
    return b"".join(blocks)[:length]


def _tag(settings: Settings, user_id: int, nonce: bytes, sealed: bytes) -> bytes:
    message = user_id.to_bytes(8, "big") + nonce + sealed
    return hmac.new(_key(settings, b"mac"), message, hashlib.sha256).digest()[:16]


def seal(settings: Settings, user_id: int, secret: str) -> str:
    nonce = secrets.token_bytes(16)
    plain = secret.encode()
    sealed = bytes(a ^ b for a, b in zip(plain, _stream(_key(settings, b"enc"), nonce, len(plain))))
    return "v1:" + base64.urlsafe_b64encode(nonce + sealed + _tag(settings, user_id, nonce, sealed)).decode()


def unseal(settings: Settings, user_id: int, stored: str | None) -> str | None:
    """The secret, or None when there is none or it does not open (another key, another row)."""
    if not stored or not stored.startswith("v1:"):
        return None
    try:
        raw = base64.urlsafe_b64decode(stored[3:].encode())
    except ValueError:
        return None
    nonce, sealed, tag = raw[:16], raw[16:-16], raw[-16:]
    if len(nonce) != 16 or not hmac.compare_digest(tag, _tag(settings, user_id, nonce, sealed)):
        return None
    return bytes(a ^ b for a, b in zip(sealed, _stream(_key(settings, b"enc"), nonce, len(sealed)))).decode()


# --- enrolment -----------------------------------------------------------------------------------


def is_on(user: dict | None) -> bool:
    return bool(user and user.get("totp_enabled_at"))


def pending_secret(db: Database, settings: Settings, user: dict) -> str:
    """The secret being enrolled: made on the first visit to the enrol page and kept (sealed)
    until confirmed, so reloading the page shows the same QR code."""
    with write(db):
        row = one(db, "SELECT totp_secret, totp_enabled_at FROM users WHERE id = ?", [user["id"]])
        if row["totp_enabled_at"]:
            raise AlreadyOn
        secret = unseal(settings, user["id"], row["totp_secret"])
        if secret is None:
            secret = pyotp.random_base32()  # 32 base32 letters: 160 bits, as RFC 4226 recommends
            db.execute("UPDATE users SET totp_secret = ?, totp_last_step = NULL WHERE id = ?",
                       [seal(settings, user["id"], secret), user["id"]])
    return secret


def provisioning_uri(settings: Settings, user: dict, secret: str) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=user["email"], issuer_name=settings.app_name)


def qr_svg(uri: str, title: str) -> Markup:
    """The QR code as inline SVG, drawn here: the secret never goes to a third-party QR service."""
    svg = segno.make(uri, error="m").svg_inline(scale=5, border=4, dark="#1b2433", light="#ffffff",
                                                title=title, svgclass="qr", lineclass=None)
    return Markup(svg)


def grouped(secret: str) -> str:
    """'JBSW Y3DP EHPK 3PXP …': the secret in groups of four, for typing into an app by hand."""
    return " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))


# --- checking a code ---------------------------------------------------------------------------------


DIGITS_ONLY = re.compile(r"\D")


def looks_like_totp(text: str) -> bool:
    return len(DIGITS_ONLY.sub("", text or "")) == DIGITS and len((text or "").strip()) <= DIGITS + 2


def _accept_totp(db: Database, settings: Settings, user_id: int, stored: str | None, code: str,
                 now: datetime) -> bool:
    """Inside a write: is `code` right for now ±1 step and newer than the last accepted? Records it."""
    secret = unseal(settings, user_id, stored)
    code = DIGITS_ONLY.sub("", code or "")
    if secret is None or len(code) != DIGITS:
        return False
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    current = int(now.timestamp()) // STEP_SECONDS
    matched = None
    for step in range(current - WINDOW, current + WINDOW + 1):  # every step compared: no early exit
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
            matched = step
    if matched is None:
        return False
    # Conditional: a step at or before the last accepted one is a replay, refused.
    return db.execute("UPDATE users SET totp_last_step = ? WHERE id = ? AND coalesce(totp_last_step, -1) < ?",
                      [matched, user_id, matched]).rowcount == 1


def confirm_enrolment(db: Database, now: datetime, settings: Settings, user: dict, code: str, *,
                      ip: str = "", user_agent: str = "") -> list[str] | None:
    """The first code from the app proves it holds the secret: two-factor is on. Returns the
    recovery codes (to be shown once), or None when the code is wrong."""
    from billing import security_alerts

    codes, hashes = _new_codes()
    with write(db):
        row = one(db, "SELECT totp_secret, totp_enabled_at FROM users WHERE id = ?", [user["id"]])
        if row["totp_enabled_at"]:
            raise AlreadyOn
        if not _accept_totp(db, settings, user["id"], row["totp_secret"], code, now):
            return None
        db.execute("UPDATE users SET totp_enabled_at = ? WHERE id = ?", [clock.iso(now), user["id"]])
        _store_codes(db, now, user["id"], hashes)
        events.record(db, now, "user.two_factor_enabled", f"{user['email']} turned on two-factor authentication",
                      company_id=user.get("company_id"), actor=events.user_actor(user))
        security_alerts.send(db, now, settings, user, "two_factor_on", ip=ip, user_agent=user_agent)
    return codes


def verify(db: Database, now: datetime, settings: Settings, user: dict, text: str, *, ip: str = "",
           user_agent: str = "") -> str | None:
    """A second factor typed at login or to confirm an action: 'totp' or 'recovery' when it is
    right (and now used up), else None. A recovery code emails the account."""
    from billing import security_alerts

    with write(db):
        row = one(db, "SELECT totp_secret, totp_enabled_at FROM users WHERE id = ?", [user["id"]])
        if row is None or not row["totp_enabled_at"]:
            return None
        if looks_like_totp(text):
            return "totp" if _accept_totp(db, settings, user["id"], row["totp_secret"], text, now) else None
        if not _use_recovery_code(db, now, user["id"], text):
            return None
        left = remaining_codes(db, user["id"])
        events.record(db, now, "user.recovery_code_used", f"{user['email']} used a recovery code ({left} left)",
                      company_id=user.get("company_id"), actor=events.user_actor(user))
        security_alerts.send(db, now, settings, user, "recovery_code_used", ip=ip, user_agent=user_agent,
                             remaining=left)
    return "recovery"


def disable(db: Database, now: datetime, settings: Settings, user: dict, *, ip: str = "", user_agent: str = "",
            actor: str | None = None) -> None:
    """Two-factor off: the secret and every recovery code are forgotten, and the account is told."""
    from billing import security_alerts

    with write(db):
        db.execute("UPDATE users SET totp_secret = NULL, totp_enabled_at = NULL, totp_last_step = NULL WHERE id = ?",
                   [user["id"]])
        db.execute("DELETE FROM recovery_codes WHERE user_id = ?", [user["id"]])
        events.record(db, now, "user.two_factor_disabled", f"Two-factor authentication turned off for {user['email']}",
                      company_id=user.get("company_id"), actor=actor or events.user_actor(user))
        security_alerts.send(db, now, settings, user, "two_factor_off", ip=ip, user_agent=user_agent)


# --- recovery codes ------------------------------------------------------------------------------------


def _normalize_code(text: str) -> str:
    return re.sub(r"[\s-]", "", text or "").upper()


def code_hash(text: str) -> str:
    return hashlib.sha256(_normalize_code(text).encode()).hexdigest()


def _new_codes() -> tuple[list[str], list[str]]:
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH))
        codes.append("-".join(raw[i:i + 4] for i in range(0, RECOVERY_LENGTH, 4)))
    return codes, [code_hash(c) for c in codes]


def _store_codes(db: Database, now: datetime, user_id: int, hashes: list[str]) -> None:
    db.execute("DELETE FROM recovery_codes WHERE user_id = ?", [user_id])
    for digest in hashes:
        db.execute("INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES (?, ?, ?)",
                   [user_id, digest, clock.iso(now)])


def _use_recovery_code(db: Database, now: datetime, user_id: int, text: str) -> bool:
    if len(_normalize_code(text)) != RECOVERY_LENGTH:
        return False
    return db.execute("UPDATE recovery_codes SET used_at = ? WHERE user_id = ? AND code_hash = ? AND used_at IS NULL",
                      [clock.iso(now), user_id, code_hash(text)]).rowcount == 1


def remaining_codes(db: Database, user_id: int) -> int:
    return scalar(db, "SELECT count(*) FROM recovery_codes WHERE user_id = ? AND used_at IS NULL", [user_id])


def regenerate_codes(db: Database, now: datetime, user: dict) -> list[str]:
    """Ten new codes; the old ones stop working."""
    codes, hashes = _new_codes()
    with write(db):
        row = one(db, "SELECT totp_enabled_at FROM users WHERE id = ?", [user["id"]])
        if not row["totp_enabled_at"]:
            raise ValueError("two-factor authentication is off")
        _store_codes(db, now, user["id"], hashes)
        events.record(db, now, "user.recovery_codes_regenerated", f"{user['email']} made new recovery codes",
                      company_id=user.get("company_id"), actor=events.user_actor(user))
    return codes
