"""A month's documents as one ZIP of PDFs, for the accountant beside the export's rows."""

from __future__ import annotations

import zipfile
from datetime import datetime
from typing import IO

from sqlite_utils import Database

from billing.documents import export
from billing.settings import Settings


def month_zip(db: Database, settings: Settings, month: str, out: IO[bytes], locale: str = "tr") -> int:
    """Write every invoice and credit note issued in `month` (the seller's local time) as
    `INV-….pdf` / `CN-….pdf` into a ZIP on `out`; returns how many. PDFs come from the
    content cache, so a second ZIP of the same month renders nothing."""
    from billing.documents.credit_note_pdf import credit_note_pdf
    from billing.documents.invoice_pdf import invoice_pdf

    start, end = export.month_bounds(settings, month)
    count = 0
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for table, make in (("invoices", invoice_pdf), ("credit_notes", credit_note_pdf)):
            numbers = [row[0] for row in db.conn.execute(
                f"SELECT number FROM {table} WHERE issued_at >= ? AND issued_at < ? ORDER BY number",
                [start, end])]
            for number in numbers:
                pdf = make(db, settings, number, locale)
                if pdf is not None:
                    archive.writestr(f"{number}.pdf", pdf)
                    count += 1
    return count
