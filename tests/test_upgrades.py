"""Upgrading across schema versions: a database written by any earlier release migrates to the
latest with its customers, money and documents intact, and the pages' read paths work on it.

The fixtures are generated from the migration list itself: for each K, a fresh file gets
m001..mK, then the rows a customer of that release would have (only the tables and columns that
existed then), then the remaining migrations. A new migration is covered without touching this file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from billing import dashboard, migrations, staff
from billing.customer_search import fts_phrase
from billing.i18n import search_fold
from billing.db import Store, one, rows, scalar, write

ROOT = Path(__file__).resolve().parent.parent
NAMES = migrations.names()
NOW = datetime(2026, 12, 20, 9, 0, tzinfo=UTC)

# One customer as every release would have stored it: the newest columns are simply left out
# where an older table lacks them.
T = "2026-11-27T09:00:00Z"
SEED = [
    ("companies", {"id": 7, "name": "Yılmaz Yazılım A.Ş.", "timezone": "Europe/Istanbul", "created_at": T,
                   "billing_legal_name": "Yılmaz Yazılım Anonim Şirketi", "billing_tax_id": "1234567890",
                   "billing_tax_office": "Kadıköy", "billing_address": "Moda Cd. 1, İstanbul",
                   "external_id": "host-7"}),
    ("users", {"id": 1, "company_id": None, "email": "ops@example.com", "name": "Ops", "password_hash": "x",
               "role": "staff", "staff_role": "admin", "created_at": T, "password_changed_at": T}),
    ("users", {"id": 2, "company_id": 7, "email": "ayse@example.com", "name": "Ayşe Yılmaz", "password_hash": "x",
               "role": "owner", "created_at": T, "password_changed_at": T}),
    ("users", {"id": 3, "company_id": 7, "email": "mehmet@example.com", "name": "Mehmet", "password_hash": "x",
               "role": "member", "created_at": T, "password_changed_at": T}),
    ("sessions", {"id": "a" * 64, "user_id": 2, "created_at": T, "last_seen_at": T,
                  "expires_at": "2026-12-27T09:00:00Z", "ip": "203.0.113.9"}),
    ("subscriptions", {"id": 1, "company_id": 7, "plan": "starter", "status": "active",
                       "current_period_start": T, "current_period_end": "2026-12-27T09:00:00Z",
                       "period_anchor_day": 27, "price": 2900, "currency": "USD", "next_action_at": "2026-12-27T09:00:00Z",
                       "created_at": T, "updated_at": T}),
    ("events", {"id": 1, "created_at": T, "company_id": 7, "actor": "user:2", "kind": "company.registered",
                "message": "Yılmaz Yazılım A.Ş. registered", "data": "{}"}),
    ("events", {"id": 2, "created_at": T, "company_id": 7, "actor": "paytr", "kind": "payment.succeeded",
                "message": "payment succeeded", "data": '{"amount": 2900, "currency": "USD", "merchant_oid": "OLD1"}'}),
    ("outbox", {"id": 1, "dedupe_key": "receipt:OLD1", "company_id": 7, "template": "receipt",
                "to_addr": "ayse@example.com", "subject": "Receipt", "body_text": "Thanks", "body_html": "<p>Thanks</p>",
                "status": "sent", "next_attempt_at": T, "created_at": T, "sent_at": T}),
    ("payments", {"id": 1, "company_id": 7, "merchant_oid": "OLD1", "kind": "subscribe", "method": "iframe",
                  "plan": "starter", "amount": 2900, "currency": "USD", "test_mode": 1, "status": "succeeded",
                  "period_start": T, "period_end": "2026-12-27T09:00:00Z", "paid_amount": 2900, "user_id": 2,
                  "email": "ayse@example.com", "created_at": T, "updated_at": T, "decided_at": T,
                  "description": "Starter plan, 27.11.2026 – 27.12.2026"}),
    ("invoice_counters", {"year": 2026, "last_number": 1}),
    ("invoices", {"id": 1, "number": "INV-2026-000001", "year": 2026, "sequence": 1, "company_id": 7,
                  "payment_id": 1, "issued_at": T, "seller_name": "Satıcı Ltd.", "seller_address": "Ankara",
                  "seller_tax_id": "9999999999", "seller_tax_office": "Çankaya", "buyer_name": "Yılmaz Yazılım A.Ş.",
                  "buyer_email": "ayse@example.com", "buyer_address": "Moda Cd. 1, İstanbul",
                  "buyer_tax_id": "1234567890", "currency": "USD", "net": 2417, "vat": 483, "vat_rate": "20",
                  "total": 2900, "period_start": T, "period_end": "2026-12-27T09:00:00Z"}),
    ("invoice_lines", {"id": 1, "invoice_id": 1, "description": "Starter plan", "quantity": 1, "unit_amount": 2900,
                       "amount": 2900}),
    ("refunds", {"id": 1, "payment_id": 1, "company_id": 7, "amount": 500, "currency": "USD", "reason": "goodwill",
                 "reference_no": "R1", "request_key": "K1", "status": "succeeded", "requested_by": "staff:1",
                 "created_at": T, "decided_at": T}),
    ("credit_note_counters", {"year": 2026, "last_number": 1}),
    ("credit_notes", {"id": 1, "number": "CN-2026-000001", "year": 2026, "sequence": 1, "invoice_id": 1,
                      "refund_id": 1, "company_id": 7, "issued_at": T, "seller_name": "Satıcı Ltd.",
                      "seller_address": "Ankara", "seller_tax_id": "9999999999", "seller_tax_office": "Çankaya",
                      "buyer_name": "Yılmaz Yazılım A.Ş.", "buyer_email": "ayse@example.com", "currency": "USD",
                      "net": 417, "vat": 83, "vat_rate": "20", "total": 500, "reason": "goodwill"}),
    ("audit_log", {"id": 1, "created_at": T, "staff_id": 1, "staff_email": "ops@example.com",
                   "action": "refund.create", "company_id": 7, "target": "payment:1", "reason": "goodwill"}),
]


def seed_for_schema(db) -> set[str]:
    """Insert SEED as far as this schema has room for it; return the tables written."""
    tables = set(db.table_names())
    written = set()
    with write(db):
        for table, values in SEED:
            if table not in tables:
                continue
            columns = {c[1] for c in db.conn.execute(f"PRAGMA table_info({table})")}
            row = {k: v for k, v in values.items() if k in columns}
            names = ", ".join(row)
            db.conn.execute(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
            written.add(table)
    return written


@pytest.mark.parametrize("last", NAMES[:-1], ids=lambda name: f"from-{name}")
def test_a_database_from_an_earlier_release_upgrades_with_its_data(tmp_path, last):
    path = tmp_path / "billing.sqlite3"
    store = Store(path)
    db = store.db()
    following = NAMES[NAMES.index(last) + 1]
    with write(db):
        migrations.migrations.apply(db, stop_before=following)
    assert [m.name for m in migrations.migrations.applied(db)] == NAMES[:NAMES.index(last) + 1]
    written = seed_for_schema(db)
    assert {"companies", "users"} <= written

    pending = [name for name, _summary in migrations.pending(db)]
    assert pending == NAMES[NAMES.index(last) + 1:]
    with write(db):
        applied = migrations.apply(db)
    assert applied == pending and migrations.pending(db) == []
    assert scalar(db, "PRAGMA integrity_check") == "ok"
    assert scalar(db, "PRAGMA foreign_key_check") is None

    # The customer, the people and the subscription are as they were.
    assert one(db, "SELECT name, timezone FROM companies WHERE id = 7") == {
        "name": "Yılmaz Yazılım A.Ş.", "timezone": "Europe/Istanbul"}
    assert [u["email"] for u in rows(db, "SELECT email FROM users ORDER BY id")] == [
        "ops@example.com", "ayse@example.com", "mehmet@example.com"]
    assert one(db, "SELECT staff_role FROM users WHERE id = 1")["staff_role"] == "admin"  # m018: staff roles
    if "subscriptions" not in written:
        # m001 alone (the first release: accounts, no billing yet) had no subscriptions; the
        # people came through, and nothing below applies to it.
        store.close()
        return
    sub = one(db, "SELECT * FROM subscriptions WHERE company_id = 7")
    assert (sub["plan"], sub["status"], sub["current_period_end"]) == ("starter", "active", "2026-12-27T09:00:00Z")
    # Migrations that derive columns did so for the old rows too.
    assert (sub["price"], sub["currency"]) == (2900, "USD")  # m018: the price it renews at
    assert sub["mrr"] == 2900  # m021: the list's sort key
    # The staff search index covers the old customer (m021), owner's email included.
    index = one(db, "SELECT owner_email, member_emails FROM customer_index WHERE company_id = 7")
    assert index == {"owner_email": "ayse@example.com", "member_emails": "mehmet@example.com"}
    assert scalar(db, "SELECT rowid FROM customer_fts WHERE customer_fts MATCH ?", [fts_phrase(search_fold("YAZILIM"))]) == 7

    if "payments" in written:
        payment = one(db, "SELECT amount, paid_amount, status, currency FROM payments WHERE merchant_oid = 'OLD1'")
        assert payment == {"amount": 2900, "paid_amount": 2900, "status": "succeeded", "currency": "USD"}
        invoice = one(db, "SELECT number, buyer_name, buyer_email, net, vat, total FROM invoices WHERE id = 1")
        assert invoice == {"number": "INV-2026-000001", "buyer_name": "Yılmaz Yazılım A.Ş.",
                           "buyer_email": "ayse@example.com", "net": 2417, "vat": 483, "total": 2900}
    if "credit_notes" in written:
        assert one(db, "SELECT number, total FROM credit_notes WHERE id = 1") == {
            "number": "CN-2026-000001", "total": 500}

    # What the customer's dashboard and the staff page read works on the upgraded file.
    overview = dashboard.overview(db, NOW, 7)
    assert (overview["subscription"]["status"], overview["price"], overview["plan"].code) == ("active", 2900, "starter")
    if "invoices" in written:
        assert [i["number"] for i in overview["invoices"]] == ["INV-2026-000001"]
    page = staff.company(db, 7)
    assert [m["email"] for m in page["members"]] == ["ayse@example.com", "mehmet@example.com"]
    if "payments" in written:
        [payment] = page["payments"]
        assert payment["merchant_oid"] == "OLD1"
    if "refunds" in written:
        assert [r["amount"] for r in page["refunds"]] == [500]
    if "credit_notes" in written:
        assert [c["number"] for c in page["credit_notes"]["INV-2026-000001"]] == ["CN-2026-000001"]
    store.close()


def run(data_dir: Path, *args):
    env = {**os.environ, "BILLING_DATA_DIR": str(data_dir), "BILLING_ENV": "development"}
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_migrate_dry_run_lists_what_is_pending_and_changes_nothing(tmp_path):
    data = tmp_path / "data"
    fresh = run(data, "migrate", "--dry-run")
    assert fresh.returncode == 0, fresh.stderr
    assert "does not exist yet" in fresh.stdout and f"all {len(NAMES)} migrations" in fresh.stdout
    assert not (data / "billing.sqlite3").exists()

    # A database of the release before m021.
    store = Store(data / "billing.sqlite3")
    with write(store.db()):
        migrations.migrations.apply(store.db(), stop_before="m021_search")
    store.close()
    before = (data / "billing.sqlite3").read_bytes()
    listed = run(data, "migrate", "--dry-run")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    later = NAMES[NAMES.index("m021_search"):]  # m021, m022 and whatever came after
    assert lines[0].startswith(f"{len(later)} pending migrations") and "nothing applied" in lines[0]
    assert lines[1].split()[0] == "m021_search" and "100,000 customers" in lines[1]
    assert lines[2].split()[0] == "m022_revenue"
    assert (data / "billing.sqlite3").read_bytes() == before
    store = Store(data / "billing.sqlite3")
    assert len(migrations.pending(store.db())) == len(later)
    store.close()

    assert run(data, "migrate").returncode == 0
    done = run(data, "migrate", "--dry-run")
    assert done.returncode == 0 and f"up to date ({NAMES[-1]})" in done.stdout
