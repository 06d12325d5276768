"""`Idempotency-Key` on creates: a retried request gets the first answer, not a second customer.

The record is written in the same transaction as what the request created, so a create
and its record commit together or not at all; two requests with one key run one after
the other (BEGIN IMMEDIATE), and the second replays the first. Records last 24 hours.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

from sqlite_utils import Database

from billing import clock
from billing.db import one

KEEP = timedelta(hours=24)
KEY_MAX = 255


class Mismatch(Exception):
    """The key was used for another request (another body or route) within 24 hours."""


def fingerprint(method: str, path: str, body: dict) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay(db: Database, now: datetime, key: str, fp: str) -> tuple[int, dict] | None:
    """Inside the create's write: the stored answer for this key, None when there is none.
    Mismatch when the key came with another request."""
    db.conn.execute("DELETE FROM api_idempotency WHERE created_at < ?", [clock.iso(now - KEEP)])
    row = one(db, "SELECT * FROM api_idempotency WHERE idempotency_key = ?", [key])
    if row is None:
        return None
    if row["fingerprint"] != fp:
        raise Mismatch
    return row["status"], json.loads(row["body"])


def remember(db: Database, now: datetime, key: str, fp: str, status: int, body: dict) -> None:
    db.conn.execute("INSERT INTO api_idempotency (idempotency_key, fingerprint, status, body, created_at) "
                    "VALUES (?, ?, ?, ?, ?)", [key, fp, status, json.dumps(body, ensure_ascii=False), clock.iso(now)])
