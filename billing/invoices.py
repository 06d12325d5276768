"""Invoices: gapless numbers per year, VAT split, immutable once issued.

The number is taken from `invoice_counters` inside the caller's write
transaction (BEGIN IMMEDIATE holds the write lock), so a rolled-back payment
gives its number back and two payments can never take the same one.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlite_utils import Database

from billing import billing_details, clock, money
from billing.db import one, rows
from billing.settings import Settings


def next_number(db: Database, year: int) -> tuple[int, str]:
    sequence = db.conn.execute(
        """INSERT INTO invoice_counters (year, last_number) VALUES (?, 1)
           ON CONFLICT (year) DO UPDATE SET last_number = last_number + 1 RETURNING last_number""",
        [year]).fetchone()[0]
    return sequence, f"INV-{year}-{sequence:06d}"


def issue(db: Database, now: datetime, settings: Settings, *, company: dict, payment: dict, buyer_email: str,
          lines: list[tuple[str, int, int]], period_start: datetime | None, period_end: datetime | None) -> dict:
    """Issue an invoice for a successful payment. `lines`: (description, unit amount, quantity),
    VAT included; they must add up to the amount paid for the order."""
    total = sum(unit * quantity for _, unit, quantity in lines)
    if total != payment["amount"]:
        raise ValueError(f"invoice lines add up to {total}, the order was {payment['amount']}")
    rate = Decimal(settings.vat_rate)
    net, vat = money.split_gross(total, rate)
    year = now.astimezone(settings.tz).year  # the invoice date is local, as the law reads it
    sequence, number = next_number(db, year)
    invoice = {
        "number": number, "year": year, "sequence": sequence, "company_id": company["id"],
        "payment_id": payment["id"], "issued_at": clock.iso(now), "seller_name": settings.seller_name,
        "seller_address": settings.seller_address, "seller_tax_id": settings.seller_tax_id,
        "seller_tax_office": settings.seller_tax_office, **billing_details.invoice_buyer(company),
        "buyer_email": buyer_email,
        "currency": payment["currency"], "net": net, "vat": vat, "vat_rate": _rate_text(rate), "total": total,
        "period_start": clock.iso(period_start) if period_start else None,
        "period_end": clock.iso(period_end) if period_end else None,
    }
    invoice["id"] = db.conn.execute(
        f"INSERT INTO invoices ({', '.join(invoice)}) VALUES ({', '.join('?' * len(invoice))})",
        list(invoice.values())).lastrowid
    db.conn.executemany(
        "INSERT INTO invoice_lines (invoice_id, description, quantity, unit_amount, amount) VALUES (?, ?, ?, ?, ?)",
        [(invoice["id"], description, quantity, unit, unit * quantity) for description, unit, quantity in lines])
    return invoice


def _rate_text(rate: Decimal) -> str:
    return format(rate.normalize(), "f")


def by_id(db: Database, invoice_id: int) -> dict | None:
    return one(db, "SELECT * FROM invoices WHERE id = ?", [invoice_id])


def for_company_by_number(db: Database, company_id: int, number: str) -> dict | None:
    """An invoice with its lines, only if it belongs to this company."""
    invoice = one(db, "SELECT * FROM invoices WHERE number = ? AND company_id = ?", [number, company_id])
    if invoice:
        invoice["lines"] = rows(db, "SELECT * FROM invoice_lines WHERE invoice_id = ? ORDER BY id", [invoice["id"]])
    return invoice


def for_company(db: Database, company_id: int, limit: int = 100) -> list[dict]:
    return rows(db, "SELECT * FROM invoices WHERE company_id = ? ORDER BY id DESC LIMIT ?", [company_id, limit])
