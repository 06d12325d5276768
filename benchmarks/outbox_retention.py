"""Outbox retention at 100,000 customers (issue 13 §1): what pruning frees, how long the write lock is
held per batch, and what the staff home's outbox counts cost before and after.

    python benchmarks/outbox_retention.py [--source data/bench/console] [--per-company 2] [--work /tmp/x]

Copies the console benchmark's database (benchmarks/console_seed.py; its outbox is empty) to `--work`,
applies the migrations, and fills the outbox with `--per-company` sent emails per company, each a real
rendering of one of the app's templates (rendered once per template, then copied with the company's own
address and key), sent at times spread evenly over the last two years. Then it prunes everything older
than 90 days in PRUNE_BATCH transactions, reports the file and the outbox's share before and after, and
runs VACUUM on the copy. Prints figures; asserts nothing. The copy is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from billing import clock, mail, migrations, staff
from billing.db import connect, write
from billing.settings import Settings

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
SAMPLES = [  # (template, context): what most of a company's emails are
    ("staff_alert", {"title": "Renewal failed for Firma", "body": "The saved card was declined twice. " * 8}),
]


def _samples(settings: Settings) -> list[tuple[str, str, str, str, str]]:
    """(template, context json, subject, text, html) for a few of the app's real emails."""
    made = []
    for template, context in SAMPLES + _customer_samples():
        try:
            subject, text, html = mail.render(template, settings, context, "tr")
        except Exception:  # a template whose context this sample does not satisfy: skip it
            continue
        made.append((template, json.dumps(context, ensure_ascii=False), subject, text, html))
    return made


def _customer_samples() -> list[tuple[str, dict]]:
    return [("welcome", {"name": "Ayşe Yılmaz", "company": "Yılmaz Yazılım A.Ş.", "trial_days": 14,
                         "trial_end": "2026-12-11T09:00:00Z", "plan": None}),
            ("password_reset", {"name": "Ayşe Yılmaz", "reset_url": "https://billing.example/auth/reset/x" * 2,
                                "minutes": 60})]


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def outbox_bytes(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE 'outbox%'").fetchone()[0]


def size_report(path: Path, label: str) -> None:
    conn = sqlite3.connect(path)
    pages, free, page_size = (conn.execute(f"PRAGMA {p}").fetchone()[0]
                              for p in ("page_count", "freelist_count", "page_size"))
    ob = outbox_bytes(conn)
    conn.close()
    print(f"{label:<28} file {_mb(path.stat().st_size):>10}  outbox {_mb(ob):>10} "
          f"({ob / (pages * page_size):.0%} of the pages)  free pages {_mb(free * page_size)}")


def timed(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", default="data/bench/console")
    parser.add_argument("--per-company", type=int, default=2)
    parser.add_argument("--work", default=None)
    parser.add_argument("--retention-days", type=int, default=90)
    args = parser.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="outbox-retention-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / "billing.sqlite3"
    try:
        shutil.copyfile(Path(args.source) / "billing.sqlite3", path)
        db = connect(path)
        with write(db):
            migrations.apply(db)
        settings = Settings(base_url="https://billing.example", app_name="PayTR Billing")
        samples = _samples(settings)
        print(f"{len(samples)} real emails as samples; mean size "
              f"{statistics.mean(len(s[1]) + len(s[3]) + len(s[4]) for s in samples):,.0f} bytes "
              f"(context + text + HTML)")
        companies = [r[0] for r in db.conn.execute("SELECT id FROM companies ORDER BY id")]
        total = len(companies) * args.per_company
        span = timedelta(days=730)
        started = time.perf_counter()
        n = 0
        batch = []
        for cid in companies:
            for k in range(args.per_company):
                template, context, subject, text, html = samples[n % len(samples)]
                # Spread evenly over two years, in id order, as a live outbox is: rows are written as they are
                # sent. (Times shuffled against ids leave one pruned row per page: see README.)
                sent = NOW - span + span * n / total
                at = clock.iso(sent)
                batch.append((f"bench:{cid}:{k}", cid, template, f"owner{cid}@example.com", context, subject, text,
                              html, "sent", 1, at, at, at, "tr"))
                n += 1
            if len(batch) >= 5000:
                with write(db):
                    db.conn.executemany(
                        """INSERT INTO outbox (dedupe_key, company_id, template, to_addr, context, subject, body_text,
                               body_html, status, attempts, next_attempt_at, created_at, sent_at, locale)
                           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""", batch)
                batch = []
        if batch:
            with write(db):
                db.conn.executemany(
                    """INSERT INTO outbox (dedupe_key, company_id, template, to_addr, context, subject, body_text,
                           body_html, status, attempts, next_attempt_at, created_at, sent_at, locale)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""", batch)
        with write(db):  # a few failed and pending, as a live outbox has
            db.conn.execute("UPDATE outbox SET status = 'failed', sent_at = NULL WHERE id % 5000 = 1")
            db.conn.execute("UPDATE outbox SET status = 'pending', sent_at = NULL WHERE id % 5000 = 2")
        db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        print(f"filled {total:,} emails in {time.perf_counter() - started:.0f} s")
        size_report(path, "before pruning")
        print(f"staff home outbox counts: {timed(lambda: staff.outbox_summary(db)):.2f} ms (median of 5)")

        older = db.conn.execute("SELECT count(*) FROM outbox WHERE status = 'sent' AND sent_at < ?",
                                [clock.iso(NOW - timedelta(days=args.retention_days))]).fetchone()[0]
        batches = []
        pruned = 0
        while True:
            t = time.perf_counter()
            done = mail.prune_bodies(db, NOW, args.retention_days, max_batches=1)
            batches.append((time.perf_counter() - t) * 1000)
            pruned += done
            if done < mail.PRUNE_BATCH:
                break
        print(f"pruned {pruned:,} of {older:,} sent emails older than {args.retention_days} days in {len(batches)} "
              f"transactions of {mail.PRUNE_BATCH}: p50 {statistics.median(batches):.0f} ms, "
              f"max {max(batches):.0f} ms each (the write lock is held that long), total {sum(batches) / 1000:.1f} s")
        idle = timed(lambda: mail.prune_bodies(db, NOW, args.retention_days))
        print(f"a tick with nothing left to prune: {idle:.2f} ms")
        db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size_report(path, "after pruning")
        print(f"staff home outbox counts: {timed(lambda: staff.outbox_summary(db)):.2f} ms (median of 5)")
        # The next months' emails: do they go into the freed pages, or grow the file?
        before = path.stat().st_size
        fresh = [(f"bench:new:{i}", companies[i % len(companies)], *samples[i % len(samples)][:1],
                  f"owner{companies[i % len(companies)]}@example.com", *samples[i % len(samples)][1:], "sent", 1,
                  clock.iso(NOW), clock.iso(NOW), clock.iso(NOW), "tr") for i in range(older // 2)]
        for start in range(0, len(fresh), 5000):
            with write(db):
                db.conn.executemany(
                    """INSERT INTO outbox (dedupe_key, company_id, template, to_addr, context, subject, body_text,
                           body_html, status, attempts, next_attempt_at, created_at, sent_at, locale)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""", fresh[start:start + 5000])
        db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        print(f"then {len(fresh):,} new emails (half as many as were pruned) grew the file by "
              f"{_mb(path.stat().st_size - before)}")
        size_report(path, "after the new emails")
        db.conn.close()
        t = time.perf_counter()
        conn = sqlite3.connect(path)
        conn.execute("VACUUM")
        conn.close()
        print(f"VACUUM took {time.perf_counter() - t:.0f} s")
        size_report(path, "after VACUUM")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
