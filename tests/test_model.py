"""A subscription's whole life, driven at random and checked against an independent model.

Hypothesis's stateful testing plays one company's owner, PayTR, staff and the passing of
time in random order: register, pay in the iframe or on the card form saving the card
(paid, declined or left open), renewals charged to the saved card (paid, declined, refused,
PayTR not answering with or without having charged), pay links, upgrades (one or two
tabs, in the iframe or on the saved card), downgrades and undo, cancel and resume, choosing
and removing saved cards, staff refunds (full or partial, PayTR answering, refusing or not
answering, its status query naming the refunds or not), trial extensions,
callbacks delivered late, out of order, twice or never, and ticks of the scheduler minutes
to months apart (long downtime included). After every step the invariants below are
checked against the model: what PayTR collected and refunded (the fake in
tests/model_support.py keeps PayTR's side of the truth) and what the owner asked for.

Domain functions are driven directly, with a clock the test moves; the tick is the real
`jobs.tick`, talking to the fake PayTR. Each example gets a fresh copy of a migrated
database. `MODEL_EXAMPLES` (default 300) and `MODEL_STEPS` (default 40) size the run;
`make test-deep` runs 2,000 examples of 60 steps.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path

import anyio.from_thread
import pytest
from hypothesis import HealthCheck, settings as hypothesis_settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from billing import accounts, cards, changes, clock, jobs, migrations, money, payments, plans, refunds, subscriptions
from billing.accounts import FormError
from billing.db import Store, one, rows, write
from conftest import make_settings
from billing.migrations import SEED_PLANS
from model_support import CHARGE_MODES, FakePaytr, add_month, local_date

EXAMPLES = int(os.environ.get("MODEL_EXAMPLES", "300"))
STEPS = int(os.environ.get("MODEL_STEPS", "40"))

PAID = ("succeeded", "needs_review")  # PayTR collected the money (needs_review: kept for staff)
PERIOD_KINDS = ("subscribe", "renewal")
PLAN_CODES = tuple(code for code, *_ in SEED_PLANS)
DAY = timedelta(days=1)


def price(code: str) -> int:
    return next(row[5] for row in SEED_PLANS if row[0] == code)


def at(value: str | None) -> datetime | None:
    return clock.parse(value) if value else None


# --- strategies ------------------------------------------------------------------------

# Sign-up days chosen so that trials end on month ends (Jan 31, Feb 28, leap Feb 29) and
# across a new year (invoice numbers restart); any minute of the day, local midnight included.
SIGNUP_DAYS = ("2026-11-27", "2027-01-17", "2027-02-14", "2027-12-20", "2028-02-15")
START_TIMES = st.builds(lambda day, minute: clock.parse(f"{day}T00:00:00Z") + timedelta(minutes=minute),
                        st.sampled_from(SIGNUP_DAYS), st.integers(0, 24 * 60 - 1))
# How long until the next tick: minutes, hours, days, or a month or more of downtime.
MINUTES = st.one_of(st.integers(1, 59), st.integers(1, 23).map(lambda h: h * 60),
                    st.integers(1, 13).map(lambda d: d * 1440), st.integers(28, 120).map(lambda d: d * 1440))
# What the customer does at PayTR's page: pays, is declined, or leaves it open (maybe to pay later).
THEN = st.sampled_from(("pay", "decline", "leave"))


@dataclass
class Opened:
    """A checkout the owner started, as the model remembers it."""

    kind: str
    plan: str
    at: datetime
    request: dict
    old_plan: str | None = None  # an upgrade: the plan its quote was made from


# --- one shared migrated database, copied per example ------------------------------------------


class Shared:
    root: Path | None = None
    template: Path | None = None
    settings = None


@pytest.fixture(scope="module", autouse=True)
def shared_world():
    # tmpfs when there is one: the money rules are under test here, not the disk's fsync.
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    Shared.root = Path(tempfile.mkdtemp(prefix="billing-model-", dir=base))
    # Emails keep their context for the whole run: _check_emails reads what each is about from it, and
    # a run spans more than the default 90 days of retention (pruning has its own tests).
    Shared.settings = make_settings(Shared.root, PAYTR_RECURRING="1", MAIL_BODY_RETENTION_DAYS="36500")
    Shared.template = Shared.root / "template.sqlite3"
    store = Store(Shared.template)
    with write(store.db()):
        migrations.apply(store.db())
    store.close()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jobs, "_in_thread", _in_loop)
        # Anomalies and unanswered charges are part of the game here; thousands of their
        # warnings would bury a failing sequence in the report.
        patch.setattr(logging.getLogger("billing"), "level", logging.ERROR)
        yield
    shutil.rmtree(Shared.root, ignore_errors=True)


async def _in_loop(ctx, fn, *args):
    """jobs._in_thread, on the event loop instead of a worker thread. Hypothesis needs every
    run of a sequence to behave the same; with threads, which of two concurrent refund checks
    writes first is up to the OS. Each hop still yields to the loop first, so the tick's
    concurrent work interleaves at the same points as it does with threads, in a fixed order."""
    await asyncio.sleep(0)
    return fn(ctx.store.db(), *args)


# --- the machine ---------------------------------------------------------------------------


class SubscriptionLife(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.s = Shared.settings
        self.tz = self.s.tz
        self.dir = Path(tempfile.mkdtemp(dir=Shared.root))
        shutil.copyfile(Shared.template, self.dir / "billing.sqlite3")
        self.store = Store(self.dir / "billing.sqlite3")
        self.db = self.store.db()
        self._portal = anyio.from_thread.start_blocking_portal()
        self.portal = self._portal.__enter__()
        self.paytr = FakePaytr(self.s)
        self.ctx = jobs.Context(store=self.store, settings=self.s, clock=None, paytr=self.paytr)
        self.now: datetime | None = None
        self.owner: dict | None = None
        # The model: what the owner asked for and started, independent of the database.
        self.checkouts: dict[str, Opened] = {}
        self.plan: str | None = None
        self.scheduled: str | None = None
        self.plan_from: list[tuple[datetime, str]] = []  # periods paid early on another plan: (start, plan)
        self.cancel_requested_at: datetime | None = None
        self.trial_end: datetime | None = None
        self.card_pin: tuple | None = None  # (when, ctoken or None): the owner's last word on cards
        self.cards_heard: list[tuple] = []  # (SavedCard, when): cards saved by payments the app applied, in order
        self.charges_checked = 0
        self.callbacks_seen = 0
        self.prev: dict | None = None
        self.ticked = False  # this step ran the scheduler

    def teardown(self):
        self._portal.__exit__(None, None, None)
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- helpers ---------------------------------------------------------------------------

    def _sub(self) -> dict:
        return subscriptions.for_company(self.db, self.owner["company_id"])

    def _company(self) -> dict:
        return accounts.company(self.db, self.owner["company_id"])

    def _set_time(self, now: datetime) -> None:
        self.now = now
        self.paytr.now = now

    def _tick(self) -> None:
        # The scheduler ticks every minute while the app is up: what one tick leaves due
        # (a state just changed by a callback it reconciled) the next one does.
        self.portal.call(jobs.tick, self.ctx, self.now)
        self._set_time(self.now + timedelta(minutes=1))
        self.portal.call(jobs.tick, self.ctx, self.now)
        self.ticked = True

    def _deliver(self, index: int) -> str:
        cb = self.paytr.take(index)
        before = self._sub()
        outcome = payments.apply_callback(self.db, self.now, self.s, cb, "203.0.113.9")
        if outcome == "anomaly":
            assert _state(self._sub()) == _state(before), (
                f"a payment kept for staff review ({cb.merchant_oid}) changed the subscription: "
                f"{_state(before)} -> {_state(self._sub())}")
        return outcome

    def _customer_at_paytr(self, payment: dict, then: str, deliver: bool) -> None:
        if then == "leave":
            return
        self.paytr.customer_pays(payment, self.checkouts[payment["merchant_oid"]].request, then == "pay")
        if deliver:
            self._deliver(-1)

    def _payable(self) -> list[dict]:
        if self.owner is None:
            return []
        return [p for p in rows(self.db, "SELECT * FROM payments WHERE method IN ('iframe', 'direct') ORDER BY id")
                if self.paytr.payable(p) and p["merchant_oid"] in self.checkouts]

    def _refundable(self) -> list[dict]:
        if self.owner is None:
            return []
        return [p for p in rows(self.db, "SELECT * FROM payments WHERE status IN ('succeeded', 'needs_review') "
                                         "ORDER BY id") if refunds.refundable(self.db, p) > 0]

    # --- the owner ---------------------------------------------------------------------------

    @initialize(start=START_TIMES, plan=st.sampled_from(PLAN_CODES))
    def register(self, start, plan):
        self._set_time(start)
        self.owner = accounts.register(self.db, start, self.s, company_name="Model Yazılım A.Ş.", name="Ayşe Model",
                                       email="owner@example.com", password_hash="not-a-real-hash", plan=plan)
        self.plan = plan
        self.trial_end = start + timedelta(days=self.s.trial_days)
        self._tick()

    @rule(choice=st.sampled_from(("the renewal's plan",) + PLAN_CODES), method=st.sampled_from(("iframe", "direct")),
          then=THEN, deliver=st.booleans())
    def checkout(self, choice, method, then, deliver):
        """Subscribe, or pay the next period (a pay link), in the iframe or saving the card."""
        sub = self._sub()
        plan = (sub["scheduled_plan"] or sub["plan"]) if choice == "the renewal's plan" else choice
        try:
            started = payments.start_checkout(self.db, self.now, self.s, user=self.owner, plan_code=plan,
                                              ip="85.34.78.112", method=method)
        except payments.CheckoutError:
            assert _state(self._sub()) == _state(sub)
            return
        payment = started.payment
        assert (payment["plan"], payment["amount"]) == (plan, price(plan)), "a checkout asks for the plan's price"
        self.checkouts[payment["merchant_oid"]] = Opened(payment["kind"], plan, self.now, started.request)
        self._customer_at_paytr(payment, then, deliver)

    @precondition(lambda self: self._payable())
    @rule(i=st.integers(0, 9), success=st.booleans(), deliver=st.booleans())
    def pay_an_open_checkout(self, i, success, deliver):
        """The customer pays (or is declined in) a checkout page still open, an older tab included."""
        candidates = self._payable()
        self._customer_at_paytr(candidates[i % len(candidates)], "pay" if success else "decline", deliver)

    @rule(plan=st.sampled_from(("team", "enterprise")), via=st.sampled_from(("iframe", "saved card")), then=THEN,
          deliver=st.booleans())
    def upgrade(self, plan, via, then, deliver):
        sub = self._sub()
        try:
            quote = changes.upgrade_quote(self.db, self.now, self.s, self.owner["company_id"], plan)
        except changes.ChangeError:
            assert _state(self._sub()) == _state(sub)
            return
        self._check_quote(quote, sub, plan)
        if not quote.amount:
            changes.upgrade_for_free(self.db, self.now, self.s, self.owner, plan)
            self.plan, self.scheduled, self.plan_from = plan, None, []
            return
        on_card = via == "saved card" and bool(self.s.paytr_recurring and self._company()["paytr_utoken"])
        try:
            started = payments.start_checkout(self.db, self.now, self.s, user=self.owner, plan_code=plan,
                                              ip="85.34.78.112", upgrade=quote,
                                              method="recurring" if on_card else "iframe")
        except payments.CheckoutError:
            return
        payment = started.payment
        assert (payment["kind"], payment["amount"]) == ("upgrade", quote.amount), "an upgrade charges its quote"
        self.checkouts[payment["merchant_oid"]] = Opened("upgrade", plan, self.now, started.request,
                                                         old_plan=sub["plan"])
        if on_card:
            waiting = len(self.paytr.outbox)
            self.portal.call(jobs.charge_now, self.ctx, self.now, payment["id"])
            if deliver and len(self.paytr.outbox) > waiting:
                self._deliver(-1)
        else:
            self._customer_at_paytr(payment, then, deliver)

    @rule(plan=st.sampled_from(PLAN_CODES))
    def downgrade(self, plan):
        try:
            changes.schedule_downgrade(self.db, self.now, self.s, self.owner, plan)
        except changes.ChangeError:
            return
        self.scheduled = plan

    @rule()
    def undo_downgrade(self):
        try:
            changes.undo_scheduled_change(self.db, self.now, self.s, self.owner)
        except changes.ChangeError:
            return
        self.scheduled = None

    @rule()
    def cancel(self):
        try:
            sub = changes.cancel_at_period_end(self.db, self.now, self.s, self.owner)
        except changes.ChangeError:
            return
        if sub["cancel_at_period_end"] and self.cancel_requested_at is None:
            self.cancel_requested_at = self.now
        self.scheduled = None

    @rule()
    def resume(self):
        try:
            changes.resume(self.db, self.now, self.s, self.owner)
        except changes.ChangeError:
            return
        self.cancel_requested_at = None

    @precondition(lambda self: self.owner is not None and self._company()["paytr_utoken"])
    @rule(i=st.integers(0, 9), action=st.sampled_from(("look", "choose", "remove")))
    def owner_manages_saved_cards(self, i, action):
        """The dashboard lists PayTR's cards and names the one renewals charge; the owner may
        choose another, or remove one."""
        # A second apart from the steps before and after: which came first is then plain from the
        # times the model compares (a choice and a payment in the same instant cannot be ordered).
        self._set_time(self.now + timedelta(seconds=1))
        found = self.portal.call(self.paytr.list_cards, self._company()["paytr_utoken"])
        company = cards.sync(self.db, self.now, self._company(), found)
        shown = company["paytr_ctoken"] if company["paytr_utoken"] else None
        allowed = self._allowed_cards()
        assert shown in allowed or (shown is None and not allowed), (
            f"the dashboard says renewals charge {self._card_name(shown)}, but the company's card is "
            f"{' or '.join(self._card_name(c) for c in allowed) or 'none (pay links)'}")
        if action == "look" or not found:
            return
        card = self.paytr.card(found[i % len(found)]["ctoken"])
        if action == "choose":
            try:
                cards.choose(self.db, self.now, self.owner, company, found, card.ctoken)
            except cards.CardError:
                return
            self.card_pin = (self.now, card.ctoken)
            self._set_time(self.now + timedelta(seconds=1))
        else:
            self.portal.call(self.paytr.delete_card, company["paytr_utoken"], card.ctoken)
            cards.removed(self.db, self.now, self.s, self.owner, company, found, card.ctoken)
            # Removing the card renewals charge means pay links until the owner chooses another.
            self.card_pin = (self.now, None if card.ctoken == shown else shown)
            self._set_time(self.now + timedelta(seconds=1))

    # --- PayTR -------------------------------------------------------------------------------

    @precondition(lambda self: self.paytr.outbox)
    @rule(i=st.integers(0, 9))
    def deliver_a_callback(self, i):
        """PayTR's callbacks arrive late and in any order."""
        self._deliver(i)

    @precondition(lambda self: self.paytr.delivered)
    @rule(i=st.integers(0, 9))
    def deliver_a_callback_again(self, i):
        cb = self.paytr.delivered[i % len(self.paytr.delivered)]
        before = _tables(self.db)
        outcome = payments.apply_callback(self.db, self.now, self.s, cb, "203.0.113.9")
        assert outcome == "duplicate", f"a repeated callback for {cb.merchant_oid} was taken as {outcome!r}"
        assert _tables(self.db) == before, f"a repeated callback for {cb.merchant_oid} changed something"

    @rule(mode=st.sampled_from(CHARGE_MODES))
    def paytr_will_answer_saved_card_charges(self, mode):
        self.paytr.charge_mode = mode

    @rule(listed=st.booleans())
    def paytr_status_names_refunds(self, listed):
        self.paytr.lists_reference_no = listed

    # --- time ----------------------------------------------------------------------------------

    @rule(minutes=MINUTES)
    def time_passes(self, minutes):
        """The scheduler's next tick comes minutes, days or (the app was down) months later."""
        self._set_time(self.now + timedelta(minutes=minutes))
        self._tick()

    @precondition(lambda self: self._next_due() is not None)
    @rule(late=st.sampled_from((0, 1, 45, 6 * 60, 2 * 1440)))
    def time_passes_until_something_is_due(self, late):
        """The scheduler, running all along, next has something to do (the subscription's next
        step, a payment to ask PayTR about, a refund to check): the tick then, or somewhat late."""
        self._set_time(max(self.now + timedelta(minutes=1), self._next_due() + timedelta(minutes=late)))
        self._tick()

    def _next_due(self) -> datetime | None:
        if self.owner is None:
            return None
        due = [at(value) for (value,) in self.db.conn.execute(
            """SELECT next_action_at FROM subscriptions
               UNION ALL SELECT min(reconcile_at) FROM payments WHERE status IN ('pending', 'superseded')
               UNION ALL SELECT min(check_at) FROM refunds""") if value]
        return min(due) if due else None

    # --- staff -----------------------------------------------------------------------------------

    @precondition(lambda self: self._refundable())
    @rule(i=st.integers(0, 9), part=st.one_of(st.none(), st.integers(1, 30000)),
          answer=st.sampled_from(("ok", "refused", "timeout_made", "timeout_not_made")), twice=st.booleans())
    def staff_refund(self, i, part, answer, twice):
        candidates = self._refundable()
        payment = candidates[i % len(candidates)]
        left = refunds.refundable(self.db, payment)
        amount = left if part is None else min(part, left)
        key = refunds.new_request_key()
        form = dict(payment_id=payment["id"], amount=money.decimal_string(amount), reason="Model test refund",
                    request_key=key, actor="staff:1")
        try:
            refund, created = refunds.start(self.db, self.now, **form)
        except FormError as exc:
            raise AssertionError(f"a refund of {amount} of the {left} left was refused: {exc}") from None
        assert created
        if twice:  # the staff form sent twice: one refund
            again, created_again = refunds.start(self.db, self.now, **form)
            assert again["id"] == refund["id"] and not created_again
        oid, reference = payment["merchant_oid"], refund["reference_no"]
        if answer == "ok":
            made = self.paytr.refund(oid, amount, reference)
            refunds.settle(self.db, self.now, self.s, refund["id"], ok=made,
                           message="PayTR accepted the refund." if made else "PayTR refused the refund.")
        elif answer == "refused":
            refunds.settle(self.db, self.now, self.s, refund["id"], ok=False, message="PayTR refused the refund.")
        else:
            if answer == "timeout_made":
                self.paytr.refund(oid, amount, reference)
            refunds.unknown(self.db, self.now, refund["id"], "PayTR did not answer in time")

    @rule(days=st.integers(1, 90))
    def staff_extend_trial(self, days):
        try:
            with write(self.db):
                sub = self._sub()
                subscriptions.extend_trial(self.db, self.now, sub, days, "staff:1")
        except subscriptions.TransitionError:
            return
        self.trial_end = max(self.now, self.trial_end) + timedelta(days=days)

    # --- the invariants --------------------------------------------------------------------------

    def _check_quote(self, quote, sub: dict, new_plan: str) -> None:
        """A quote prorates the price difference over the paid time left, period by period."""
        periods = [(at(p["period_start"]), at(p["period_end"])) for p in rows(
            self.db, "SELECT * FROM payments WHERE status = 'succeeded' AND kind IN ('subscribe', 'renewal')")]
        ahead = [(start, end) for start, end in periods if end > self.now]
        share = sum((Fraction(int((end - max(self.now, start)).total_seconds()), int((end - start).total_seconds()))
                     for start, end in ahead), Fraction(0))
        expected = (price(new_plan) - price(sub["plan"])) * share
        assert (quote.old.code, quote.new.code) == (sub["plan"], new_plan)
        assert ahead, f"an upgrade was quoted at {self.now} with no paid time left"
        assert quote.period_end == max(end for _, end in ahead), "the quote runs to the end of the paid time"
        # Prorated on the net prices (so the VAT is exactly the rate of the net), which differ from
        # the prices without VAT by up to half a cent each: up to a cent per period, plus rounding
        # the net and its VAT once.
        assert abs(quote.exact - expected) <= share + 2, (
            f"upgrading {sub['plan']} -> {new_plan} at {self.now} was quoted {quote.exact} cents; the paid time "
            f"left ({', '.join(f'{s} – {e}' for s, e in ahead)}) is {float(share):.4f} of a period, so "
            f"{float(expected):.2f} cents (current_period_start={sub['current_period_start']})")
        assert quote.amount == (quote.exact if quote.exact >= changes.MINIMUM_CHARGE else 0)

    @invariant()
    def the_books_agree_with_paytr_and_the_owner(self):
        if self.owner is None:
            return
        v = _read(self.db, self.owner["company_id"], self.callbacks_seen)
        self._check_what_changed(v)
        self._check_money(v)
        self._check_invoices(v)
        self._check_periods(v)
        if self.ticked:
            self._check_state(v)
        self._check_refunds(v)
        self._check_credit_notes(v)
        self._check_emails(v)
        self.callbacks_seen = v["callbacks"][-1]["id"] if v["callbacks"] else self.callbacks_seen
        self.prev, self.ticked = v, False

    def _check_what_changed(self, v: dict) -> None:
        """The plan is the last one paid for or scheduled by the owner, from the period it was
        paid for; a cancellation asked for is never undone except by the owner's resume."""
        known = {p["id"] for p in self.prev["payments"]} if self.prev else set()
        by_oid = {p["merchant_oid"]: p for p in v["payments"]}
        # In the order they happened: a tick starts renewal charges, sends them to PayTR, then
        # applies what the status query found.
        happened = sorted([(p["created_at"], 0, p) for p in v["payments"] if p["id"] not in known
                           and p["kind"] == "renewal" and p["method"] == "recurring"]
                          + [(clock.iso(c.at), 1, c) for c in self.paytr.charges[self.charges_checked:]]
                          + [(cb["received_at"], 2, by_oid[cb["merchant_oid"]]) for cb in v["callbacks"]
                             if cb["outcome"] == "applied"], key=lambda event: event[:2])
        self.charges_checked = len(self.paytr.charges)
        for when, what, p in happened:
            self._plans_take_effect(at(when))
            if what == 0:
                expected = self.scheduled or self.plan
                assert (p["plan"], p["amount"]) == (expected, price(expected)), (
                    f"the renewal charge is for {p['plan']} ({p['amount']}) but the owner's next period is "
                    f"{expected} ({price(expected)})")
                continue
            if what == 1:
                self._check_card_charged(p)
                continue
            tx = self.paytr.tx[p["merchant_oid"]]
            if p["method"] == "direct" and tx.ctoken:
                self.cards_heard.append((self.paytr.card(tx.ctoken), at(p["decided_at"])))
            opened = self.checkouts.get(p["merchant_oid"])
            if p["kind"] == "upgrade":
                assert opened.old_plan == self.plan, (
                    f"an upgrade quoted and paid as {opened.old_plan} -> {p['plan']} was applied to a customer on "
                    f"{self.plan} (now {p['plan']})")
                assert price(p["plan"]) > price(self.plan), f"an upgrade moved the customer from {self.plan} " \
                                                             f"down to {p['plan']}"
                # it covers every period paid so far
                self.plan, self.scheduled, self.plan_from = p["plan"], None, []
                continue
            if (self.cancel_requested_at and opened is not None and opened.at > self.cancel_requested_at
                    and not v["sub"]["cancel_at_period_end"]):
                self.cancel_requested_at = None  # the owner paid again after canceling: their choice
            if p["kind"] == "renewal" and p["decided_at"] < p["base_period_end"]:
                self.plan_from.append((at(p["period_start"]), p["plan"]))  # paid early: from its period on
            else:
                self.plan = p["plan"]
            if self.scheduled == p["plan"]:
                self.scheduled = None
        self._plans_take_effect(self.now)
        sub = v["sub"]
        if sub["status"] in (subscriptions.CANCELED, subscriptions.EXPIRED):
            self.cancel_requested_at, self.scheduled = None, None  # the subscription ended as asked
        assert sub["plan"] == self.plan, (
            f"the subscription is on {sub['plan']}, but the plan paid for the time running now is {self.plan}"
            + (f" (then {', '.join(f'{plan} from {start}' for start, plan in self.plan_from)})"
               if self.plan_from else ""))
        if self.cancel_requested_at:
            assert sub["status"] == subscriptions.CANCELED or (
                sub["status"] == subscriptions.ACTIVE and sub["cancel_at_period_end"]), (
                f"the owner canceled at {self.cancel_requested_at} and never resumed, yet the subscription is "
                f"{sub['status']} with cancel_at_period_end={sub['cancel_at_period_end']}, paid until "
                f"{sub['current_period_end']}")

    def _plans_take_effect(self, now: datetime) -> None:
        """A period paid early on another plan (a scheduled downgrade) begins: its plan applies."""
        while self.plan_from and self.plan_from[0][0] <= now:
            self.plan = self.plan_from.pop(0)[1]

    def _check_card_charged(self, charge) -> None:
        """The saved card charged is always the company's chosen card."""
        allowed = self._allowed_cards()
        assert charge.ctoken in allowed, (
            f"charge {charge.oid} used {self._card_name(charge.ctoken)}, but the company's card is "
            f"{' or '.join(self._card_name(c) for c in allowed) or 'none (pay links)'}")

    def _allowed_cards(self) -> set[str]:
        """The company's chosen card now: the one the owner chose last, or one saved with a
        payment since (the newest; PayTR may already list a card newer still, whose payment we
        have not heard of: that one may be taken too). A card saved before the owner's choice
        but heard of only after it may be taken or not: nobody can tell which came first."""
        def from_(card) -> set[str]:  # a card the owner removed is nobody's card any more
            return {c.ctoken for c in self.paytr.cards if c.utoken == card.utoken and c.seq >= card.seq}

        heard = [card for card, _ in self.cards_heard]
        if self.card_pin is None:
            return from_(max(heard, key=lambda c: c.seq)) if heard else set()
        pinned_at, pinned = self.card_pin
        later = [c for c in heard if self.paytr.tx[c.oid].at > pinned_at]
        if later:
            return from_(max(later, key=lambda c: c.seq))
        allowed = {pinned} if pinned and any(c.ctoken == pinned for c in self.paytr.cards) else set()
        for card, heard_at in self.cards_heard:
            if heard_at > pinned_at:
                allowed |= from_(card)
        return allowed

    def _card_name(self, ctoken: str | None) -> str:
        if ctoken is None:
            return "no card"
        card = self.paytr.card(ctoken)
        return f"card #{card.seq} (saved with payment {card.oid})"

    def _check_money(self, v: dict) -> None:
        """Money received == sum of successful payments (plus those kept for review), as PayTR says."""
        received = reported = 0
        for p in v["payments"]:
            tx = self.paytr.tx.get(p["merchant_oid"])
            if p["status"] in PAID:
                assert tx is not None and tx.outcome == "success", (
                    f"payment {p['merchant_oid']} is {p['status']} but PayTR collected nothing for it")
                assert p["paid_amount"] == tx.amount, "the amount recorded is not what PayTR collected"
                received += p["paid_amount"]
            if tx is not None and tx.outcome == "success" and tx.reported:
                assert p["status"] in PAID, (
                    f"PayTR collected {tx.amount} for {p['merchant_oid']} and said so, but it is {p['status']}")
                reported += tx.amount
        assert received == reported

    def _check_invoices(self, v: dict) -> None:
        """Every successful payment has exactly one invoice, numbered gaplessly per year, whose
        VAT is the rate of its net and whose line names what was bought."""
        by_payment: dict[int, dict] = {}
        for invoice in v["invoices"]:
            assert invoice["payment_id"] not in by_payment, "two invoices for one payment"
            by_payment[invoice["payment_id"]] = invoice
        lines: dict[int, list[dict]] = {}
        for line in v["lines"]:
            lines.setdefault(line["invoice_id"], []).append(line)
        rate = Decimal(self.s.vat_rate)
        for p in v["payments"]:
            invoice = by_payment.get(p["id"])
            if p["status"] != "succeeded":
                assert invoice is None, f"a {p['status']} payment has invoice {invoice and invoice['number']}"
                continue
            assert invoice is not None, f"payment {p['merchant_oid']} succeeded without an invoice"
            assert invoice["total"] == p["amount"] == sum(line["amount"] for line in lines[invoice["id"]])
            assert invoice["net"] + invoice["vat"] == invoice["total"]
            vat = int((Decimal(invoice["net"]) * rate / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
            assert invoice["vat"] == vat, (
                f"invoice {invoice['number']}: total {invoice['total']} = net {invoice['net']} + VAT "
                f"{invoice['vat']}, but {rate} % of the net is {vat}")
            text = " ".join(line["description"] for line in lines[invoice["id"]])
            end = local_date(at(invoice["period_end"]), self.tz)
            if p["kind"] in PERIOD_KINDS:
                assert (invoice["period_start"], invoice["period_end"]) == (p["period_start"], p["period_end"])
                start = local_date(at(invoice["period_start"]), self.tz)
                assert start in text and end in text, (
                    f"invoice {invoice['number']} is for {start} – {end} but its line says {text!r}")
            else:
                assert at(invoice["period_start"]) < at(invoice["period_end"]), (
                    f"upgrade invoice {invoice['number']} is for {invoice['period_start']} – "
                    f"{invoice['period_end']}: applied after the period it upgrades had ended")
                assert end in text, f"invoice {invoice['number']} runs until {end} but its line says {text!r}"
        years: dict[int, list[int]] = {}
        for invoice in v["invoices"]:
            years.setdefault(invoice["year"], []).append(invoice["sequence"])
            assert invoice["number"] == f"INV-{invoice['year']}-{invoice['sequence']:06d}"
            assert invoice["year"] == at(invoice["issued_at"]).astimezone(self.tz).year
        for year, numbers in years.items():
            assert sorted(numbers) == list(range(1, len(numbers) + 1)), f"invoice numbers of {year}: {sorted(numbers)}"

    def _check_periods(self, v: dict) -> None:
        """No period is paid twice; paid days are never lost; a payment never buys only the past;
        a period is one calendar month on the anchor day."""
        bought = sorted((p for p in v["payments"] if p["status"] == "succeeded" and p["kind"] in PERIOD_KINDS),
                        key=lambda p: p["period_start"])
        anchors: set[int] = set()
        previous = None
        for p in bought:
            start, end, decided = at(p["period_start"]), at(p["period_end"]), at(p["decided_at"])
            collected = self.paytr.tx[p["merchant_oid"]].at
            name = f"{p['kind']} {p['plan']} paid {p['decided_at']} for {p['period_start']} – {p['period_end']}"
            assert end > collected, f"{name}: the money (collected {collected}) bought only days already gone"
            if previous is None:
                if decided < self.trial_end:
                    assert start == self.trial_end, f"{name}: paid during the trial, it starts when the trial ends " \
                                                    f"({self.trial_end})"
                else:
                    assert at(p["created_at"]) <= start <= decided, f"{name}: a new subscription starts when paid"
                anchors = {start.astimezone(self.tz).day}
            else:
                before_end = at(previous["period_end"])
                assert start >= before_end, f"{name}: overlaps the period already paid until {before_end}"
                if decided < before_end:
                    assert start == before_end, f"{name}: paid early, it must start when the paid time ends " \
                                                f"({before_end})"
                elif start != before_end:
                    assert start <= decided, f"{name}: paid late, yet it starts after the payment"
                    anchors = anchors | {start.astimezone(self.tz).day}
            fits = {day for day in anchors if add_month(start, day, self.tz) == end}
            assert fits, f"{name}: not one calendar month on the anchor day ({sorted(anchors)})"
            anchors = fits
            previous = p
        sub = v["sub"]
        if bought:
            paid_until = at(bought[-1]["period_end"])
            if sub["status"] in (subscriptions.ACTIVE, subscriptions.PAST_DUE):
                assert at(sub["current_period_end"]) == paid_until, (
                    f"the subscription runs until {sub['current_period_end']} but was paid until {paid_until}")
            if self.now < paid_until:
                assert sub["status"] == subscriptions.ACTIVE, (
                    f"paid until {paid_until}, yet at {self.now} the subscription is {sub['status']}")

    def _check_state(self, v: dict) -> None:
        """Never active past its period end, nor in grace past the grace days, without a payment.
        (Checked after the scheduler ran: a callback may leave work for its next tick.)"""
        sub, now = v["sub"], self.now
        in_flight = any(p["status"] == "pending" and p["kind"] == "renewal" and p["method"] == "recurring"
                        and p["base_period_end"] == sub["current_period_end"] for p in v["payments"])
        end = at(sub["current_period_end"])
        if sub["status"] == subscriptions.ACTIVE and not in_flight:
            assert now < end, f"active at {now}, past its period end {end}, with no renewal charge under way"
        if sub["status"] == subscriptions.PAST_DUE and not in_flight:
            assert now < end + self.s.grace_days * DAY, (
                f"past due at {now}, beyond the {self.s.grace_days} days of grace after {end}")
        if sub["status"] == subscriptions.TRIALING:
            assert now < at(sub["trial_ends_at"]), f"still on trial at {now}, after it ended"
        if sub["status"] in (subscriptions.TRIALING, subscriptions.EXPIRED):
            assert at(sub["trial_ends_at"]) == self.trial_end

    def _check_refunds(self, v: dict) -> None:
        """Refunds never exceed what was paid, and the books say what PayTR refunded: every
        refund PayTR made is recorded as made or still being checked, and no other is made."""
        by_payment: dict[int, list[dict]] = {}
        for r in v["refunds"]:
            by_payment.setdefault(r["payment_id"], []).append(r)
        for p in v["payments"]:
            these = by_payment.get(p["id"], [])
            spent = sum(r["amount"] for r in these if r["status"] in ("pending", "unknown", "succeeded"))
            assert spent <= (p["paid_amount"] or 0), f"refunds of {spent} on a payment of {p['paid_amount']}"
            tx = self.paytr.tx.get(p["merchant_oid"])
            refunded = tx.refunded if tx else 0
            recorded = sum(r["amount"] for r in these if r["status"] == "succeeded")
            checking = sum(r["amount"] for r in these if r["status"] in ("pending", "unknown")
                           and self.paytr.refund_made(r["reference_no"]))
            books = ", ".join(f"{r['amount']} {r['status']}" for r in these)
            assert recorded + checking == refunded, (
                f"PayTR refunded {refunded} of payment {p['merchant_oid']}; the books say {books}")

    def _check_credit_notes(self, v: dict) -> None:
        """Every refund PayTR made against an invoiced payment has one credit note, and no other
        refund has one; an invoice's credit notes credit exactly what was refunded of it, never
        more than the invoice (net and VAT each), and their numbers are gapless per year."""
        notes_by_refund = {n["refund_id"]: n for n in v["credit_notes"]}
        invoice_by_payment = {i["payment_id"]: i for i in v["invoices"]}
        refunded: dict[int, int] = {}
        for r in v["refunds"]:
            note = notes_by_refund.get(r["id"])
            invoice = invoice_by_payment.get(r["payment_id"])
            if r["status"] != "succeeded":
                assert note is None, f"a credit note for refund {r['reference_no']}, which is {r['status']}"
            elif invoice is not None:
                refunded[invoice["id"]] = refunded.get(invoice["id"], 0) + r["amount"]
        for invoice in v["invoices"]:
            notes = [n for n in v["credit_notes"] if n["invoice_id"] == invoice["id"]]
            total = sum(n["total"] for n in notes)
            assert total == min(invoice["total"], refunded.get(invoice["id"], 0)), (
                f"{invoice['number']}: credit notes of {total}, refunds of {refunded.get(invoice['id'], 0)}")
            assert sum(n["net"] for n in notes) <= invoice["net"] and sum(n["vat"] for n in notes) <= invoice["vat"]
            assert all(n["net"] + n["vat"] == n["total"] for n in notes)
            assert sum(n["full_credit"] for n in notes) == (1 if notes and total == invoice["total"] else 0)
        by_year: dict[int, list[int]] = {}
        for n in v["credit_notes"]:
            by_year.setdefault(n["year"], []).append(n["sequence"])
        for year, numbers in by_year.items():
            assert sorted(numbers) == list(range(1, len(numbers) + 1)), f"credit note numbers of {year}: {numbers}"

    def _check_emails(self, v: dict) -> None:
        """Each email goes once for what it is about."""
        keys = Counter(m["dedupe_key"] for m in v["outbox"])
        assert max(keys.values()) == 1
        about = Counter()
        for m in v["outbox"]:
            context = json.loads(m["context"] or "{}")
            if m["template"] == "payment_succeeded":
                about[("receipt", context.get("invoice_number"))] += 1
            elif m["template"] == "refund_issued":
                about[("refund", m["dedupe_key"])] += 1
            elif m["template"] == "subscription_canceled":
                about[("canceled", context.get("period_end"))] += 1
            elif m["template"] == "renewal_failed":
                about[("overdue", context.get("period_end"), context.get("step"))] += 1
        twice = [what for what, count in about.items() if count > 1]
        assert not twice, f"sent more than once: {twice}"
        receipts = sum(1 for what in about if what[0] == "receipt")
        bought = sum(1 for p in v["payments"] if p["status"] == "succeeded" and p["kind"] in PERIOD_KINDS)
        assert receipts == bought, f"{receipts} receipts for {bought} periods paid"
        made = sum(1 for r in v["refunds"] if r["status"] == "succeeded")
        assert sum(1 for what in about if what[0] == "refund") == made


def _state(sub: dict) -> tuple:
    """What a payment kept for review must not change."""
    return tuple(sub[k] for k in ("status", "plan", "current_period_end", "cancel_at_period_end", "scheduled_plan",
                                  "trial_ends_at"))


def _tables(db) -> tuple:
    return tuple(rows(db, f"SELECT * FROM {table} ORDER BY rowid") for table in
                 ("payments", "invoices", "subscriptions", "outbox", "refunds", "anomalies", "companies"))


def _read(db, company_id: int, callbacks_seen: int) -> dict:
    return {
        "sub": one(db, "SELECT * FROM subscriptions WHERE company_id = ?", [company_id]),
        "payments": rows(db, "SELECT * FROM payments ORDER BY id"),
        "invoices": rows(db, "SELECT * FROM invoices ORDER BY id"),
        "lines": rows(db, "SELECT * FROM invoice_lines ORDER BY id"),
        "refunds": rows(db, "SELECT * FROM refunds ORDER BY id"),
        "credit_notes": rows(db, "SELECT * FROM credit_notes ORDER BY id"),
        "outbox": rows(db, "SELECT id, dedupe_key, template, context FROM outbox ORDER BY id"),
        "callbacks": rows(db, "SELECT id, merchant_oid, outcome, received_at FROM callbacks WHERE id > ? "
                              "ORDER BY id", [callbacks_seen]),
    }


SubscriptionLife.TestCase.settings = hypothesis_settings(
    max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, print_blob=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestSubscriptionLife = SubscriptionLife.TestCase
