"""Due work is done exactly once: two processes ticking the same database at once, and a
restart after hours of downtime with a thousand renewals waiting."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from billing import clock, jobs
from billing.app import create_app
from billing.clock import FixedClock
from billing.db import Store, rows, scalar, write
from billing.migrations import apply
from billing.paytr.emulator_model import Card
from conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent
N = 1000
T = clock.parse("2026-12-11T09:00:00Z")


def seed(path: Path, *, status: str, period_end=None, trial_end=None, next_action=None, utokens=None,
         ctokens=None) -> None:
    """N companies with an owner and a subscription, written straight into the database."""
    store = Store(path)
    db = store.db()
    with write(db):
        apply(db)
    now = "2026-11-27T09:00:00Z"
    with write(db):
        for i in range(1, N + 1):
            db.conn.execute("INSERT INTO companies (id, name, timezone, created_at, paytr_utoken, paytr_ctoken, "
                            "card_ip) VALUES (?, ?, 'Europe/Istanbul', ?, ?, ?, '85.34.78.112')",
                            [i, f"Şirket {i}", now, utokens[i - 1] if utokens else None,
                             ctokens[i - 1] if ctokens else None])
            db.conn.execute("INSERT INTO users (company_id, email, name, password_hash, role, created_at, "
                            "password_changed_at) VALUES (?, ?, ?, 'x', 'owner', ?, ?)",
                            [i, f"owner{i}@example.com", f"Sahip {i}", now, now])
            db.conn.execute(
                "INSERT INTO subscriptions (company_id, plan, status, trial_ends_at, current_period_start, "
                "current_period_end, period_anchor_day, next_action_at, created_at, updated_at) "
                "VALUES (?, 'starter', ?, ?, ?, ?, 11, ?, ?, ?)",
                [i, status, trial_end, "2026-12-11T09:00:00Z" if period_end else None, period_end, next_action,
                 now, now])
    store.close()


@pytest.mark.slow
def test_two_processes_ticking_at_once_send_each_of_1000_reminders_once(tmp_path):
    data = tmp_path / "data"
    settings = make_settings(tmp_path)
    seed(settings.database_path, status="trialing", trial_end=clock.iso(T),
         next_action=clock.iso(T - timedelta(days=7)))
    at = clock.iso(T - timedelta(days=7) + timedelta(minutes=1))
    env = {**os.environ, "BILLING_DATA_DIR": str(data), "BASE_URL": "http://testserver"}
    command = [sys.executable, "main.py", "jobs", "run", "--at", at]
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    advanced = [int(out.split(": ")[1].split()[0]) for out, _ in outputs]
    assert sum(advanced) == N  # the two shared the work; no subscription was done twice
    store = Store(settings.database_path)
    db = store.db()
    reminders = rows(db, "SELECT company_id, status FROM outbox WHERE template = 'trial_reminder'")
    next_actions = {r["next_action_at"] for r in rows(db, "SELECT next_action_at FROM subscriptions")}
    store.close()
    assert len(reminders) == N and {r["company_id"] for r in reminders} == set(range(1, N + 1))
    assert {r["status"] for r in reminders} == {"sent"}
    assert len(list((data / "mail").glob("*.eml"))) == N  # each email sent once, not once per process
    assert next_actions == {clock.iso(T - timedelta(days=3))}  # the 3-day reminder is next


@pytest.mark.slow
def test_after_six_hours_down_1000_due_renewals_are_each_charged_once(tmp_path):
    settings = make_settings(tmp_path, PAYTR_RECURRING="1")
    first_app = create_app(settings, clock=FixedClock(T + timedelta(hours=6)))
    emulator = first_app.state.emulator
    cards = [emulator.store_card(Card(owner=f"SAHIP {i}", number="4355084355084358", month=12, year=2030))
             for i in range(N)]
    period_end = clock.iso(T)  # every period ended six hours ago, while the app was down
    seed(settings.database_path, status="active", period_end=period_end, next_action=clock.iso(T - timedelta(
        days=7)), utokens=[card.utoken for card in cards], ctokens=[card.ctoken for card in cards])

    def restart_and_tick(app):
        with TestClient(app) as client:
            report = client.portal.call(jobs.tick, app.state.jobs, T + timedelta(hours=6))
            client.portal.call(app.state.emulator.wait_idle, 120)
            report["later"] = client.portal.call(jobs.tick, app.state.jobs, T + timedelta(hours=6, minutes=1))
            client.portal.call(app.state.emulator.wait_idle, 120)
        return report

    report = restart_and_tick(first_app)
    assert report["charges"] == N and report["later"]["charges"] == 0
    # Another restart: the same emulator (PayTR) but a new app process, ticking again.
    second_app = create_app(settings, clock=FixedClock(T + timedelta(hours=6, minutes=5)))
    second_app.state.emulator = emulator  # PayTR remembers its cards across our restarts
    with TestClient(second_app) as client:
        again = client.portal.call(jobs.tick, second_app.state.jobs, T + timedelta(hours=6, minutes=5))
    assert again["charges"] == 0 and again["subscriptions"] == 0

    store = Store(settings.database_path)
    db = store.db()
    payments = rows(db, "SELECT company_id, status, attempt FROM payments WHERE method = 'recurring'")
    renewed = scalar(db, "SELECT count(*) FROM subscriptions WHERE status = 'active' AND current_period_end = ?",
                     ["2027-01-11T09:00:00Z"])
    invoices = scalar(db, "SELECT count(*) FROM invoices")
    sequences = [r["sequence"] for r in rows(db, "SELECT sequence FROM invoices ORDER BY sequence")]
    store.close()
    assert len(payments) == N and {p["company_id"] for p in payments} == set(range(1, N + 1))
    assert {(p["status"], p["attempt"]) for p in payments} == {("succeeded", 0)}
    assert renewed == N and invoices == N and sequences == list(range(1, N + 1))
    charged = [t for t in emulator.transactions() if t.api == "stored card"]
    assert len(charged) == N  # PayTR saw each charge once
