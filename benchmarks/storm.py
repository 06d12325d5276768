"""A renewal storm: 10,000 saved-card renewals due at one instant, against a slow PayTR.

    .venv/bin/python benchmarks/storm.py [--due 10000] [--latency 0.3 0.8] [--in-flight 16]
                                         [--per-second 20] [--tick-seconds 10]

Seeds `--due` trials whose reminder is due and `--due` paid months that end at the same
instant with a saved card (benchmarks/ticks.py's seed), sets the emulator's `api_latency`
fault, then runs the server's arrangement: the charge lane (billing.jobs.ChargeLane, with
PAYTR_MAX_IN_FLIGHT and PAYTR_MAX_PER_SECOND) beside a tick every `--tick-seconds`. Prints, per
latency: the time to charge them all, charges per second, the first tick (which starts the
10,000 renewals and queues the reminders), and the largest delay any tick saw from its
scheduled moment to its end while the storm ran (the target: never more than one tick interval).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.ticks import NOW, seed  # noqa: E402
from billing import jobs, settings as settings_module  # noqa: E402
from billing.db import Store, rows  # noqa: E402
from billing.paytr.client import PaytrClient  # noqa: E402
from billing.paytr.emulator import EmulatorConfig, create_emulator  # noqa: E402
from billing.paytr.emulator_model import Card  # noqa: E402


class RunningClock:
    """The benchmark's "now": NOW when it starts, then real time passes."""

    def __init__(self):
        self.started = time.monotonic()

    def now(self):
        return NOW + timedelta(seconds=time.monotonic() - self.started)


async def storm(args, latency: float) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="billing-storm-"))
    try:
        settings = settings_module.load({
            "BILLING_DATA_DIR": str(workdir / "data"), "BASE_URL": "http://bench", "PAYTR_RECURRING": "1",
            "PAYTR_MAX_IN_FLIGHT": str(args.in_flight), "PAYTR_MAX_PER_SECOND": str(args.per_second),
            "PAYTR_TIMEOUT": "30"}, env_file=None)
        emulator_app = create_emulator(EmulatorConfig(
            merchant_id=settings.paytr_merchant_id, merchant_key=str(settings.paytr_merchant_key),
            merchant_salt=str(settings.paytr_merchant_salt), notification_url="http://bench/billing/callback"))
        emulator = emulator_app.state.emulator
        # The charges' callbacks are the callback benchmark's business: here they wait out of the way.
        emulator.set_faults(callback_delay=3600, api_latency=latency)
        cards = [emulator.store_card(Card(number="4355084355084358", owner="SAHIP", month=12, year=2030))
                 for _ in range(args.due)]
        store = Store(settings.database_path)
        seed(store, 2 * args.due, args.due, [(card.utoken, card.ctoken) for card in cards])
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator_app), base_url="http://paytr-emulator",
                                 timeout=30)
        clock = RunningClock()
        ctx = jobs.Context(store=store, settings=settings, clock=clock, paytr=PaytrClient(settings, http))
        lane = ctx.lane = jobs.ChargeLane(ctx).start()
        ticks: list[tuple[float, float]] = []  # (scheduled, ended), monotonic

        async def ticker():
            scheduled = time.monotonic()
            while True:
                await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
                await jobs.tick(ctx, clock.now(), mail_batches=0)  # mail is the sender's (not measured here)
                ticks.append((scheduled, time.monotonic()))
                # APScheduler's coalesce: a tick that overran is not run twice to catch up.
                scheduled = max(scheduled + args.tick_seconds, time.monotonic())

        began = time.monotonic()
        ticking = asyncio.create_task(ticker())
        while emulator.api_load.calls.get("direct", 0) < args.due:
            await asyncio.sleep(0.2)
            if time.monotonic() - began > 3600:
                raise SystemExit("the storm did not finish within an hour")
        charged = time.monotonic() - began
        ticking.cancel()
        await asyncio.gather(ticking, return_exceptions=True)
        await lane.stop(5)
        claimed = rows(store.db(), "SELECT count(*) AS n FROM payments WHERE method = 'recurring' "
                                   "AND charge_requested_at IS NOT NULL")[0]["n"]
        reminders = rows(store.db(), "SELECT count(*) AS n FROM outbox WHERE template = 'trial_reminder'")[0]["n"]
        await emulator.aclose()
        await http.aclose()
        store.close()
        first = ticks[0][1] - ticks[0][0]
        return {"latency": latency, "charged_s": charged, "rate": args.due / charged, "first_tick_s": first,
                "worst_delay_s": max(end - scheduled for scheduled, end in ticks), "ticks": len(ticks),
                "claimed": claimed, "reminders": reminders, "peak": emulator.api_load.peak,
                "most_in_one_second": emulator.api_load.most_in_one_second()}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def main(args) -> None:
    logging.basicConfig(level=logging.WARNING)
    print(f"{args.due:,} saved-card renewals and {args.due:,} trial reminders due at one instant; "
          f"PAYTR_MAX_IN_FLIGHT={args.in_flight}, PAYTR_MAX_PER_SECOND={args.per_second}, "
          f"a tick every {args.tick_seconds} s")
    for latency in args.latency:
        r = await storm(args, latency)
        print(f"PayTR answering in {latency * 1000:.0f} ms: all {r['claimed']:,} charged in {r['charged_s']:.0f} s "
              f"({r['rate']:.1f} charges/s; at most {r['peak']} in flight, {r['most_in_one_second']} started in "
              f"any one second); first tick {r['first_tick_s']:.1f} s ({r['reminders']:,} reminders queued); "
              f"worst tick delay while the storm ran {r['worst_delay_s']:.1f} s over {r['ticks']} ticks",
              flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--due", type=int, default=10_000)
    parser.add_argument("--latency", type=float, nargs="+", default=[0.3, 0.8])
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--per-second", type=int, default=20)
    parser.add_argument("--tick-seconds", type=float, default=10)
    asyncio.run(main(parser.parse_args()))
