"""The charge lane: renewal charges of saved cards sent beside the scheduler's tick.

Invariants: a reminder is never delayed by a slow PayTR; at most PAYTR_MAX_IN_FLIGHT charges
wait on PayTR at once and at most PAYTR_MAX_PER_SECOND start in any second (counted by the
emulator, which sees the calls); one PayTR call per charge, except when a card was saved since
the last list, which is then the one charged; a charge is sent once, shutdown or not.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

import httpx
import pytest

from benchmarks.ticks import NOW, seed
from billing import jobs
from billing.db import Store, rows
from billing.paytr.client import PaytrClient
from billing.paytr.emulator import EmulatorConfig, create_emulator
from billing.paytr.emulator_model import Card
from conftest import make_settings
from test_cards import MASTERCARD, VISA, company, renewal_charges, save_card_paying, two_cards
from test_lifecycle import tick


class Storm:
    """`due` trial reminders and `due` saved-card renewals due at NOW, and PayTR's emulator."""

    def __init__(self, tmp_path, due: int, latency: float, **env):
        self.settings = make_settings(tmp_path, PAYTR_RECURRING="1", **env)
        self.emulator_app = create_emulator(EmulatorConfig(
            merchant_id=self.settings.paytr_merchant_id, merchant_key=str(self.settings.paytr_merchant_key),
            merchant_salt=str(self.settings.paytr_merchant_salt), notification_url="http://test/billing/callback"))
        self.emulator = self.emulator_app.state.emulator
        # The charges' results are not the point here: their callbacks wait, out of the way.
        self.emulator.set_faults(callback_delay=3600, api_latency=latency)
        saved = [self.emulator.store_card(Card(number=VISA, owner="SAHIP", month=12, year=2030)) for _ in range(due)]
        self.store = Store(self.settings.database_path)
        seed(self.store, 2 * due, due, [(card.utoken, card.ctoken) for card in saved])
        self.due = due

    async def __aenter__(self):
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.emulator_app),
                                      base_url="http://paytr-emulator", timeout=30)
        self.ctx = jobs.Context(store=self.store, settings=self.settings, clock=None,
                                paytr=PaytrClient(self.settings, self.http))
        return self

    async def __aexit__(self, *exc):
        await self.emulator.aclose()
        await self.http.aclose()
        self.store.close()

    def renewals(self) -> list[dict]:
        return rows(self.store.db(), "SELECT * FROM payments WHERE method = 'recurring' ORDER BY id")

    def sent(self) -> list[str]:
        """merchant_oids PayTR has a transaction for."""
        return [p["merchant_oid"] for p in self.renewals() if self.emulator.transaction(p["merchant_oid"])]


def run(main) -> None:
    """asyncio.run in a thread of its own: this thread may already run a loop (Playwright's)."""
    failures = []

    def go():
        try:
            asyncio.run(main())
        except BaseException as exc:  # raised below, in the test
            failures.append(exc)

    thread = threading.Thread(target=go)
    thread.start()
    thread.join()
    if failures:
        raise failures[0]


class FixedClock:
    def now(self):
        return NOW


def test_one_paytr_call_per_charge_and_never_more_in_flight_than_allowed(tmp_path):
    async def main():
        async with Storm(tmp_path, due=24, latency=0.3, PAYTR_MAX_IN_FLIGHT=4, PAYTR_MAX_PER_SECOND=1000) as storm:
            report = await jobs.tick(storm.ctx, NOW)  # no lane (as `jobs run`): the tick sends them itself
            assert report["charges"] == 24
            load = storm.emulator.api_load
            assert load.calls == {"direct": 24}  # no card list: the recorded card is charged
            assert load.peak == 4  # the cap is reached and never passed
            assert len(set(storm.sent())) == 24 and all(p["charge_requested_at"] for p in storm.renewals())

    run(main)


def test_no_more_charges_start_in_a_second_than_allowed(tmp_path):
    async def main():
        async with Storm(tmp_path, due=25, latency=0.05, PAYTR_MAX_IN_FLIGHT=16, PAYTR_MAX_PER_SECOND=10) as storm:
            started = time.monotonic()
            await jobs.tick(storm.ctx, NOW)
            elapsed = time.monotonic() - started
            load = storm.emulator.api_load
            assert load.calls == {"direct": 25}
            assert load.most_in_one_second() <= 10, load.most_in_one_second()
            assert elapsed >= 2.5  # 25 starts, one every 0.11 s

    run(main)


def test_a_reminder_is_not_delayed_by_a_slow_paytr(tmp_path):
    """The storm's renewals and the trial reminders fall due at the same instant; the tick starts the
    renewals, queues the reminders and returns while the lane is still waiting on PayTR."""

    async def main():
        async with Storm(tmp_path, due=30, latency=0.5, PAYTR_MAX_IN_FLIGHT=4, PAYTR_MAX_PER_SECOND=100) as storm:
            storm.ctx.clock = FixedClock()
            lane = storm.ctx.lane = jobs.ChargeLane(storm.ctx).start()
            try:
                started = time.monotonic()
                report = await jobs.tick(storm.ctx, NOW, mail_batches=0)
                tick_seconds = time.monotonic() - started
                reminders = rows(storm.store.db(), "SELECT * FROM outbox WHERE template = 'trial_reminder'")
                assert report["subscriptions"] == 60 and len(reminders) == 30
                # 30 charges at 0.5 s, 4 at a time, take about 4 s; the tick did not wait for them.
                assert len(storm.sent()) < 30, "the lane finished before the tick: the test proved nothing"
                assert tick_seconds < 2.0, tick_seconds
                deadline = time.monotonic() + 30
                while len(storm.sent()) < 30 and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                assert len(storm.sent()) == 30 and storm.emulator.api_load.calls == {"direct": 30}
                assert storm.emulator.api_load.peak <= 4
            finally:
                await lane.stop(5)

    run(main)


def test_shutdown_sends_no_more_and_the_next_start_sends_the_rest_once(tmp_path):
    async def main():
        async with Storm(tmp_path, due=30, latency=0.4, PAYTR_MAX_IN_FLIGHT=3, PAYTR_MAX_PER_SECOND=100) as storm:
            storm.ctx.clock = FixedClock()
            lane = storm.ctx.lane = jobs.ChargeLane(storm.ctx).start()
            await jobs.tick(storm.ctx, NOW, mail_batches=0)
            while storm.emulator.api_load.calls.get("direct", 0) < 5:
                await asyncio.sleep(0.05)
            began = time.monotonic()
            await lane.stop(5)
            assert time.monotonic() - began < 2  # the sent ones answered in 0.4 s; the rest never started
            sent_before = set(storm.sent())
            claimed = {p["merchant_oid"] for p in storm.renewals() if p["charge_requested_at"]}
            assert 5 <= len(sent_before) < 30
            # Every charge still claimed was sent (it is PayTR's or the status query's now); every one
            # not sent was released, so nothing waits 30 minutes for a status query that finds nothing.
            assert claimed == sent_before
            assert storm.emulator.api_load.in_flight == 0

            storm.ctx.lane = None  # the next start
            await jobs.tick(storm.ctx, NOW + timedelta(minutes=1), mail_batches=0)
            assert len(storm.sent()) == 30
            assert storm.emulator.api_load.calls == {"direct": 30}  # nothing sent twice

    run(main)


# --- the card charged: through the app and the emulator --------------------------------------------


@pytest.fixture
def env():
    return {"PAYTR_RECURRING": "1"}


def test_a_card_saved_since_the_last_list_is_the_one_charged_and_then_one_call_a_renewal(client, app, clock, db):
    next_end = two_cards(client, app, clock, db)  # Visa declined, then the month paid with a Mastercard saved
    assert company(db)["card_saved_by"]  # nobody has listed the cards since: only the mark says so
    load = app.state.emulator.api_load
    load.calls.clear()
    tick(client, app, clock, next_end)
    # The list is asked for first, and the new card is the one charged, not the Visa recorded before.
    assert load.calls == {"card_list": 1, "direct": 1}
    assert renewal_charges(app, db)[-1] == ("succeeded", MASTERCARD[-4:])
    load.calls.clear()
    from billing.clock import parse
    from test_lifecycle import sub

    tick(client, app, clock, parse(sub(db)["current_period_end"]))
    assert load.calls == {"direct": 1}  # the recorded card, one call
    assert renewal_charges(app, db)[-1] == ("succeeded", MASTERCARD[-4:])
