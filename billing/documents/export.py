"""The accountant's monthly export: every invoice and credit note issued in a month, as CSV or XLSX.

Choices an accountant would make, and why:

- The month is the seller's local month (settings.tz): a payment at 00:30 on 1 January in
  Istanbul is January's even though it is still 31 December in UTC. The local month's
  boundaries are converted to UTC once, and the indexed `issued_at` columns are compared with
  them, so nothing is converted per row in SQL.
- Dates are ISO (2026-12-31). Every Excel, whatever its language, reads that as a date (a
  Turkish Excel also reads 31.12.2026, an English one does not), integrators' import formats
  (e-Arşiv, GİB's XML) are ISO, and it sorts as text. In the XLSX they are real date cells.
- A credit note's amounts are negative, with "İade Faturası" in the type column: summing a
  column gives the month's net sales, which is what goes on the VAT return (KDV beyannamesi),
  and the type column still tells the documents apart for a ledger that wants positives.
- Rows are in the order documents were issued (their instant, then their number): that is
  date order, and within a day the order the numbers were taken.
- Amounts are decimal numbers (12,34 in the CSV, numbers in the XLSX), never "₺12,34" text
  that Excel cannot add up. The currency has its own column; totals are per currency.

It streams: one SQL cursor, one row at a time, written straight to the file; the totals are
added up while writing, so they are exactly the sum of the rows written (10,000 invoices in
benchmarks/export.py).
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from sqlite_utils import Database

from billing import clock, i18n
from billing.i18n import gettext as _, pgettext
from billing.settings import Settings

FORMATS = ("csv", "xlsx")
DEFAULT_LOCALE = "tr"  # an accountant in Türkiye: Turkish headers and "Fatura" / "İade Faturası"
INVOICE, CREDIT_NOTE = "invoice", "credit_note"
AMOUNTS = ("net", "vat", "total")
_MONTH = re.compile(r"(\d{4})-(\d{2})")


class ExportError(ValueError):
    """Bad input (a month or a format): nothing was written."""


def parse_month(text: str | None) -> tuple[int, int]:
    """'2026-12' -> (2026, 12); anything else is refused with a message a person can act on."""
    found = _MONTH.fullmatch((text or "").strip())
    if not found or not (1 <= int(found[2]) <= 12) or not (2000 <= int(found[1]) <= 9999):
        raise ExportError(_("“%(month)s” is not a month like 2026-12.", month=(text or "")[:20]))
    return int(found[1]), int(found[2])


FILE_FORMATS = (*FORMATS, "zip")  # zip: the month's documents as PDFs (billing/documents/archive.py)


def check_format(text: str | None) -> str:
    fmt = (text or "").strip().lower()
    if fmt not in FILE_FORMATS:
        raise ExportError(_("“%(format)s” is not a format we export: choose csv, xlsx or zip.",
                            format=(text or "")[:20]))
    return fmt


def month_bounds(settings: Settings, month: str) -> tuple[str, str]:
    """The local month as [start, end) UTC instants in the form `issued_at` is stored in."""
    year, number = parse_month(month)
    after = (year + 1, 1) if number == 12 else (year, number + 1)
    start = datetime(year, number, 1, tzinfo=settings.tz)
    end = datetime(*after, 1, tzinfo=settings.tz)
    return clock.iso(start.astimezone(UTC)), clock.iso(end.astimezone(UTC))


def previous_month(settings: Settings, now: datetime) -> str:
    """The month an accountant asks for at the start of the next one (the default)."""
    local = now.astimezone(settings.tz)
    year, number = (local.year - 1, 12) if local.month == 1 else (local.year, local.month - 1)
    return f"{year:04d}-{number:02d}"


def filename(month: str, fmt: str) -> str:
    return f"invoices-{month}.{fmt}"


# One query, both kinds of document, ordered as issued. A credit note carries its invoice's
# payment reference and card (the money went back to that card); its payment date is the day
# the refund succeeded.
_QUERY = """
SELECT 'invoice' AS kind, i.number, i.issued_at, i.buyer_name, i.buyer_tax_id, i.buyer_tax_office, i.buyer_address,
       i.net, i.vat_rate, i.vat, i.total, i.currency, NULL AS original_invoice, p.merchant_oid,
       COALESCE(p.decided_at, i.issued_at) AS paid_at, i.paid_with
  FROM invoices i JOIN payments p ON p.id = i.payment_id
 WHERE i.issued_at >= :start AND i.issued_at < :end
UNION ALL
SELECT 'credit_note', c.number, c.issued_at, c.buyer_name, c.buyer_tax_id, c.buyer_tax_office, c.buyer_address,
       -c.net, c.vat_rate, -c.vat, -c.total, c.currency, i.number, p.merchant_oid,
       COALESCE(r.decided_at, c.issued_at), i.paid_with
  FROM credit_notes c JOIN invoices i ON i.id = c.invoice_id JOIN payments p ON p.id = i.payment_id
  LEFT JOIN refunds r ON r.id = c.refund_id
 WHERE c.issued_at >= :start AND c.issued_at < :end
ORDER BY 3, 2
"""

COLUMNS = ("type", "number", "date", "buyer_name", "buyer_tax_id", "buyer_tax_office", "buyer_address", "net",
           "vat_rate", "vat", "total", "currency", "original_invoice", "merchant_oid", "payment_date", "paid_with")


def headers(locale: str = DEFAULT_LOCALE) -> list[str]:
    """The header row in the export's language; the tax terms stay the ones a Turkish ledger uses."""
    with i18n.using(locale):
        return [_("Document type"), _("Document number"), _("Date"), _("Buyer"), _("VKN/TCKN"), _("Tax office"),
                _("Address"), _("Net (excl. VAT)"), _("VAT rate (%)"), _("VAT"), _("Total"), _("Currency"),
                pgettext("export column", "Original invoice"), _("Payment reference (merchant_oid)"), _("Payment date"), _("Paid with")]


def type_names(locale: str = DEFAULT_LOCALE) -> dict[str, str]:
    with i18n.using(locale):
        return {INVOICE: _("Invoice"), CREDIT_NOTE: _("Credit note"), "total": _("Total")}


def _minor(amount: int) -> Decimal:
    return Decimal(amount).scaleb(-2)


def rows(db: Database, settings: Settings, month: str, locale: str = DEFAULT_LOCALE) -> Iterator[dict]:
    """One dict per invoice and credit note issued in `month` (local time), keys as COLUMNS,
    amounts as Decimal (a credit note's negative), dates as `date`. Read from the cursor as
    the caller consumes them: nothing is loaded whole."""
    start, end = month_bounds(settings, month)
    names = type_names(locale)
    tz = settings.tz
    cursor = db.conn.execute(_QUERY, {"start": start, "end": end})
    for (kind, number, issued_at, buyer_name, tax_id, tax_office, address, net, vat_rate, vat, total, currency,
         original, merchant_oid, paid_at, paid_with) in cursor:
        yield {"kind": kind, "type": names[kind], "number": number, "date": _local_day(issued_at, tz),
               "buyer_name": buyer_name, "buyer_tax_id": tax_id or "", "buyer_tax_office": tax_office or "",
               "buyer_address": address or "", "net": _minor(net), "vat_rate": Decimal(vat_rate), "vat": _minor(vat),
               "total": _minor(total), "currency": currency, "original_invoice": original or "",
               "merchant_oid": merchant_oid, "payment_date": _local_day(paid_at, tz) if paid_at else None,
               "paid_with": paid_with or ""}


def _local_day(instant: str, tz) -> date:
    return clock.parse(instant).astimezone(tz).date()


def summary(db: Database, settings: Settings, month: str) -> dict:
    """What the month holds, before downloading: counts, and per currency the signed totals
    (credit notes subtract), the same figures as the file's totals rows."""
    start, end = month_bounds(settings, month)
    found = db.conn.execute(
        """SELECT currency, SUM(kind = 'invoice'), SUM(kind = 'credit_note'), SUM(net), SUM(vat), SUM(total) FROM (
             SELECT 'invoice' AS kind, currency, net, vat, total FROM invoices
              WHERE issued_at >= :start AND issued_at < :end
             UNION ALL
             SELECT 'credit_note', currency, -net, -vat, -total FROM credit_notes
              WHERE issued_at >= :start AND issued_at < :end)
           GROUP BY currency ORDER BY currency""", {"start": start, "end": end}).fetchall()
    currencies = [{"currency": currency, "invoices": invoices, "credit_notes": notes, "net": net, "vat": vat,
                   "total": total} for currency, invoices, notes, net, vat, total in found]
    return {"month": month, "invoices": sum(c["invoices"] for c in currencies),
            "credit_notes": sum(c["credit_notes"] for c in currencies), "currencies": currencies}


class _Totals:
    def __init__(self):
        self.by_currency: dict[str, dict[str, Decimal]] = {}

    def add(self, row: dict) -> None:
        sums = self.by_currency.setdefault(row["currency"], dict.fromkeys(AMOUNTS, Decimal(0)))
        for key in AMOUNTS:
            sums[key] += row[key]


# --- CSV -------------------------------------------------------------------------------------


def _decimal_comma(value: Decimal) -> str:
    # Turkish Excel reads "1234,50" as a number; no thousands separator, which importers misread.
    return format(value, "f").replace(".", ",")


def _csv_value(key: str, value) -> str:
    if value is None:
        return ""
    if key == "vat_rate":
        return _decimal_comma(value.quantize(Decimal(1)) if value == value.to_integral() else value)
    if isinstance(value, Decimal):
        return _decimal_comma(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def write_csv(out, db: Database, settings: Settings, month: str, locale: str = DEFAULT_LOCALE) -> int:
    """To a text file opened with newline="" and encoding "utf-8-sig" (the BOM makes Excel read
    UTF-8, so Ç, Ş, İ and ₺ stay intact); `;` separates, because Turkish Excel's list separator is
    `;` (the comma is its decimal mark). Returns the number of documents written."""
    writer = csv.writer(out, delimiter=";")
    writer.writerow(headers(locale))
    totals, count = _Totals(), 0
    for row in rows(db, settings, month, locale):
        writer.writerow([_csv_value(key, row[key]) for key in COLUMNS])
        totals.add(row)
        count += 1
    if totals.by_currency:
        writer.writerow([])  # a blank line: the totals are not documents
        label = type_names(locale)["total"]
        for currency, sums in sorted(totals.by_currency.items()):
            line = dict.fromkeys(COLUMNS, "")
            line.update(type=label, currency=currency, **{k: _decimal_comma(v) for k, v in sums.items()})
            writer.writerow([line[key] for key in COLUMNS])
    return count


# --- XLSX ------------------------------------------------------------------------------------

_WIDTHS = {"type": 16, "number": 17, "date": 11, "buyer_name": 32, "buyer_tax_id": 13, "buyer_tax_office": 16,
           "buyer_address": 40, "net": 13, "vat_rate": 8, "vat": 12, "total": 13, "currency": 8,
           "original_invoice": 17, "merchant_oid": 24, "payment_date": 11, "paid_with": 20}
MONEY_FORMAT = "#,##0.00"
DATE_FORMAT = "yyyy-mm-dd"


def _letter(key: str) -> str:
    from openpyxl.utils import get_column_letter

    return get_column_letter(COLUMNS.index(key) + 1)


def write_xlsx(path: str | Path, db: Database, settings: Settings, month: str, locale: str = DEFAULT_LOCALE) -> int:
    """A workbook in openpyxl's write-only mode (rows go to disk as written, memory stays flat):
    a header, the documents, then one totals row per currency whose amounts are SUMIF formulas
    over the rows above, so a corrected or filtered sheet still adds up. Returns the count."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    workbook = Workbook(write_only=True)
    with i18n.using(locale):
        sheet = workbook.create_sheet(_("Documents %(month)s", month=month))
    for key, width in _WIDTHS.items():
        sheet.column_dimensions[_letter(key)].width = width
    sheet.freeze_panes = "A2"
    bold = Font(bold=True)

    def styled(value, number_format=None, font=None):
        cell = WriteOnlyCell(sheet, value=value)
        if number_format:
            cell.number_format = number_format
        if font:
            cell.font = font
        return cell

    sheet.append([styled(text, font=bold) for text in headers(locale)])
    formats = {"net": MONEY_FORMAT, "vat": MONEY_FORMAT, "total": MONEY_FORMAT, "date": DATE_FORMAT,
               "payment_date": DATE_FORMAT}
    currencies: set[str] = set()
    count = 0
    for row in rows(db, settings, month, locale):
        sheet.append([styled(row[key], formats[key]) if key in formats else row[key] for key in COLUMNS])
        currencies.add(row["currency"])
        count += 1
    if count:
        first, last = 2, count + 1
        sheet.append([])
        label = type_names(locale)["total"]
        money_col = _letter("currency")
        for currency in sorted(currencies):
            line: list = [None] * len(COLUMNS)
            line[COLUMNS.index("type")] = styled(label, font=bold)
            line[COLUMNS.index("currency")] = styled(currency, font=bold)
            for key in AMOUNTS:
                column = _letter(key)
                line[COLUMNS.index(key)] = styled(
                    f'=SUMIF(${money_col}${first}:${money_col}${last},"{currency}",'
                    f'{column}{first}:{column}{last})', MONEY_FORMAT, bold)
            sheet.append(line)
    workbook.save(path)
    return count


# --- to a file, whole or not at all ------------------------------------------------------------


def write_file(path: str | Path, db: Database, settings: Settings, month: str, fmt: str,
               locale: str = DEFAULT_LOCALE) -> int:
    """Write the export to `path`: to a temporary file beside it, renamed when complete, so a
    failure (a bad month, a full disk) leaves no half file and an older export as it was."""
    parse_month(month)
    fmt = check_format(fmt)
    target = Path(path)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        if fmt == "csv":
            with os.fdopen(handle, "w", encoding="utf-8-sig", newline="") as out:
                count = write_csv(out, db, settings, month, locale)
        elif fmt == "zip":
            from billing.documents import archive

            with os.fdopen(handle, "wb") as out:
                count = archive.month_zip(db, settings, month, out, locale)
        else:
            os.close(handle)
            count = write_xlsx(temporary, db, settings, month, locale)
        os.replace(temporary, target)
    except BaseException:
        with _suppress():
            os.unlink(temporary)
        raise
    return count


def _suppress():
    import contextlib

    return contextlib.suppress(FileNotFoundError)
