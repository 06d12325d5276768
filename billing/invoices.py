"""Invoices: gapless numbers per year, VAT split, immutable once issued.

The number is taken from `invoice_counters` inside the caller's write
transaction (BEGIN IMMEDIATE holds the write lock), so a rolled-back payment
gives its number back and two payments can never take the same one.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal

from sqlite_utils import Database

from billing import billing_details, clock, i18n, money
from billing.i18n import gettext as _, ngettext
from billing.db import one, rows
from billing.settings import Settings


# Invoice lines are stored as written when issued (they also go to PayTR in the basket):
# "Team plan, 14.12.2026 – 14.01.2027", "Upgrade Starter → Team, 12 of 30 days until 14.01.2027".
# Shown, they are rewritten in the reader's language and the document's one date style.
_D = r"(\d{2})\.(\d{2})\.(\d{4})"
_PERIOD_LINE = re.compile(rf"^(?P<plan>.+) plan, {_D} – {_D}$")
_UPGRADE_LINE = re.compile(rf"^Upgrade (?P<old>.+) → (?P<new>.+), (?P<days>\d+) (?:of (?P<of>\d+) )?days until {_D}$")


def _day(day: str, month: str, year: str) -> str:
    return i18n.date_text(date(int(year), int(month), int(day)))


def line_text(description: str | None) -> str:
    """An invoice line (or a payment's description) as the reader reads it: "Team plan,
    14 December 2026 – 14 January 2027" / "Team planı, 14 Aralık 2026 – 14 Ocak 2027"."""
    text = description or ""
    try:
        if found := _PERIOD_LINE.match(text):
            g = found.groups()
            return _("%(plan)s plan, %(start)s – %(end)s", plan=found["plan"], start=_day(*g[1:4]), end=_day(*g[4:7]))
        if found := _UPGRADE_LINE.match(text):
            until = _day(*found.groups()[-3:])
            days = int(found["days"])
            if found["of"]:
                return ngettext("Upgrade %(old)s → %(new)s, %(days)d of %(num)d day until %(date)s",
                                "Upgrade %(old)s → %(new)s, %(days)d of %(num)d days until %(date)s",
                                int(found["of"]), old=found["old"], new=found["new"], days=days, date=until)
            return ngettext("Upgrade %(old)s → %(new)s, %(num)d day until %(date)s",
                            "Upgrade %(old)s → %(new)s, %(num)d days until %(date)s",
                            days, old=found["old"], new=found["new"], date=until)
    except ValueError:  # not a real date: show the line as stored
        pass
    return text


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
        "payment_id": payment["id"], "issued_at": clock.iso(now), **seller(settings),
        **billing_details.invoice_buyer(company), "buyer_email": buyer_email, "paid_with": paid_with(payment, company),
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


def seller(settings: Settings) -> dict:
    """The seller's details as a document copies them when it is issued (invoices, credit notes):
    a later change of address or name never rewrites an issued document."""
    return {"seller_name": settings.seller_name, "seller_address": settings.seller_address,
            "seller_tax_id": settings.seller_tax_id, "seller_tax_office": settings.seller_tax_office,
            "seller_mersis": settings.seller_mersis or None, "seller_email": settings.seller_email or None,
            "seller_website": settings.seller_website or None}


def paid_with(payment: dict, company: dict) -> str | None:
    """The card that paid, as stored ("Visa ending 4242"), when we know it: a charge to the saved
    card renewals use (the charge synced the card list first, so its label is current). A card typed
    into PayTR's form is never shown to us, so that payment's card stays unnamed."""
    if payment.get("method") == "recurring":
        return company.get("paytr_card_label") or None
    return None


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


def document(db: Database, number: str, company_id: int | None = None) -> dict | None:
    """An invoice as its document shows it: lines, the payment's reference (merchant_oid) and when it
    was paid. With `company_id`, only that company's invoice (anyone else's reads as missing)."""
    sql = """SELECT i.*, p.merchant_oid, p.decided_at AS paid_at FROM invoices i
             JOIN payments p ON p.id = i.payment_id WHERE i.number = ?"""
    invoice = one(db, sql + (" AND i.company_id = ?" if company_id is not None else ""),
                  [number] + ([company_id] if company_id is not None else []))
    if invoice:
        invoice["lines"] = rows(db, "SELECT * FROM invoice_lines WHERE invoice_id = ? ORDER BY id", [invoice["id"]])
    return invoice


def for_company(db: Database, company_id: int, limit: int = 100) -> list[dict]:
    return rows(db, "SELECT * FROM invoices WHERE company_id = ? ORDER BY id DESC LIMIT ?", [company_id, limit])
