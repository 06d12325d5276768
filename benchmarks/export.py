"""The accountant's month for 10,000 invoices: time and memory for CSV and XLSX.

    .venv/bin/python benchmarks/export.py [--invoices 10000] [--credit-notes 500]

Seeds one month (December 2026, Istanbul) directly: invoices with their payments, and credit
notes with their refunds, spread over the month with Turkish names and addresses. Then writes
each format twice: once timed (nothing traced), once under tracemalloc for the peak of Python
allocations; and prints the process's peak resident memory. Targets: ≤ 10 s, ≤ 200 MB.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from billing import accounts, clock, migrations, settings as settings_module  # noqa: E402
from billing.db import Store, write  # noqa: E402
from billing.documents import export  # noqa: E402

MONTH_START = clock.parse("2026-11-30T21:00:00Z")  # 1 December 2026, 00:00 in Istanbul
SELLER = ("PayTR Billing Demo Ltd. Şti.", "Büyükdere Cad. No:1, Şişli, İstanbul", "1234567890", "Zincirlikuyu")


def seed(db, invoices: int, credit_notes: int) -> None:
    now = clock.utcnow()
    with write(db):
        company = accounts.register(db, now, settings_module.Settings(), company_name="Yılmaz Yazılım A.Ş.",
                                    name="Ayşe Yılmaz", email="ayse@example.com", password_hash="x")
        step = timedelta(days=31) / invoices
        payments, rows = [], []
        for n in range(1, invoices + 1):
            at = clock.iso(MONTH_START + step * (n - 1))
            total = 34800 if n % 3 else 118800
            net = total * 100 // 120
            payments.append((n, company["id"], f"oid{n:08d}", total, at, at, at))
            rows.append((n, f"INV-2026-{n:06d}", n, company["id"], n, at, *SELLER, f"Müşteri Şirketi {n} Ltd. Şti.",
                         "ayse@example.com", f"Atatürk Cad. No:{n}, Çankaya, Ankara", "Çankaya", "1234567802",
                         "TRY" if n % 10 else "USD", net, total - net, "20", total, "Visa ending 4358"))
        db.conn.executemany(
            """INSERT INTO payments (id, company_id, merchant_oid, kind, plan, amount, currency, test_mode, status,
                                     email, created_at, updated_at, decided_at)
               VALUES (?, ?, ?, 'subscribe', 'team', ?, 'TRY', 1, 'succeeded', 'ayse@example.com', ?, ?, ?)""",
            payments)
        db.conn.executemany(
            """INSERT INTO invoices (id, number, year, sequence, company_id, payment_id, issued_at, seller_name,
                 seller_address, seller_tax_id, seller_tax_office, buyer_name, buyer_email, buyer_address,
                 buyer_tax_office, buyer_tax_id, currency, net, vat, vat_rate, total, paid_with)
               VALUES (?, ?, 2026, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""", rows)
        for n in range(1, credit_notes + 1):
            invoice = rows[n * (invoices // max(credit_notes, 1)) - 1]
            at = clock.iso(clock.parse(invoice[5]) + timedelta(minutes=1))
            refund = db.conn.execute(
                """INSERT INTO refunds (payment_id, company_id, amount, currency, reason, reference_no, request_key,
                                        status, requested_by, created_at, decided_at)
                   VALUES (?, ?, 12000, ?, 'Müşteri talebi', ?, ?, 'succeeded', 'staff:1', ?, ?)""",
                [invoice[0], company["id"], invoice[16], f"r{n}", f"k{n}", at, at]).lastrowid
            db.conn.execute(
                """INSERT INTO credit_notes (number, year, sequence, invoice_id, refund_id, company_id, issued_at,
                     seller_name, seller_address, seller_tax_id, seller_tax_office, buyer_name, buyer_email,
                     buyer_address, buyer_tax_office, buyer_tax_id, currency, net, vat, vat_rate, total, reason)
                   VALUES (?, 2026, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 10000, 2000, '20', 12000,
                           'Müşteri talebi')""",
                [f"CN-2026-{n:06d}", n, invoice[0], refund, company["id"], at, *SELLER, *invoice[11:17]])


def measure(db, settings, fmt: str, out: Path) -> tuple[float, float, int]:
    started = time.perf_counter()
    count = export.write_file(out, db, settings, "2026-12", fmt)
    seconds = time.perf_counter() - started
    tracemalloc.start()
    export.write_file(out, db, settings, "2026-12", fmt)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak / 2**20, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=10_000)
    parser.add_argument("--credit-notes", type=int, default=500)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="export-bench-"))
    try:
        settings = settings_module.load({"BILLING_DATA_DIR": str(directory / "data")}, env_file=None)
        store = Store(settings.database_path, settings=settings)
        db = store.db()
        with write(db):
            migrations.apply(db)
        started = time.perf_counter()
        seed(db, args.invoices, args.credit_notes)
        print(f"seeded {args.invoices} invoices and {args.credit_notes} credit notes in "
              f"{time.perf_counter() - started:.1f} s")
        for fmt in export.FORMATS:
            out = directory / f"invoices-2026-12.{fmt}"
            seconds, peak, count = measure(db, settings, fmt, out)
            print(f"{fmt:4}: {count} rows in {seconds:.2f} s, {os.path.getsize(out) / 2**20:.1f} MB file, "
                  f"Python peak {peak:.1f} MB (tracemalloc)")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"process peak resident memory (seeding included): {rss:.0f} MB")
        store.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
