"""A `success` and a `failed` for the same order, racing each other: whichever is applied
first decides; a later `failed` never undoes a success, and a success after a recorded
failure keeps the money for staff to review without activating anything."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from .support import Shot, encode, failed_form, fire, query, seed_orders, success_form

pytestmark = pytest.mark.slow

ORDERS = 100


def test_success_and_failed_racing_end_as_the_first_applied_one_says(make_app, password_hash):
    app = make_app()
    orders = seed_orders(app.settings, ORDERS, password_hash, tag="race")
    app.start()

    shots = [Shot(encode(success_form(app.settings, o.payment)), label=f"success {o.oid}") for o in orders] + \
            [Shot(encode(failed_form(app.settings, o.payment)), label=f"failed {o.oid}") for o in orders]
    random.Random(31337).shuffle(shots)
    answers = fire(app.callback_url, shots, concurrency=50)
    not_ok = [a for a in answers if (a.status, a.body) != (200, b"OK")]
    assert not not_ok, f"{len(not_ok)} answers were not exactly 200 OK: {not_ok[:5]}\n{app.tail()}"

    db = app.database_path
    calls: dict[str, list[tuple[str, str]]] = {}
    for row in query(db, "SELECT merchant_oid, status, outcome FROM callbacks ORDER BY id"):
        calls.setdefault(row["merchant_oid"], []).append((row["status"], row["outcome"]))
    payments = {r["merchant_oid"]: r for r in query(db, "SELECT * FROM payments")}
    invoiced = {r["merchant_oid"] for r in query(db, "SELECT p.merchant_oid FROM invoices i "
                                                     "JOIN payments p ON p.id = i.payment_id")}
    reviews = {(r["kind"], r["merchant_oid"]) for r in query(db, "SELECT kind, merchant_oid FROM anomalies")}
    subs = {r["company_id"]: r for r in query(db, "SELECT * FROM subscriptions")}

    orders_by_oid = {o.oid: o for o in orders}
    assert set(calls) == set(orders_by_oid)
    seen = Counter()
    for oid, received in calls.items():
        payment, sub = payments[oid], subs[orders_by_oid[oid].company_id]
        context = f"{oid}: callbacks {received}, payment {payment['status']}, subscription {sub['status']}"
        assert sorted(status for status, _ in received) == ["failed", "success"], context
        first, second = received
        if first == ("success", "applied"):
            seen["success first"] += 1
            # the failed that came later was recorded and changed nothing
            assert second == ("failed", "duplicate"), context
            assert payment["status"] == "succeeded" and payment["paid_amount"] == payment["amount"], context
            assert oid in invoiced, context
            assert (sub["status"], sub["plan"]) == ("active", "starter"), context
            assert not [r for r in reviews if r[1] == oid], context
        else:
            seen["failed first"] += 1
            assert first == ("failed", "failed"), context
            # the money arrived after the failure: recorded, flagged for staff, nothing activated
            assert second == ("success", "anomaly"), context
            assert payment["status"] == "needs_review" and payment["paid_amount"] == payment["amount"], context
            assert ("success_after_failure", oid) in reviews, context
            assert oid not in invoiced, context
            assert sub["status"] == "trialing", context
    # no success was ever undone: nothing that a success decided ended up failed
    assert not [p for p in payments.values() if p["status"] == "failed"]
    assert seen["success first"] + seen["failed first"] == ORDERS
    assert seen["success first"] and seen["failed first"], seen  # both races happened

    sequences = sorted(r["sequence"] for r in query(db, "SELECT sequence FROM invoices"))
    assert sequences == list(range(1, seen["success first"] + 1))  # gapless
    assert len(reviews) == seen["failed first"]
