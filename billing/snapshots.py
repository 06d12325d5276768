"""The JSON shape of each object the host product sees: the API's answers and the `data`
of a webhook are built here, from the same rows, so the two can never disagree.

Ids are prefixed strings (`cus_42`, `pay_7`, `re_3`; invoices by their number), times are
RFC 3339 UTC as stored, money is integer minor units beside its `currency`.
"""

from __future__ import annotations

from datetime import datetime

from sqlite_utils import Database

from billing import entitlements
from billing.db import one
from billing.settings import Settings
from billing.entitlements import customer_id


def payment_id(payment_id: int) -> str:
    return f"pay_{payment_id}"


def refund_id(refund_id: int) -> str:
    return f"re_{refund_id}"


def subscription(sub: dict) -> dict:
    return {
        "plan": sub["plan"],
        "status": sub["status"],
        "trial_ends_at": sub.get("trial_ends_at"),
        "current_period_start": sub.get("current_period_start"),
        "current_period_end": sub.get("current_period_end"),
        "cancel_at_period_end": bool(sub.get("cancel_at_period_end")),
        "scheduled_plan": sub.get("scheduled_plan"),
    }


def customer(db: Database, now: datetime, settings: Settings, company: dict) -> dict:
    owner = one(db, "SELECT name, email, locale FROM users WHERE company_id = ? AND role = 'owner' ORDER BY id LIMIT 1",
                [company["id"]]) or {}
    sub = one(db, "SELECT * FROM subscriptions WHERE company_id = ?", [company["id"]])
    return {
        "id": customer_id(company["id"]),
        "external_id": company.get("external_id"),
        "name": company["name"],
        "email": owner.get("email"),
        "owner_name": owner.get("name"),
        "locale": owner.get("locale"),
        "timezone": company.get("timezone"),
        "created_at": company["created_at"],
        "subscription": subscription(sub) if sub else None,
        "entitlements": entitlements.for_company(db, company, sub, now, settings.grace_days) if sub else None,
    }


def customer_by_id(db: Database, now: datetime, settings: Settings, company_id: int) -> dict | None:
    company = one(db, "SELECT * FROM companies WHERE id = ?", [company_id])
    return customer(db, now, settings, company) if company else None


def payment(db: Database, row: dict) -> dict:
    invoice = one(db, "SELECT number FROM invoices WHERE payment_id = ?", [row["id"]])
    failed = row["status"] == "failed"
    return {
        "id": payment_id(row["id"]),
        "customer": customer_id(row["company_id"]),
        "merchant_oid": row["merchant_oid"],
        "kind": row["kind"],
        "method": row["method"],
        "plan": row["plan"],
        "amount": row["amount"],
        "currency": row["currency"],
        "status": row["status"],
        "paid_amount": row.get("paid_amount"),
        "failure_code": row.get("failed_reason_code") if failed else None,
        "failure_message": row.get("failed_reason_msg") if failed else None,
        "period_start": row.get("period_start"),
        "period_end": row.get("period_end"),
        "test_mode": bool(row["test_mode"]),
        "invoice": invoice["number"] if invoice else None,
        "created_at": row["created_at"],
        "decided_at": row.get("decided_at"),
    }


def invoice(settings: Settings, row: dict) -> dict:
    return {
        "number": row["number"],
        "customer": customer_id(row["company_id"]),
        "payment": payment_id(row["payment_id"]),
        "issued_at": row["issued_at"],
        "currency": row["currency"],
        "net": row["net"],
        "vat": row["vat"],
        "vat_rate": row["vat_rate"],
        "total": row["total"],
        "period_start": row.get("period_start"),
        "period_end": row.get("period_end"),
        "buyer_name": row["buyer_name"],
        "url": settings.url(f"/billing/invoices/{row['number']}"),
    }


def refund(row: dict) -> dict:
    return {
        "id": refund_id(row["id"]),
        "customer": customer_id(row["company_id"]) if row.get("company_id") else None,
        "payment": payment_id(row["payment_id"]),
        "amount": row["amount"],
        "currency": row["currency"],
        "status": row["status"],
        "reason": row["reason"],
        "created_at": row["created_at"],
        "decided_at": row.get("decided_at"),
    }
