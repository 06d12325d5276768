"""What a customer uses now, as the host product reports it (`PUT /api/v1/customers/{id}/usage`).

The host knows its workspaces and stored bytes; billing keeps the latest figures beside the
company, shows them against the plan's limits, and refuses a downgrade they would not fit.
"""

from __future__ import annotations

from datetime import datetime

from sqlite_utils import Database

from billing import clock
from billing.accounts import FormError
from billing.db import one

MAX_COUNT = 10 ** 15  # far beyond any real figure; keeps values inside SQLite's integers


def _count(value, field: str, errors: dict) -> int | None:
    # bool is an int in Python; JSON true is not a count
    if isinstance(value, bool) or not isinstance(value, int):
        errors[field] = f"{field} must be a whole number."
    elif not 0 <= value <= MAX_COUNT:
        errors[field] = f"{field} must be between 0 and {MAX_COUNT}."
    else:
        return value
    return None


def check(workspaces, storage_bytes) -> tuple[int, int]:
    errors: dict[str, str] = {}
    w = _count(workspaces, "workspaces", errors)
    b = _count(storage_bytes, "storage_bytes", errors)
    if errors:
        raise FormError(errors)
    return w, b


def record(db: Database, now: datetime, company_id: int, workspaces, storage_bytes) -> dict:
    """Store the figures (call inside a write); returns the updated company row."""
    w, b = check(workspaces, storage_bytes)
    return one(db, """UPDATE companies SET usage_workspaces = ?, usage_storage_bytes = ?, usage_reported_at = ?
                      WHERE id = ? RETURNING *""", [w, b, clock.iso(now), company_id])
