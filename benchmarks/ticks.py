"""How long the scheduler's tick takes, and whether memory stays flat.

    .venv/bin/python benchmarks/ticks.py [--companies 100000] [--due 1000]

Seeds companies in mixed states (trialing, active with and without a saved card,
past due, canceled, expired), then prints: an idle tick (nothing due: it must not
scan the companies); a busy tick with `--due` trial reminders and `--due` saved-card
renewals due at once (split into the database work, the PayTR calls to the
in-process emulator, and sending the emails); and memory across 100 ticks.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from billing import clock, jobs, mail, migrations, settings as settings_module  # noqa: E402
from billing.db import Store, write  # noqa: E402
from billing.paytr.client import PaytrClient  # noqa: E402
from billing.paytr.emulator import EmulatorConfig, create_emulator  # noqa: E402
from billing.paytr.emulator_model import Card  # noqa: E402

NOW = clock.parse("2026-12-11T09:00:00Z")
FAR = clock.iso(NOW + timedelta(days=20))


def seed(store: Store, companies: int, due: int, saved: list[tuple[str, str]]) -> None:
    """`saved`: the (utoken, ctoken) of each company whose renewal charges its card."""
    db = store.db()
    with write(db):
        migrations.apply(db)
    created = "2026-11-01T09:00:00Z"
    states = ["trialing"] * 4 + ["active"] * 4 + ["past_due", "canceled", "expired"]
    with write(db):
        db.conn.executemany(
            "INSERT INTO companies (id, name, timezone, created_at, paytr_utoken, paytr_ctoken, card_ip, "
            "cards_listed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            # A card chosen for renewals was seen in a list, and that list was recorded.
            ((i, f"Şirket {i}", "Europe/Istanbul", created,
              *(saved[i - 1 - due] if due < i <= 2 * due else (None, None)), "85.34.78.112",
              created if due < i <= 2 * due else None)
             for i in range(1, companies + 1)))
        db.conn.executemany(
            "INSERT INTO users (company_id, email, name, password_hash, role, created_at, password_changed_at) "
            "VALUES (?, ?, ?, 'x', 'owner', ?, ?)",
            ((i, f"owner{i}@example.com", f"Sahip {i}", created, created) for i in range(1, companies + 1)))

        def subscription(i: int):
            if i <= due:  # a trial whose 7-day reminder is due now
                return (i, "trialing", clock.iso(NOW + timedelta(days=7)), None, None, clock.iso(NOW))
            if i <= 2 * due:  # a paid month that ends now, with a saved card to charge
                return (i, "active", None, "2026-11-11T09:00:00Z", clock.iso(NOW), clock.iso(NOW))
            state = states[i % len(states)]
            ends = FAR if state in ("trialing", "active", "past_due") else None
            return (i, state, ends if state == "trialing" else None, "2026-11-11T09:00:00Z" if state != "trialing"
                    else None, ends if state != "trialing" else None, ends)

        db.conn.executemany(
            "INSERT INTO subscriptions (company_id, plan, status, trial_ends_at, current_period_start, "
            "current_period_end, period_anchor_day, next_action_at, created_at, updated_at) "
            "VALUES (?, 'starter', ?, ?, ?, ?, 11, ?, ?, ?)",
            ((*subscription(i), created, created) for i in range(1, companies + 1)))


async def timed(coro) -> tuple[float, object]:
    started = time.perf_counter()
    result = await coro
    return time.perf_counter() - started, result


async def run(args) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="billing-ticks-"))
    settings = settings_module.load({"BILLING_DATA_DIR": str(workdir / "data"), "BASE_URL": "http://bench",
                                     "PAYTR_RECURRING": "1"}, env_file=None)
    emulator_app = create_emulator(EmulatorConfig(
        merchant_id=settings.paytr_merchant_id, merchant_key=str(settings.paytr_merchant_key),
        merchant_salt=str(settings.paytr_merchant_salt), notification_url="http://bench/billing/callback"))
    emulator = emulator_app.state.emulator
    # Callbacks are not part of a tick; the benchmark's PayTR answers them into the void.
    emulator.set_faults(callback_delay=3600)
    cards = [emulator.store_card(Card(number="4355084355084358", owner="SAHIP", month=12, year=2030))
             for _ in range(args.due)]
    store = Store(settings.database_path)
    started = time.perf_counter()
    seed(store, args.companies, args.due, [(card.utoken, card.ctoken) for card in cards])
    print(f"seeded {args.companies:,} companies in {time.perf_counter() - started:.1f} s "
          f"({args.due} trial reminders and {args.due} card renewals due at {clock.iso(NOW)})")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator_app), base_url="http://emulator") as http:
        context = jobs.Context(store=store, settings=settings, clock=clock.FixedClock(NOW - timedelta(hours=1)),
                               paytr=PaytrClient(settings, http))
        await jobs.tick(context, NOW - timedelta(hours=1))  # warm-up: worker threads, connections
        idle = []
        for _ in range(20):
            seconds, _ = await timed(jobs.tick(context, NOW - timedelta(hours=1)))
            idle.append(seconds * 1000)
        print(f"\nidle tick (nothing due), 20 runs after a warm-up: median {statistics.median(idle):.2f} ms, "
              f"max {max(idle):.2f} ms   (target < 20 ms)")

        db_seconds, advanced = await timed(jobs._in_thread(context, jobs.run_due_subscriptions, NOW, settings))
        charge_seconds, charged = await timed(jobs.charge_cards(context, NOW))
        mail_seconds, sent = await timed(jobs._in_thread(context, mail.deliver_due, NOW, settings))
        print(f"busy tick: {advanced} subscriptions advanced in {db_seconds:.2f} s (database work: reminders "
              f"queued, renewal charges recorded); {charged} card charges sent to PayTR in {charge_seconds:.2f} s "
              f"(network, here the in-process emulator); {sent['sent']} emails rendered and sent in "
              f"{mail_seconds:.2f} s")
        print(f"busy tick excluding network waits: {db_seconds + mail_seconds:.2f} s   (target < 5 s)")

        # Memory: 100 ticks with nothing due (the renewal charges' callbacks never come here, so
        # nothing is due again until their reconciliation half an hour later).
        quiet = NOW + timedelta(minutes=1)
        await jobs.tick(context, quiet)
        tracemalloc.start()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        heap = []
        for _ in range(100):
            await jobs.tick(context, quiet)
            heap.append(tracemalloc.get_traced_memory()[0])
        tracemalloc.stop()
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"memory across 100 ticks: traced Python heap {heap[9] / 1024:.0f} KiB after 10 ticks, "
              f"{heap[-1] / 1024:.0f} KiB after 100 ({(heap[-1] - heap[9]) / 1024:+.1f} KiB); "
              f"max RSS {rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MiB")
        await emulator.aclose()
    store.close()
    shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--companies", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
