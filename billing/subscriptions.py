"""Subscription state: a small state machine and pure predicates taking `now`.

States: trialing -> active <-> past_due -> canceled; trialing -> expired.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlite_utils import Database

from billing import clock
from billing.db import one

TRIALING = "trialing"
ACTIVE = "active"
PAST_DUE = "past_due"
CANCELED = "canceled"
EXPIRED = "expired"
STATES = (TRIALING, ACTIVE, PAST_DUE, CANCELED, EXPIRED)

STATUS_LABELS = {
    TRIALING: "Trial",
    ACTIVE: "Active",
    PAST_DUE: "Past due",
    CANCELED: "Canceled",
    EXPIRED: "Trial ended",
}


def start_trial(db: Database, now: datetime, company_id: int, plan: str, trial_days: int) -> int:
    ends = now + timedelta(days=trial_days)
    cursor = db.execute(
        """INSERT INTO subscriptions (company_id, plan, status, trial_ends_at, next_action_at, created_at, updated_at)
           VALUES (?, ?, 'trialing', ?, ?, ?, ?)""",
        [company_id, plan, clock.iso(ends), None, clock.iso(now), clock.iso(now)],
    )
    return cursor.lastrowid


def for_company(db: Database, company_id: int) -> dict | None:
    return one(db, "SELECT * FROM subscriptions WHERE company_id = ?", [company_id])


# --- pure predicates ------------------------------------------------------------


def _at(sub: dict, column: str) -> datetime | None:
    value = sub.get(column)
    return clock.parse(value) if value else None


def on_trial(sub: dict, now: datetime) -> bool:
    ends = _at(sub, "trial_ends_at")
    return sub["status"] == TRIALING and ends is not None and now < ends


def trial_days_left(sub: dict, now: datetime) -> int:
    """Whole days left, rounded up: 14 right after sign-up, 1 on the last day, 0 after."""
    ends = _at(sub, "trial_ends_at")
    if sub["status"] != TRIALING or ends is None or now >= ends:
        return 0
    return math.ceil((ends - now) / timedelta(days=1))


def trial_length_days(sub: dict) -> int:
    ends, started = _at(sub, "trial_ends_at"), _at(sub, "created_at")
    if ends is None or started is None:
        return 0
    return max(1, math.ceil((ends - started) / timedelta(days=1)))
