"""The audit log: every staff action, who did it, when, what changed and why.

Rows are written in the same transaction as the change they describe (append-only: triggers
refuse updates and deletes), so the log and the data cannot disagree. `before` and `after` are
JSON snapshots of what the action changed, small and readable (plan, status, dates, amounts)."""

from __future__ import annotations

import json
from datetime import datetime

from sqlite_utils import Database

from billing import clock
from billing.accounts import FormError
from billing.db import one, rows
from billing.i18n import gettext as _

REASON_MAX = 500


def check_reason(value) -> str:
    """Every staff action asks why; the answer is kept with the action."""
    text = " ".join(str(value or "").split())
    if not text:
        raise FormError({"reason": _("Give a reason: it is kept in the audit log with this action.")})
    if len(text) > REASON_MAX:
        raise FormError({"reason": _("Keep the reason under %(max)d characters.", max=REASON_MAX)})
    return text


def _json(value) -> str:
    return json.dumps(value or {}, default=str, ensure_ascii=False, sort_keys=True)


def record(db: Database, now: datetime, staff: dict, action: str, *, reason: str, company_id: int | None = None,
           target: str | None = None, before: dict | None = None, after: dict | None = None,
           ip: str | None = None) -> int:
    """Append one entry; call inside the write that makes the change."""
    return db.conn.execute(
        """INSERT INTO audit_log (created_at, staff_id, staff_email, action, company_id, target, before, after,
                                  reason, ip) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [clock.iso(now), staff.get("id"), staff.get("email") or "system", action, company_id, target,
         _json(before), _json(after), check_reason(reason), ip],
    ).lastrowid


def _decoded(entry: dict) -> dict:
    entry["before"] = json.loads(entry["before"] or "{}")
    entry["after"] = json.loads(entry["after"] or "{}")
    return entry


def for_company(db: Database, company_id: int, limit: int = 50) -> list[dict]:
    return [_decoded(e) for e in rows(db, "SELECT * FROM audit_log WHERE company_id = ? ORDER BY id DESC LIMIT ?",
                                      [company_id, limit])]


def entry(db: Database, entry_id: int) -> dict | None:
    found = one(db, "SELECT * FROM audit_log WHERE id = ?", [entry_id])
    return _decoded(found) if found else None
