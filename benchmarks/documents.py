"""How long documents take: an invoice's PDF rendered, its cached re-download, and (added by the
export's branch) the month's export.

    .venv/bin/python benchmarks/documents.py [--invoices 50]

Issues `--invoices` invoices through the real payment path (checkout, PayTR's success callback,
invoices.issue) for companies with full Turkish billing details, then prints:
- render: billing.documents.invoice_pdf for each invoice, uncached (template + WeasyPrint), p50/p95;
  the first render, which loads WeasyPrint and Pango, is reported apart (once per process);
- cached: the same call again, which reads data/documents/ (the download's second time), p50/p95.
Targets (issue 10): render p50 <= 150 ms, cached <= 5 ms.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from billing import accounts, clock, migrations, payments, settings as settings_module  # noqa: E402
from billing.db import Store, rows, write  # noqa: E402
from billing.documents import invoice_pdf, pdf  # noqa: E402
from billing.paytr import protocol  # noqa: E402

NOW = clock.parse("2026-12-11T09:00:00Z")
SELLER = {"SELLER_LEGAL_NAME": "Çağlayan Öğüt Yazılım Ltd. Şti.", "SELLER_ADDRESS": "Büyükdere Cad. No:1, Şişli, İstanbul",
          "SELLER_TAX_OFFICE": "Zincirlikuyu", "SELLER_TAX_NUMBER": "4540536920", "SELLER_MERSIS": "0454053692000015",
          "SELLER_EMAIL": "fatura@example.com", "SELLER_WEBSITE": "https://example.com"}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def seed(db, settings, count: int) -> list[str]:
    """`count` paid invoices, each for its own company with billing details."""
    with write(db):
        migrations.apply(db)
    password_hash = accounts.hash_password("benchmark password 1")
    for i in range(count):
        user = accounts.register(db, NOW, settings, company_name=f"Işıl Ünlü Yazılım {i} A.Ş.", name=f"Ayşe Çelik {i}",
                                 email=f"owner{i}@example.com", password_hash=password_hash)
        with write(db):
            db.conn.execute(
                """UPDATE companies SET billing_legal_name = ?, billing_tax_office = 'Üsküdar',
                   billing_tax_id = '10000000146', billing_address = ? WHERE id = ?""",
                [f"Işıl Ünlü Yazılım {i} Anonim Şirketi", "Çiçek Sok. No:3 DAĞ APT.\nÜsküdar / İstanbul",
                 user["company_id"]])
        checkout = payments.start_checkout(db, NOW, settings, user=user, plan_code="starter", ip="85.34.78.112")
        payment = checkout.payment
        form = protocol.callback_form(
            merchant_oid=payment["merchant_oid"], status="success", total_amount=payment["amount"],
            key=str(settings.paytr_merchant_key), salt=str(settings.paytr_merchant_salt),
            currency=payment["currency"], test_mode="1", payment_amount=payment["amount"])
        callback = protocol.parse_callback(form, str(settings.paytr_merchant_key), str(settings.paytr_merchant_salt))
        payments.apply_callback(db, NOW + timedelta(minutes=1), settings, callback, "203.0.113.9")
    return [r["number"] for r in rows(db, "SELECT number FROM invoices ORDER BY id")]


def invoice_pdfs(db, settings, numbers: list[str]) -> dict:
    """Render every invoice once (uncached), then download each again (cached). Milliseconds."""
    shutil.rmtree(pdf.cache_dir(settings), ignore_errors=True)
    started = time.perf_counter()
    invoice_pdf.invoice_pdf(db, settings, numbers[0], "tr")  # the first: WeasyPrint and Pango load
    first = (time.perf_counter() - started) * 1000
    rendered, cached, sizes = [], [], []
    for number in numbers:
        started = time.perf_counter()
        document = invoice_pdf.invoice_pdf(db, settings, number, "en")
        rendered.append((time.perf_counter() - started) * 1000)
        sizes.append(len(document))
    for number in numbers:
        started = time.perf_counter()
        invoice_pdf.invoice_pdf(db, settings, number, "en")
        cached.append((time.perf_counter() - started) * 1000)
    return {"first": first, "rendered": rendered, "cached": cached, "size": statistics.median(sizes)}


def export_month(invoices: int = 10_000, credit_notes: int = 500) -> list[str]:
    """The month's export of `invoices` invoices and `credit_notes` credit notes (benchmarks/export.py's
    seeding), CSV and XLSX: time and Python peak memory (targets: <= 10 s, <= 200 MB)."""
    from benchmarks import export as export_bench
    from billing import migrations
    from billing.db import write
    from billing.documents import export

    lines = []
    directory = Path(tempfile.mkdtemp(prefix="export-bench-"))
    try:
        settings = settings_module.load({"BILLING_DATA_DIR": str(directory / "data")}, env_file=None)
        store = Store(settings.database_path, settings=settings)
        db = store.db()
        with write(db):
            migrations.apply(db)
        export_bench.seed(db, invoices, credit_notes)
        for fmt in export.FORMATS:
            seconds, peak, count = export_bench.measure(db, settings, fmt, directory / f"month.{fmt}")
            lines.append(f"month export {fmt:4}: {count} documents in {seconds:.2f} s, Python peak {peak:.1f} MB "
                         "(targets <= 10 s, <= 200 MB)")
        store.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=50)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="documents-bench-"))
    try:
        settings = settings_module.load({"BILLING_DATA_DIR": str(directory), "BILLING_SCHEDULER": "0",
                                         "PAYTR_RECURRING": "0", **SELLER}, env_file=None)
        store = Store(settings.database_path, settings=settings)
        db = store.db()
        started = time.perf_counter()
        numbers = seed(db, settings, args.invoices)
        print(f"seeded {len(numbers)} paid invoices in {time.perf_counter() - started:.1f} s")
        figures = invoice_pdfs(db, settings, numbers)
        print(f"first PDF in the process (loads WeasyPrint): {figures['first']:.0f} ms")
        print(f"invoice PDF, rendered:  p50 {percentile(figures['rendered'], .5):6.1f} ms   "
              f"p95 {percentile(figures['rendered'], .95):6.1f} ms   (target p50 <= 150 ms; "
              f"{figures['size'] / 1024:.0f} KiB each)")
        print(f"invoice PDF, cached:    p50 {percentile(figures['cached'], .5):6.2f} ms   "
              f"p95 {percentile(figures['cached'], .95):6.2f} ms   (target <= 5 ms)")
        store.close()
        for line in export_month():
            print(line)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
