"""Read models for the operator's admin console."""

from __future__ import annotations

from datetime import datetime

from sqlite_utils import Database

from billing.db import rows, scalar


def companies(db: Database, now: datetime, query: str = "", limit: int = 200) -> list[dict]:
    like = f"%{query.strip().lower()}%"
    return rows(
        db,
        """SELECT c.id, c.name, c.created_at, s.plan, s.status, s.trial_ends_at, s.current_period_end,
                  (SELECT email FROM users u WHERE u.company_id = c.id AND u.role = 'owner' ORDER BY u.id LIMIT 1)
                      AS owner_email,
                  (SELECT count(*) FROM users u WHERE u.company_id = c.id) AS members
           FROM companies c LEFT JOIN subscriptions s ON s.company_id = c.id
           WHERE ? = '%%' OR lower(c.name) LIKE ? OR EXISTS (
               SELECT 1 FROM users u WHERE u.company_id = c.id AND u.email LIKE ?)
           ORDER BY c.id DESC LIMIT ?""",
        [like, like, like, limit],
    )


def outbox_summary(db: Database) -> dict:
    return {
        "pending": scalar(db, "SELECT count(*) FROM outbox WHERE status = 'pending'"),
        "failed": scalar(db, "SELECT count(*) FROM outbox WHERE status = 'failed'"),
        "sent": scalar(db, "SELECT count(*) FROM outbox WHERE status = 'sent'"),
        "failed_emails": rows(db, """SELECT id, to_addr, subject, attempts, last_error, created_at
                                     FROM outbox WHERE status = 'failed' ORDER BY id DESC LIMIT 50"""),
    }


def overview(db: Database, now: datetime, query: str = "") -> dict:
    return {"companies": companies(db, now, query), "outbox": outbox_summary(db), "query": query,
            "company_count": scalar(db, "SELECT count(*) FROM companies")}
