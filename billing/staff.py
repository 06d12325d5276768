"""Read models for the operator's admin console."""

from __future__ import annotations

from datetime import datetime

from sqlite_utils import Database

from billing.db import one, rows, scalar


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
        "failed_emails": rows(db, """SELECT id, to_addr, coalesce(subject, template) AS subject, attempts, last_error,
                                            created_at
                                     FROM outbox WHERE status = 'failed' ORDER BY id DESC LIMIT 50"""),
    }


def open_anomalies(db: Database, limit: int = 50) -> list[dict]:
    """Payments that need a person: money that arrived but was not applied, or was flagged."""
    return rows(db, """SELECT a.*, c.name AS company_name, p.amount, p.paid_amount, p.currency, p.status AS payment_status
                       FROM anomalies a LEFT JOIN companies c ON c.id = a.company_id
                       LEFT JOIN payments p ON p.id = a.payment_id
                       WHERE a.resolved_at IS NULL ORDER BY a.id DESC LIMIT ?""", [limit])


def overview(db: Database, now: datetime, query: str = "") -> dict:
    return {"companies": companies(db, now, query), "outbox": outbox_summary(db), "query": query,
            "company_count": scalar(db, "SELECT count(*) FROM companies"), "anomalies": open_anomalies(db)}


def company(db: Database, company_id: int) -> dict | None:
    row = one(db, "SELECT * FROM companies WHERE id = ?", [company_id])
    if row is None:
        return None
    return {"company": row, "subscription": one(db, "SELECT * FROM subscriptions WHERE company_id = ?", [company_id]),
            "members": rows(db, "SELECT id, name, email, role FROM users WHERE company_id = ? ORDER BY id",
                            [company_id])}
