"""PayTR repeats callbacks; a storm of repeats, arriving concurrently and shuffled, pays
each order once: one payment, one gapless invoice number, one receipt, every raw call kept."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from .support import Shot, encode, fire, query, scalar, seed_orders, success_form

pytestmark = pytest.mark.slow

ORDERS = 100
COPIES = 10
IN_FLIGHT = 50


def test_a_storm_of_duplicate_callbacks_pays_each_order_exactly_once(make_app, password_hash):
    app = make_app()
    orders = seed_orders(app.settings, ORDERS, password_hash, tag="storm")
    app.start()

    shots = [Shot(encode(success_form(app.settings, order.payment)), label=order.oid)
             for order in orders for _ in range(COPIES)]
    random.Random(20261127).shuffle(shots)
    answers = fire(app.callback_url, shots, concurrency=IN_FLIGHT)

    not_ok = [a for a in answers if (a.status, a.body) != (200, b"OK")]
    assert len(answers) == ORDERS * COPIES
    assert not not_ok, f"{len(not_ok)} answers were not exactly 200 OK: {not_ok[:5]}\n{app.tail()}"

    db = app.database_path
    oids = {order.oid for order in orders}
    statuses = {r["merchant_oid"]: r["status"] for r in query(db, "SELECT merchant_oid, status FROM payments")}
    assert statuses == {oid: "succeeded" for oid in oids}, app.tail()

    invoices = query(db, "SELECT i.number, i.year, i.sequence, p.merchant_oid FROM invoices i "
                         "JOIN payments p ON p.id = i.payment_id ORDER BY i.sequence")
    assert sorted(i["merchant_oid"] for i in invoices) == sorted(oids)  # one invoice per order
    assert [i["sequence"] for i in invoices] == list(range(1, ORDERS + 1))  # no gap, no repeat
    assert len({i["year"] for i in invoices}) == 1
    assert [i["number"] for i in invoices] == [f"INV-{i['year']}-{i['sequence']:06d}" for i in invoices]

    receipts = query(db, "SELECT dedupe_key, to_addr FROM outbox WHERE template = 'payment_succeeded'")
    assert len(receipts) == ORDERS
    assert sorted(r["dedupe_key"] for r in receipts) == sorted(f"payment-succeeded:{oid}" for oid in oids)

    callbacks = query(db, "SELECT merchant_oid, outcome FROM callbacks ORDER BY id")
    assert len(callbacks) == ORDERS * COPIES  # every raw callback is kept
    assert Counter(c["outcome"] for c in callbacks) == {"applied": ORDERS, "duplicate": ORDERS * (COPIES - 1)}
    per_order = {}
    for c in callbacks:
        per_order.setdefault(c["merchant_oid"], []).append(c["outcome"])
    # the first callback of each order decided it; every later one was a recorded no-op
    assert per_order == {oid: ["applied"] + ["duplicate"] * (COPIES - 1) for oid in oids}

    assert scalar(db, "SELECT count(*) FROM subscriptions WHERE status = 'active' AND plan = 'starter'") == ORDERS
    assert scalar(db, "SELECT count(*) FROM anomalies") == 0
