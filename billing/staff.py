"""Read models for the operator's admin console."""

from __future__ import annotations

from sqlite_utils import Database

from billing import credit_notes, payments, refunds
from billing.db import one, rows, scalar


def outbox_summary(db: Database) -> dict:
    # Pending and failed are counted on their partial indexes (outbox_due, outbox_failed); the sent
    # emails, nearly all of the outbox, are not counted at all.
    return {
        "pending": scalar(db, "SELECT count(*) FROM outbox WHERE status = 'pending'"),
        "failed": scalar(db, "SELECT count(*) FROM outbox WHERE status = 'failed'"),
        "failed_emails": rows(db, """SELECT id, to_addr, coalesce(subject, template) AS subject, attempts, last_error,
                                            created_at
                                     FROM outbox WHERE status = 'failed' ORDER BY id DESC LIMIT 50"""),
    }


def open_anomalies(db: Database, limit: int = 50, company_id: int | None = None) -> list[dict]:
    """Payments that need a person: money that arrived but was not applied, or was flagged."""
    where, params = ("AND a.company_id = ?", [company_id]) if company_id is not None else ("", [])
    return rows(db, f"""SELECT a.*, c.name AS company_name, p.amount, p.paid_amount, p.currency,
                               p.status AS payment_status
                        FROM anomalies a LEFT JOIN companies c ON c.id = a.company_id
                        LEFT JOIN payments p ON p.id = a.payment_id
                        WHERE a.resolved_at IS NULL {where} ORDER BY a.id DESC LIMIT ?""", [*params, limit])


def company_count(db: Database) -> int:
    """From the counter the triggers of m025_counts keep (a count(*) reads every company's index entry)."""
    return scalar(db, "SELECT value FROM counts WHERE name = 'companies'")


def overview(db: Database) -> dict:
    """What the staff home shows above and below the customer list (billing.customer_search)."""
    return {"outbox": outbox_summary(db), "company_count": company_count(db),
            "anomalies": open_anomalies(db)}


def company(db: Database, company_id: int) -> dict | None:
    row = one(db, "SELECT * FROM companies WHERE id = ?", [company_id])
    if row is None:
        return None
    return {"company": row, "subscription": one(db, "SELECT * FROM subscriptions WHERE company_id = ?", [company_id]),
            "members": rows(db, "SELECT id, name, email, role FROM users WHERE company_id = ? ORDER BY id",
                            [company_id]),
            "payments": company_payments(db, company_id),
            "refunds": rows(db, """SELECT r.*, p.merchant_oid FROM refunds r JOIN payments p ON p.id = r.payment_id
                                   WHERE r.company_id = ? ORDER BY r.id DESC""", [company_id]),
            "open_anomalies": open_anomalies(db, company_id=company_id),
            "credit_notes": credit_notes.for_company(db, company_id)}  # under each payment's invoice


def company_payments(db: Database, company_id: int, limit: int = 100) -> list[dict]:
    """Every decided or open payment, with what was refunded and what still can be."""
    found = payments.for_company(db, company_id, limit)
    for payment in found:
        payment["refundable"] = refunds.refundable(db, payment)
    return found


def refund_form(db: Database, payment_id: int) -> dict | None:
    """What the refund page shows about a payment."""
    payment = one(db, """SELECT p.*, c.name AS company_name, i.number AS invoice_number FROM payments p
                         JOIN companies c ON c.id = p.company_id LEFT JOIN invoices i ON i.payment_id = p.id
                         WHERE p.id = ?""", [payment_id])
    if payment is None:
        return None
    return {"payment": payment, "refunds": refunds.for_payment(db, payment_id),
            "refundable": refunds.refundable(db, payment), "payment_labels": payments.STATUS_LABELS}
