"""The audit trail: who did what, when, to which company.

Events are written in the same transaction as the change they describe, so the
trail and the state can never disagree. Each one is also staged for the webhooks
(billing/notify/webhooks.py), which turn the transaction's events into the host's
webhook events just before it commits.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlite_utils import Database

from billing import clock
from billing.db import before_commit, rows, staged


# The kinds the host hears about (billing/notify/webhooks.py `_translate` says as what). Others
# (a password reset asked for, say) cost nothing more, and do not reveal by their work whether
# an address has an account.
ANNOUNCED = ("company.registered", "subscription.", "payment.succeeded", "payment.failed", "refund.succeeded")


def record(
    db: Database,
    now: datetime,
    kind: str,
    message: str,
    *,
    company_id: int | None = None,
    actor: str = "system",
    **data,
) -> int:
    cursor = db.conn.execute(
        "INSERT INTO events (created_at, company_id, actor, kind, message, data) VALUES (?, ?, ?, ?, ?, ?)",
        [clock.iso(now), company_id, actor, kind, message, json.dumps(data, sort_keys=True, default=str)],
    )
    if company_id is not None and kind.startswith(ANNOUNCED) and db.conn.in_transaction:
        staged(db).append(("audit", kind, company_id, data, now))
        before_commit(db, _webhooks)
    return cursor.lastrowid


def _webhooks(db: Database) -> None:
    from billing.notify import webhooks  # imported late: webhooks build on modules that import this one

    webhooks.flush(db)


def for_company(db: Database, company_id: int, limit: int = 100) -> list[dict]:
    return rows(
        db,
        "SELECT * FROM events WHERE company_id = ? ORDER BY id DESC LIMIT ?",
        [company_id, limit],
    )


def user_actor(user: dict) -> str:
    return f"{'staff' if user['role'] == 'staff' else 'user'}:{user['id']}"
