"""Credit notes ("İade Faturası"): the document for money a refund returned.

Issued inside the transaction that records a refund as succeeded (`refunds.settle`, which both
PayTR's immediate answer and its status query go through), so a refund PayTR refuses, or a
transaction that rolls back, takes no number: like invoices, the number comes from
`credit_note_counters` under the write lock, and a rollback gives it back.

Amounts. A credit note credits part of one invoice, at the invoice's VAT rate:
- a partial note splits its amount with `money.split_gross`, the rule invoices follow
  (vat == round_half_up(net × rate)). About one amount in six at 20 % has no such split (3 kuruş:
  nets 2 and 3 give 2 and 4); then VAT is the amount's VAT share rounded half up
  (round_half_up(amount × rate / (100 + rate))) and net the rest, one kuruş from the invoice rule at
  most. Either way neither part exceeds what is left of the invoice's net or VAT;
- the note that leaves nothing of the invoice takes exactly what is left of its net and VAT, so
  the notes of an invoice add up to it to the kuruş, and that note says the invoice is fully credited.
A refund never credits more than is left of the invoice (what the customer paid above the invoice,
e.g. a mismatched payment, was never invoiced); a refund of a payment without an invoice, or of an
invoice already fully credited, issues no note, and the audit trail says so.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from sqlite_utils import Database

from billing import clock, events, money
from billing.db import one, rows
from billing.settings import Settings

# The columns copied from the invoice as they were when it was issued.
_COPIED = ("seller_name", "seller_address", "seller_tax_id", "seller_tax_office", "seller_mersis", "seller_email",
           "seller_website", "buyer_name", "buyer_email", "buyer_address", "buyer_tax_office", "buyer_tax_id")
_REQUIRED = {"seller_name", "seller_address", "seller_tax_id", "seller_tax_office", "buyer_name", "buyer_email"}


def next_number(db: Database, year: int) -> tuple[int, str]:
    sequence = db.conn.execute(
        """INSERT INTO credit_note_counters (year, last_number) VALUES (?, 1)
           ON CONFLICT (year) DO UPDATE SET last_number = last_number + 1 RETURNING last_number""",
        [year]).fetchone()[0]
    return sequence, f"CN-{year}-{sequence:06d}"


def split(amount: int, rate: Decimal, left_net: int, left_vat: int) -> tuple[int, int]:
    """(net, vat) of a credit note of `amount` when `left_net` + `left_vat` of the invoice is still
    uncredited (the module's docstring says why each case)."""
    if amount >= left_net + left_vat:
        return left_net, left_vat
    try:
        net, vat = money.split_gross(amount, rate)
    except money.MoneyError:
        vat = int((Decimal(amount) * rate / (100 + rate)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        net = amount - vat
    # Keep the rest of the invoice creditable: a later note must never need a negative net or VAT.
    if net > left_net:
        net, vat = left_net, amount - left_net
    elif vat > left_vat:
        net, vat = amount - left_vat, left_vat
    return net, vat


def issue(db: Database, now: datetime, settings: Settings, refund: dict) -> dict | None:
    """The credit note for a refund that has just succeeded; call inside the `write(db)` that
    records it. None (and an audit event saying why) when there is nothing to credit."""
    invoice = one(db, "SELECT * FROM invoices WHERE payment_id = ?", [refund["payment_id"]])
    if invoice is None:
        events.record(db, now, "credit_note.none", "No credit note: the refunded payment has no invoice",
                      company_id=refund["company_id"], reference_no=refund["reference_no"])
        return None
    credited = one(db, "SELECT coalesce(sum(net), 0) AS net, coalesce(sum(vat), 0) AS vat FROM credit_notes "
                       "WHERE invoice_id = ?", [invoice["id"]])
    left_net, left_vat = invoice["net"] - credited["net"], invoice["vat"] - credited["vat"]
    amount = min(refund["amount"], left_net + left_vat)
    if amount <= 0:
        events.record(db, now, "credit_note.none",
                      f"No credit note: invoice {invoice['number']} is already fully credited",
                      company_id=refund["company_id"], reference_no=refund["reference_no"])
        return None
    net, vat = split(amount, Decimal(invoice["vat_rate"]), left_net, left_vat)
    year = now.astimezone(settings.tz).year  # the document's date is local, as for invoices
    sequence, number = next_number(db, year)
    note = {
        "number": number, "year": year, "sequence": sequence, "invoice_id": invoice["id"], "refund_id": refund["id"],
        "company_id": invoice["company_id"], "issued_at": clock.iso(now),
        **{key: invoice.get(key) or ("" if key in _REQUIRED else None) for key in _COPIED},
        "currency": invoice["currency"], "net": net, "vat": vat, "vat_rate": invoice["vat_rate"], "total": amount,
        "reason": refund["reason"], "full_credit": int(amount == left_net + left_vat),
    }
    note["id"] = db.conn.execute(f"INSERT INTO credit_notes ({', '.join(note)}) VALUES ({', '.join('?' * len(note))})",
                                 list(note.values())).lastrowid
    events.record(db, now, "credit_note.issued",
                  f"Credit note {number} for {money.format(amount, note['currency'])} against invoice "
                  f"{invoice['number']}" + (" (fully credited)" if note["full_credit"] else ""),
                  company_id=note["company_id"], credit_note=number, invoice=invoice["number"], amount=amount,
                  reference_no=refund["reference_no"])
    return note


def by_number(db: Database, number: str, company_id: int | None = None) -> dict | None:
    """A credit note with its invoice's number and date (`invoice_number`, `invoice_issued_at`);
    with `company_id`, only if it belongs to that company (staff pass None)."""
    note = one(db, """SELECT c.*, i.number AS invoice_number, i.issued_at AS invoice_issued_at, i.total AS invoice_total,
                             r.reference_no AS refund_reference, p.merchant_oid
                      FROM credit_notes c JOIN invoices i ON i.id = c.invoice_id
                      JOIN refunds r ON r.id = c.refund_id JOIN payments p ON p.id = r.payment_id
                      WHERE c.number = ?""", [number])
    if note is None or (company_id is not None and note["company_id"] != company_id):
        return None
    return note


def for_invoice(db: Database, invoice_id: int) -> list[dict]:
    return rows(db, "SELECT * FROM credit_notes WHERE invoice_id = ? ORDER BY id", [invoice_id])


def for_company(db: Database, company_id: int) -> dict[str, list[dict]]:
    """A company's credit notes by their invoice's number, oldest first: listed under each invoice."""
    grouped: dict[str, list[dict]] = {}
    for note in rows(db, """SELECT c.*, i.number AS invoice_number FROM credit_notes c
                            JOIN invoices i ON i.id = c.invoice_id WHERE c.company_id = ? ORDER BY c.id""",
                     [company_id]):
        grouped.setdefault(note["invoice_number"], []).append(note)
    return grouped


def for_refunds(db: Database, refund_ids: list[int]) -> dict[int, str]:
    """refund id -> its credit note's number."""
    if not refund_ids:
        return {}
    return {r["refund_id"]: r["number"] for r in rows(
        db, f"SELECT refund_id, number FROM credit_notes WHERE refund_id IN ({', '.join('?' * len(refund_ids))})",
        list(refund_ids))}
