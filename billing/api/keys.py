"""API keys: created by staff, shown once, stored as a SHA-256 hash with a visible prefix.

A key is `bk_live_` (production) or `bk_test_` followed by 43 URL-safe characters (256
random bits). Its first characters form the prefix that lists, the audit trail and
`api-key revoke` use; the rest never leaves the response that created it.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlite_utils import Database

from billing import clock, events
from billing.accounts import FormError, check_text
from billing.db import one, rows, write
from billing.settings import Settings

SCOPES = ("read", "write")
DEFAULT_SCOPE = "write"
PREFIX_CHARS = 10  # random characters kept visible after bk_test_: enough to tell keys apart, useless to guess
NAME_MAX = 100
# A GET must stay a read: last_used_at is written at most this often per key.
TOUCH_EVERY = timedelta(minutes=1)


def kind(settings: Settings) -> str:
    return "bk_live_" if settings.is_production else "bk_test_"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_scope(value) -> str:
    scope = (value or DEFAULT_SCOPE).strip().lower() if isinstance(value, str) or value is None else value
    if scope not in SCOPES:
        raise FormError({"scope": "The scope is read (GET only) or write (everything)."})
    return scope


def create(db: Database, now: datetime, settings: Settings, name, scope=DEFAULT_SCOPE, *,
           actor: str = "system") -> tuple[dict, str]:
    """A new key: (its row, the key itself). The key is not stored; show it once."""
    name = check_text(name, "name", "a name for the key", NAME_MAX)
    scope = check_scope(scope)
    with write(db):
        while True:  # a prefix collision is astronomically rare, but the column is unique
            key = kind(settings) + secrets.token_urlsafe(32)
            prefix = key[:len(kind(settings)) + PREFIX_CHARS]
            if one(db, "SELECT 1 FROM api_keys WHERE prefix = ?", [prefix]) is None:
                break
        key_id = db.conn.execute(
            "INSERT INTO api_keys (name, prefix, key_hash, scope, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [name, prefix, key_hash(key), scope, actor, clock.iso(now)]).lastrowid
        events.record(db, now, "api_key.created", f"API key {name} ({prefix}…, {scope}) created", actor=actor,
                      prefix=prefix, scope=scope)
    return one(db, "SELECT * FROM api_keys WHERE id = ?", [key_id]), key


def list_keys(db: Database) -> list[dict]:
    """Working keys first, newest first; revoked ones after them."""
    return rows(db, "SELECT * FROM api_keys ORDER BY revoked_at IS NOT NULL, id DESC")


def one_key(db: Database, key_id: int) -> dict | None:
    return one(db, "SELECT * FROM api_keys WHERE id = ?", [key_id])


def by_prefix(db: Database, prefix: str) -> dict | None:
    return one(db, "SELECT * FROM api_keys WHERE prefix = ?", [(prefix or "").strip().rstrip("…")])


def revoke(db: Database, now: datetime, key_id: int, *, actor: str = "system") -> dict | None:
    """Revoke a key (it stops working with the next request); None when there is no such key.
    Revoking a revoked key changes nothing."""
    with write(db):
        row = one(db, "SELECT * FROM api_keys WHERE id = ?", [key_id])
        if row is None or row["revoked_at"]:
            return row
        db.conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", [clock.iso(now), key_id])
        events.record(db, now, "api_key.revoked", f"API key {row['name']} ({row['prefix']}…) revoked", actor=actor,
                      prefix=row["prefix"])
    return one(db, "SELECT * FROM api_keys WHERE id = ?", [key_id])


def authenticate(db: Database, key: str | None) -> dict | None:
    """The working key row for a presented key, or None (unknown, malformed or revoked). A read.

    The lookup is by hash, so nothing about the key is compared character by character.
    """
    if not key or len(key) > 100 or not key.startswith(("bk_test_", "bk_live_")):
        return None
    row = one(db, "SELECT id, name, prefix, scope, last_used_at, revoked_at FROM api_keys WHERE key_hash = ?",
              [key_hash(key)])
    if row is None or row["revoked_at"]:
        return None
    return row


def needs_touch(row: dict, now: datetime) -> bool:
    return row["last_used_at"] is None or row["last_used_at"] < clock.iso(now - TOUCH_EVERY)


def touch(db: Database, now: datetime, key_id: int) -> None:
    """Record the key's use, at most once a minute (a GET stays a read the rest of the time); the
    guard keeps parallel requests from writing it twice."""
    with write(db):
        db.conn.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR "
                        "last_used_at < ?)", [clock.iso(now), key_id, clock.iso(now - TOUCH_EVERY)])
