"""The scale benchmark cannot rot: its builder and every measurement, once, on a tiny database.

The figures themselves are never asserted (a benchmark prints them; this machine is shared), only
that each part ran against the real app and printed what the issue asks for."""

import pytest

from benchmarks import scale, scale_seed


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    data = tmp_path_factory.mktemp("scale") / "data"
    return data, scale_seed.build(data, 200, quiet=True)


def test_builder_writes_two_years_with_emails_and_webhooks(tiny):
    import sqlite3

    data, path = tiny
    db = sqlite3.connect(path)
    statuses = {row[0] for row in db.execute("SELECT DISTINCT status FROM subscriptions")}
    assert {"trialing", "active", "canceled"} <= statuses
    per_company = db.execute("SELECT count(*) * 1.0 / (SELECT count(*) FROM companies) FROM outbox").fetchone()[0]
    assert 5 <= per_company <= 12  # "about 7 emails each"
    # Sent emails keep what the sender stored: rendered by the app's templates, names filled in.
    subject, html, company = db.execute(
        "SELECT o.subject, o.body_html, c.name FROM outbox o JOIN companies c ON c.id = o.company_id "
        "WHERE o.template = 'payment_succeeded' LIMIT 1").fetchone()
    assert subject and company in html and "QQ" not in html
    assert db.execute("SELECT count(*) FROM webhook_messages WHERE status = 'sent'").fetchone()[0] > 0
    numbers = [r[0] for r in db.execute("SELECT sequence FROM invoices WHERE year = 2025 ORDER BY sequence")]
    assert numbers == list(range(1, len(numbers) + 1))
    heavy = int(db.execute("SELECT value FROM app_state WHERE key = 'bench_scale_heavy'").fetchone()[0])
    assert db.execute("SELECT count(*) FROM invoices WHERE company_id = ?", [heavy]).fetchone()[0] >= 12
    db.close()
    # Cached: the key names the schema, so a second build is the same file, not a rebuild.
    assert scale_seed.build(data, 200, quiet=True) == path
    assert scale_seed.marker(200).endswith(scale_seed.schema_key())


def test_every_measurement_runs_once(tiny):
    # As an operator runs it: its own process (it pins CPUs and runs its own event loops).
    import subprocess
    import sys
    from pathlib import Path

    data, _path = tiny
    root = Path(scale.__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "benchmarks/scale.py", "--data", str(data), "--companies", "200", "--requests", "1",
         "--clients", "2", "--processes", "2",  # two server processes, a connection to each
         "--samples", "1", "--seconds", "5", "--callback-payments", "100", "--callback-seconds", "0.5",
         "--storm", "5", "--storm-reminders", "1", "--storm-filler", "5", "--tick-seconds", "1", "--storm-timeout", "30"],
        cwd=root, capture_output=True, text=True, timeout=300)
    out = done.stdout
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for label in ("dashboard /billing/", "timeline /billing/timeline", "invoice page", "entitlements API",
                  "staff home /admin/", "staff filter status=active", "search owner email", "search VKN",
                  "search merchant_oid", "search invoice number", "staff customer page", "/admin/metrics",
                  "/metrics", "Turkish folding", "server RSS", "callbacks:", "renewal storm:", "trial reminders"):
        assert label in out, label
    # Each page answered 200 (a broken page prints its statuses), and the capitals find what small letters do.
    assert "not 200" not in out
    assert "list the same" in out and ": PASS" in out.split("Turkish folding")[1].splitlines()[0]
    assert "never queued" not in out
