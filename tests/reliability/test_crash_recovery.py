"""The app is killed (SIGKILL) again and again while PayTR's callbacks, three copies of
each, are in flight. PayTR (the standalone emulator) keeps retrying until it hears OK;
once everything is delivered, each order is paid exactly once with a gapless invoice,
and the database file is sound."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import httpx
import pytest

from .support import query, reader, scalar, seed_orders, wait_until

pytestmark = pytest.mark.slow

GROUPS, PER_GROUP = 6, 10  # 60 orders, paid group by group; the app is killed while each group pays
PAY_PACE = 0.03  # seconds between two payments: a group takes at least 0.3 s to pay
KILL_AFTER = (0.05, 0.28)  # the kill comes at a random moment this long after a group starts paying
COPIES = 3  # the emulator sends every callback this many times (its duplicate_callbacks fault)
CARD = {"cc_owner": "AYSE YILMAZ", "card_number": "4355084355084358", "expiry": "12/30", "cvv": "000"}


def test_payments_survive_the_app_being_killed_during_a_callback_storm(make_app, make_emulator, password_hash):
    app = make_app()
    emulator = make_emulator(app)
    app.configure(PAYTR_API_BASE=emulator.url)
    emulator.start()
    orders = seed_orders(app.settings, GROUPS * PER_GROUP, password_hash, tag="crash")
    app.start()

    def logs() -> str:
        return f"{app.tail()}\n{emulator.tail()}"

    with httpx.Client(base_url=emulator.url, timeout=30) as paytr:
        tokens = {}
        for order in orders:  # the orders exist at PayTR, as the checkout page would have made them
            answer = paytr.post("/odeme/api/get-token", data=order.request).json()
            assert answer.get("status") == "success", answer
            tokens[order.oid] = answer["token"]
        faults = paytr.post("/_faults", json={"duplicate_callbacks": COPIES})
        assert faults.status_code == 200 and faults.json()["duplicate_callbacks"] == COPIES, faults.text

    rng = random.Random(99)
    crashes = []
    for group in range(GROUPS):
        payer = Payer(emulator.url, [tokens[o.oid] for o in orders[group * PER_GROUP:(group + 1) * PER_GROUP]])
        payer.start()
        try:
            time.sleep(rng.uniform(*KILL_AFTER))  # a random moment while this group is paying
            storm_on = payer.is_alive()
            app.kill()
            payer.app_killed.set()  # the group's last customer pays while the app is down
            succeeded = scalar(app.database_path, "SELECT count(*) FROM payments WHERE status = 'succeeded'",
                               readonly=True)  # leaves the WAL for the restarted app to recover
            crashes.append({"paid so far": group * PER_GROUP + payer.paid, "succeeded at the crash": succeeded,
                            "storm on": storm_on})
            app.start()  # same port, same data directory
        finally:
            payer.app_killed.set()
            payer.join(timeout=60)
        assert not payer.errors, f"paying at the emulator failed: {payer.errors}\n{logs()}"
    assert app.kills == GROUPS and app.starts == GROUPS + 1
    assert all(c["storm on"] for c in crashes), crashes  # every kill came while payments were being made

    db = app.database_path
    wait_until(lambda: query(db, "SELECT count(*) AS n FROM payments WHERE status != 'succeeded'")[0]["n"] == 0,
               90, "every order to be paid", interval=0.25, details=logs)
    with httpx.Client(timeout=10) as client:

        def all_delivered():
            attempts = {o.oid: emulator.attempts(client, o.oid) for o in orders}
            done = all({a.delivery for a in tried if a.delivered} == set(range(1, COPIES + 1))
                       for tried in attempts.values())
            return attempts if done else None

        attempts = wait_until(all_delivered, 90, f"all {COPIES} copies of every callback to be delivered",
                              interval=0.5, details=logs)
    emulator.stop()
    app.stop()

    # The kills interrupted deliveries, which the emulator retried until the app answered OK.
    failed_attempts = Counter(a.answer.split(":")[0] for tried in attempts.values() for a in tried
                              if not a.delivered)
    assert sum(failed_attempts.values()) > 0, "no delivery was ever interrupted: the kills missed the storm"

    print(f"crashes: {crashes}; interrupted attempts: {dict(failed_attempts)}")
    oids = {o.oid for o in orders}
    payments = {p["merchant_oid"]: p for p in query(db, "SELECT * FROM payments")}
    assert {oid: p["status"] for oid, p in payments.items()} == {oid: "succeeded" for oid in oids}, crashes
    assert all(p["paid_amount"] == p["amount"] for p in payments.values())
    invoices = query(db, "SELECT i.sequence, p.merchant_oid FROM invoices i JOIN payments p ON p.id = i.payment_id")
    assert sorted(i["merchant_oid"] for i in invoices) == sorted(oids)  # exactly one invoice per order
    assert sorted(i["sequence"] for i in invoices) == list(range(1, len(oids) + 1))  # gapless

    callbacks = query(db, "SELECT merchant_oid, outcome FROM callbacks ORDER BY id")
    per_order = Counter((c["merchant_oid"], c["outcome"]) for c in callbacks)
    assert {oid: per_order[(oid, "applied")] for oid in oids} == {oid: 1 for oid in oids}
    assert Counter(c["outcome"] for c in callbacks).keys() <= {"applied", "duplicate"}
    # every delivered attempt was answered OK after its callback had been committed
    delivered = Counter(oid for oid, tried in attempts.items() for a in tried if a.delivered)
    committed = Counter(c["merchant_oid"] for c in callbacks)
    assert all(committed[oid] >= delivered[oid] >= COPIES for oid in oids), (delivered, committed)

    assert query(db, "SELECT count(*) AS n FROM outbox WHERE template = 'payment_succeeded'")[0]["n"] == len(oids)
    assert query(db, "SELECT count(*) AS n FROM anomalies")[0]["n"] == 0
    assert query(db, "SELECT count(*) AS n FROM subscriptions WHERE status = 'active'")[0]["n"] == len(oids)
    with reader(db) as conn:
        assert [tuple(r) for r in conn.execute("PRAGMA integrity_check")] == [("ok",)]
        assert [tuple(r) for r in conn.execute("PRAGMA foreign_key_check")] == []


class Payer(threading.Thread):
    """A customer per token, each paying with a test card on the emulator's page, one after
    another; the last one waits until the app has been killed, so each group outlives its kill."""

    def __init__(self, emulator_url: str, tokens: list[str]):
        super().__init__(daemon=True)
        self.url = emulator_url
        self.tokens = tokens
        self.app_killed = threading.Event()
        self.paid = 0
        self.errors: list[str] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as browser:
            for token in self.tokens[:-1]:
                self.pay(browser, token)
                time.sleep(PAY_PACE)
            if not self.app_killed.wait(timeout=60):
                self.errors.append("the app was never killed")
            self.pay(browser, self.tokens[-1])

    def pay(self, browser: httpx.Client, token: str) -> None:
        try:
            page = browser.post(f"/odeme/guvenli/{token}", data=CARD)
        except httpx.HTTPError as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return
        if page.status_code != 200:
            self.errors.append(f"HTTP {page.status_code}: {page.text[:300]}")
        self.paid += 1
