"""Scheduled work: one `tick` does whatever is due, claimed row by row.

APScheduler is only the clock tick (every TICK_SECONDS); what is due lives in
the database, in indexed columns: `subscriptions.next_action_at`,
`payments.charge_requested_at` and `payments.reconcile_at`. Each kind of work
is claimed with one UPDATE … RETURNING that pushes the row's time forward (a
lease), so two processes ticking at once, or a restart in the middle of a tick,
never do the same work twice, and work missed while the app was down is done
once by the next tick. An idle tick is a handful of index lookups.

In the server, renewal charges are sent by the ChargeLane, a task of their own, so a storm of
them waiting on PayTR never delays the tick; `main.py jobs run` (no lane) sends them in the tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import anyio.to_thread

from billing import billing_details, cards, clock, lifecycle, mail, payments, refunds, revenue
from billing.db import Store, one, rows, write
from billing.ops import backup, metrics
from billing.paytr import protocol
from billing.paytr.client import PaytrClient, PaytrRefused, PaytrUnavailable
from billing.settings import Settings

log = logging.getLogger("billing.jobs")

LEASE = timedelta(minutes=5)  # a claimed row comes back if its worker died
RECONCILE_RETRY = timedelta(minutes=10)
BATCH = 200
NETWORK_CONCURRENCY = 8
# An unanswered renewal charge is looked up with PayTR's status query this long after it was sent.
CHARGE_RECONCILE_AFTER = timedelta(minutes=30)


@dataclass
class Context:
    store: Store
    settings: Settings
    clock: object
    paytr: PaytrClient | None
    # The server's charge lane: when set, the tick leaves renewal charges to it (see ChargeLane).
    lane: "ChargeLane | None" = None
    # Set at shutdown: a tick stops at its next safe point (between steps and between batches).
    stop: threading.Event = field(default_factory=threading.Event)


# --- subscriptions -------------------------------------------------------------------


def claim_subscriptions(db, now: datetime, limit: int = BATCH) -> list[dict]:
    with write(db):
        return rows(db, """UPDATE subscriptions SET next_action_at = ?
                           WHERE id IN (SELECT id FROM subscriptions WHERE next_action_at <= ?
                                        ORDER BY next_action_at LIMIT ?)
                           RETURNING *""", [clock.iso(now + LEASE), clock.iso(now), limit])


def advance_all(db, now: datetime, settings: Settings, subs: list[dict]) -> int:
    """Advance claimed subscriptions in one transaction, each in its own savepoint:
    one that fails keeps its lease and is tried again after it, the others commit."""
    done = 0
    with write(db):
        for sub in subs:
            try:
                with write(db):
                    lifecycle.advance(db, now, settings, sub)
                done += 1
            except Exception:  # a bug for one company must not stop everyone's renewals
                log.exception("advancing subscription %s failed; retrying after the lease", sub["id"])
    return done


def run_due_subscriptions(db, now: datetime, settings: Settings, stop: threading.Event | None = None) -> int:
    total = 0
    while stop is None or not stop.is_set():  # each batch commits on its own: a safe point to stop
        claimed = claim_subscriptions(db, now)
        if not claimed:
            return total
        total += advance_all(db, now, settings, claimed)
    return total


# --- renewal charges of saved cards ----------------------------------------------------


def claim_charges(db, now: datetime, limit: int = BATCH) -> list[dict]:
    """Claim due charges before sending them: a claimed charge is never claimed again (exactly once).
    Its status query waits CHARGE_RECONCILE_AFTER from the claim, not from when it was created, so a
    charge that waited in a storm's queue is not looked up before it was even sent."""
    with write(db):
        return rows(db, """UPDATE payments SET charge_requested_at = ?, reconcile_at = ?
                           WHERE id IN (SELECT id FROM payments WHERE method = 'recurring' AND status = 'pending'
                                        AND charge_requested_at IS NULL ORDER BY id LIMIT ?)
                           RETURNING *""", [clock.iso(now), clock.iso(now + CHARGE_RECONCILE_AFTER), limit])


def release_charges(db, claimed_at: str, payment_ids: list[int]) -> int:
    """Give back charges this process claimed but never sent (shutdown came first), so the next
    start sends them. Safe for exactly-once: only the claimer releases, only rows it never sent, and
    only while still pending with its own claim stamp (a status query that decided one meanwhile wins)."""
    if not payment_ids:
        return 0
    with write(db):
        cursor = db.conn.execute(
            f"""UPDATE payments SET charge_requested_at = NULL
                WHERE id IN ({",".join("?" * len(payment_ids))}) AND method = 'recurring' AND status = 'pending'
                AND charge_requested_at = ?""", [*payment_ids, claimed_at])
        return cursor.rowcount


def due_charges(db) -> int:
    """Renewal charges waiting to be sent (the lane's queue), counted on the payments_to_charge index."""
    return db.conn.execute("SELECT count(*) FROM payments WHERE method = 'recurring' AND status = 'pending' "
                           "AND charge_requested_at IS NULL").fetchone()[0]


async def charge_cards(ctx: Context, now: datetime) -> int:
    """Send every due renewal charge and wait for PayTR's answers (`main.py jobs run`, tests). The
    server's tick leaves them to its ChargeLane instead, which uses the same caps."""
    if ctx.paytr is None:
        return 0
    return await ChargeLane(ctx).drain(now)


def claim_charge(db, now: datetime, payment_id: int) -> dict | None:
    """Claim one charge (an upgrade the customer just confirmed) unless a tick already has."""
    with write(db):
        claimed = rows(db, """UPDATE payments SET charge_requested_at = ? WHERE id = ? AND method = 'recurring'
                              AND status = 'pending' AND charge_requested_at IS NULL RETURNING *""",
                       [clock.iso(now), payment_id])
    return claimed[0] if claimed else None


async def charge_now(ctx: Context, now: datetime, payment_id: int) -> None:
    """Send a saved-card charge to PayTR at once instead of on the next tick."""
    payment = await _in_thread(ctx, claim_charge, now, payment_id)
    if payment is not None:
        await _charge(ctx, now, payment)


async def _each_claimed(ctx: Context, now: datetime, claim, work) -> int:
    """Claim a batch, do `work` on each row (a few at a time: these are PayTR calls), repeat."""
    limit = asyncio.Semaphore(NETWORK_CONCURRENCY)

    async def one_row(row: dict) -> None:
        async with limit:
            await work(ctx, now, row)

    total = 0
    while not ctx.stop.is_set() and (claimed := await _in_thread(ctx, claim, now)):
        await asyncio.gather(*(one_row(row) for row in claimed))
        total += len(claimed)
    return total


async def _charge(ctx: Context, now: datetime, payment: dict, gate=None) -> str:
    """Send one claimed renewal charge; its outcome: "accepted" (the result comes by callback),
    "refused" (recorded as a failed attempt) or "unavailable" (the status query finds out).

    One PayTR call: the card recorded as the one renewals charge (companies.paytr_ctoken). The card
    list is asked for first only when a payment saved a card since the last list (`card_saved_by`)
    or no card is chosen yet, so a card saved since the last list is still the one charged (cards.py).
    `gate` (the lane's rate limit) is awaited right before each PayTR call, so the cap is what PayTR sees."""
    s = ctx.settings
    gate = gate or _open
    company = await _in_thread(ctx, lambda db: one(db, "SELECT * FROM companies WHERE id = ?", [payment["company_id"]]))
    try:
        if not company.get("paytr_utoken"):
            raise PaytrRefused("no saved card")
        if company.get("card_saved_by") or not company.get("paytr_ctoken"):
            await gate()
            listed = await ctx.paytr.list_cards(company["paytr_utoken"])
            # A card saved since the last list becomes the chosen one before anything is charged.
            company = await _in_thread(ctx, cards.sync, now, company, listed)
            if company.get("paytr_ctoken") and cards.find(listed, company["paytr_ctoken"]) is None:
                raise PaytrRefused(_card_gone(company))  # never another card instead: the owner chose this one
        ctoken = company.get("paytr_ctoken")
        if not ctoken:
            raise PaytrRefused("No saved card is chosen for renewals.")
        request = protocol.recurring_request(
            merchant_id=s.paytr_merchant_id, key=str(s.paytr_merchant_key), salt=str(s.paytr_merchant_salt),
            user_ip=payment["user_ip"] or "127.0.0.1", merchant_oid=payment["merchant_oid"], email=payment["email"],
            amount=payment["amount"], currency=payment["currency"], test_mode=bool(payment["test_mode"]),
            utoken=company["paytr_utoken"], ctoken=ctoken, user_name=company["name"],
            **billing_details.paytr_contact(company),
            basket=protocol.encode_basket([(payment["description"] or f"{payment['plan'].title()} plan renewal",
                                            payment["amount"], 1)]),
            ok_url=s.url("/billing/"), fail_url=s.url("/billing/"))
        await gate()
        try:
            await ctx.paytr.charge_stored_card(request)
        except PaytrRefused as exc:
            await gate()
            raise PaytrRefused(await _why_refused(ctx, now, company, exc.reason)) from exc
    except PaytrRefused as exc:
        # PayTR said no at once: that is this attempt's outcome, like a failed callback.
        outcome = protocol.Callback(payment["merchant_oid"], "failed", 0, {
            "merchant_oid": payment["merchant_oid"], "status": "failed", "failed_reason_code": "charge",
            "failed_reason_msg": exc.reason, "source": "recurring-charge-answer"})
        await _in_thread(ctx, payments.apply_callback, now, s, outcome, "paytr-api")
        return "refused"
    except PaytrUnavailable:
        # It may or may not have reached PayTR: the status query finds out (reconcile_at).
        log.warning("renewal charge %s: PayTR did not answer; reconciling later", payment["merchant_oid"])
        return "unavailable"
    return "accepted"


async def _open() -> None:
    """No rate limit (an upgrade's single charge, sent while the customer waits)."""


def _card_gone(company: dict) -> str:
    return (f"The card chosen for renewals ({company.get('paytr_card_label') or 'saved card'}) "
            "is no longer saved at PayTR.")


async def _why_refused(ctx: Context, now: datetime, company: dict, reason: str) -> str:
    """PayTR refused the recorded card. If its list no longer has that card (deleted at PayTR since
    the last list), say so plainly and record the list; otherwise PayTR's own reason. A second call
    only on a refusal: the common case stays one call per charge."""
    try:
        listed = await ctx.paytr.list_cards(company["paytr_utoken"])
    except (PaytrRefused, PaytrUnavailable):
        return reason
    await _in_thread(ctx, cards.sync, now, company, listed)
    return _card_gone(company) if cards.find(listed, company.get("paytr_ctoken")) is None else reason


# --- the charge lane ---------------------------------------------------------------------------


class RateLimit:
    """At most `per_second` starts in any one second as PayTR counts them: a token bucket holding one
    token, refilled every 1.1/per_second s, so a storm is spread evenly instead of sent in bursts.
    The tenth of headroom is for the way there: a call that leaves on time can arrive late while a
    later one arrives early, and exact spacing let PayTR see per_second + 1 in one second (seen in
    CI with 17 ms of jitter)."""

    HEADROOM = 1.1

    def __init__(self, per_second: float):
        self.interval = self.HEADROOM / per_second
        self.next_at = 0.0
        self.lock = asyncio.Lock()

    async def take(self) -> None:
        async with self.lock:
            wait = self.next_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self.next_at = max(self.next_at, time.monotonic()) + self.interval


class ChargeLane:
    """Renewal charges of saved cards, sent on their own task beside the scheduler's tick, so a storm
    of 10,000 renewals due at one instant never holds up reminders, reconciliation, mail or backups.

    Each batch is claimed (charge_requested_at) before anything is sent; at most PAYTR_MAX_IN_FLIGHT
    wait on PayTR at once and at most PAYTR_MAX_PER_SECOND start each second. At shutdown the charges
    already sent get their answer and the claimed ones not yet sent are released for the next start."""

    IDLE_SECONDS = 1.0  # how often an idle lane looks for due charges (the tick also wakes it)

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.in_flight = asyncio.Semaphore(ctx.settings.paytr_max_in_flight)
        self.rate = RateLimit(ctx.settings.paytr_max_per_second)
        self.stopping = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._sending: set[asyncio.Task] = set()

    def start(self) -> "ChargeLane":
        self._task = asyncio.create_task(self._run(), name="charge-lane")
        return self

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while not self.stopping:
            try:
                sent = await self.batch(self.ctx.clock.now())
            except Exception:  # the database busy for a moment, a bug for one row: try again soon
                log.exception("the charge lane's batch failed")
                sent = 0
            if not sent and not self.stopping:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.IDLE_SECONDS)

    async def drain(self, now: datetime) -> int:
        """Every due charge, batch after batch, answered (no task: `jobs run` and tests)."""
        total = 0
        while not self.stopping and (claimed := await self.batch(now)):
            total += claimed
        return total

    async def batch(self, now: datetime) -> int:
        """Claim a batch and send it; the number claimed (0: nothing was due)."""
        claimed = await _in_thread(self.ctx, claim_charges, now)
        if not claimed:
            return 0
        started = time.perf_counter()
        unsent: list[int] = []
        outcomes: dict[str, int] = {}

        async def send(payment: dict) -> None:
            async with self.in_flight:
                if self.stopping:  # claimed but not sent: released below, so the next start sends it
                    unsent.append(payment["id"])
                    return
                metrics.CHARGES_IN_FLIGHT.inc()
                try:
                    outcome = await _charge(self.ctx, now, payment, self.rate.take)
                except Exception:  # one bad row must not stop the batch; its claim leaves it to the status query
                    log.exception("renewal charge %s failed", payment["merchant_oid"])
                    outcome = "error"
                finally:
                    metrics.CHARGES_IN_FLIGHT.dec()
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                metrics.CHARGES.labels(outcome).inc()

        tasks = [asyncio.create_task(send(payment)) for payment in claimed]
        self._sending.update(tasks)
        try:
            await asyncio.gather(*tasks)
        finally:
            self._sending.difference_update(tasks)
        released = await _in_thread(self.ctx, release_charges, clock.iso(now), unsent) if unsent else 0
        if released:
            metrics.CHARGES.labels("released").inc(released)
        log.info("charge lane: %d renewal charges in %.1f s: %d accepted, %d refused, %d unanswered, %d failed, "
                 "%d released for the next start", len(claimed), time.perf_counter() - started,
                 outcomes.get("accepted", 0), outcomes.get("refused", 0), outcomes.get("unavailable", 0),
                 outcomes.get("error", 0), released)
        return len(claimed)

    async def stop(self, timeout: float) -> None:
        """Send nothing more; the charges already sent get PayTR's answer (within `timeout`, then they
        are left to the status query), the claimed ones not yet sent are released."""
        self.stopping = True
        self._wake.set()
        if self._task is None:
            return
        done, _pending = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            log.warning("PayTR did not answer %d renewal charges within %s s; the status query settles them",
                        len(self._sending), timeout)
            for task in list(self._sending):
                task.cancel()
            await asyncio.wait({self._task}, timeout=1)
            if not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task})


# --- reconciliation of payments whose callback never came -----------------------------------


def claim_reconcile(db, now: datetime, limit: int = BATCH) -> list[dict]:
    with write(db):
        return rows(db, """UPDATE payments SET reconcile_at = ?
                           WHERE id IN (SELECT id FROM payments WHERE status IN ('pending', 'superseded')
                                        AND reconcile_at <= ?
                                        -- a renewal charge not sent yet (queued in a storm, released at
                                        -- shutdown) is the lane's: PayTR cannot know it
                                        AND NOT (method = 'recurring' AND status = 'pending'
                                                 AND charge_requested_at IS NULL)
                                        ORDER BY reconcile_at LIMIT ?)
                           RETURNING *""", [clock.iso(now + RECONCILE_RETRY), clock.iso(now), limit])


async def reconcile(ctx: Context, now: datetime) -> int:
    if ctx.paytr is None:
        return 0
    return await _each_claimed(ctx, now, claim_reconcile, _reconcile)


async def _reconcile(ctx: Context, now: datetime, payment: dict) -> None:
    oid = payment["merchant_oid"]
    try:
        answer = await ctx.paytr.status(oid)
    except PaytrUnavailable:
        return  # the lease brings it back in RECONCILE_RETRY
    status = answer.get("status")
    fields = {"merchant_oid": oid, "source": "status-query",
              "test_mode": str(answer.get("test_mode", payment["test_mode"]))}
    if status == "success":
        try:
            total = protocol.parse_loose_amount(answer.get("payment_total") or answer.get("payment_amount"))
        except (ValueError, TypeError):
            log.warning("status query for %s answered an amount we cannot read: %r", oid, answer)
            return
        currency = answer.get("currency")
        if currency:
            fields["currency"] = currency
        callback = protocol.Callback(oid, "success", total, {**fields, "status": "success",
                                                            "total_amount": str(total)})
    elif status == "failed":
        callback = protocol.Callback(oid, "failed", 0, {**fields, "status": "failed",
                                                       "failed_reason_msg": answer.get("err_msg") or "declined"})
    else:
        await _in_thread(ctx, _no_payment_at_paytr, now, ctx.settings, payment,
                         str(answer.get("err_msg") or "no payment"))
        return
    outcome = await _in_thread(ctx, payments.apply_callback, now, ctx.settings, callback, "status-query")
    log.info("reconciled %s from PayTR's status query: %s", oid, outcome)


def _no_payment_at_paytr(db, now: datetime, settings: Settings, payment: dict, reason: str) -> None:
    """PayTR has no payment for this order. A checkout nobody paid expires; a renewal
    charge that never reached PayTR counts as a failed attempt, so dunning goes on."""
    created = clock.parse(payment["created_at"])
    if payment["method"] == "recurring" and payment["charge_requested_at"]:
        failed = protocol.Callback(payment["merchant_oid"], "failed", 0, {
            "merchant_oid": payment["merchant_oid"], "status": "failed", "source": "status-query",
            "failed_reason_msg": f"The charge did not reach PayTR ({reason})."})
        payments.apply_callback(db, now, settings, failed, "status-query")
    elif now - created >= timedelta(minutes=payments.TOKEN_MINUTES):
        payments.expire(db, now, payment["merchant_oid"], f"no payment reached PayTR ({reason})")


# --- refunds PayTR did not answer ------------------------------------------------------------


async def check_refunds(ctx: Context, now: datetime) -> int:
    if ctx.paytr is None:
        return 0
    return await _each_claimed(ctx, now, refunds.claim_checks, _check_refund)


async def _check_refund(ctx: Context, now: datetime, refund: dict) -> None:
    try:
        answer = await ctx.paytr.status(refund["merchant_oid"])
    except PaytrUnavailable:
        return  # the lease brings it back
    outcome = await _in_thread(ctx, refunds.settle_from_status, now, ctx.settings, refund["id"], answer)
    if outcome is None:
        log.warning("status query for %s cannot tell whether refund %s was made: %r", refund["merchant_oid"],
                    refund["reference_no"], answer)
        return
    log.info("refund %s settled from PayTR's status query: %s", refund["reference_no"],
             "made" if outcome[0] else "not made")


# --- the tick --------------------------------------------------------------------------------


async def _in_thread(ctx: Context, fn, *args):
    store = ctx.store
    return await anyio.to_thread.run_sync(lambda: fn(store.db(), *args))


async def daily_backup(ctx: Context) -> str | None:
    """BACKUP_DIR: one backup a day, the oldest beyond BACKUP_KEEP pruned; the file's name, or None.
    Real time, not the test clock: a backup's name and age are about the real world. Last in the
    tick and in a worker thread: a copy of a large database takes seconds and must not delay
    renewals or the event loop; when none is due the check touches no disk."""
    s = ctx.settings
    if s.backup_dir is None:
        return None
    try:
        made = await anyio.to_thread.run_sync(backup.scheduled, ctx.store.path, s.backup_dir, s.backup_keep,
                                              clock.utcnow())
    except Exception:  # a full backup disk must never stop renewals; retried within the hour
        log.exception("the daily backup into %s failed", s.backup_dir)
        return None
    return made.path.name if made else None


async def tick(ctx: Context, now: datetime | None = None, mail_batches: int | None = 1) -> dict:
    """Everything due at `now` (default: the app's clock, test clock included). In the server the
    mail sender sends in the background, so a tick sends at most `mail_batches` batches itself;
    `main.py jobs run` (no sender running) passes None and sends everything due. In the server the
    charge lane sends renewal charges, so the tick never waits for PayTR's answers to them; without
    a lane (`jobs run`, tests) the tick sends them itself. At shutdown (ctx.stop) the tick stops
    between steps: every step commits as it goes and the next start picks up what is left."""
    now = now or ctx.clock.now()
    report = {"at": clock.iso(now)}
    steps = [
        ("subscriptions", lambda: _in_thread(ctx, run_due_subscriptions, now, ctx.settings, ctx.stop)),
        ("charges", lambda: _charges(ctx, now)),
        ("reconciled", lambda: reconcile(ctx, now)),
        ("refunds_checked", lambda: check_refunds(ctx, now)),
        # Saved cards' stored details (pages never ask PayTR): a bounded number of lists per tick.
        ("cards_refreshed", lambda: cards.refresh_due(ctx, now)),
        # One batch at most: a storm of receipts (each rendering its invoice PDF, ~50 ms) must not hold up
        # the next tick's renewals; the app's mail sender works through the rest in the background.
        ("emails_sent", lambda: _mail(ctx, now, mail_batches)),
        ("bodies_pruned", lambda: _in_thread(ctx, mail.prune_expired, now, ctx.settings)),  # retention
        # Once a local day: fold the day's events into the revenue snapshot (an idle tick reads one row).
        ("revenue", lambda: _revenue(ctx, now)),
        ("backup", lambda: daily_backup(ctx)),
    ]
    for name, step in steps:
        if ctx.stop.is_set():
            report["stopped"] = True
            log.info("tick stopped for shutdown before %s", name)
            break
        report[name] = await step()
    if any(report.get(k) for k in ("subscriptions", "charges", "reconciled", "refunds_checked", "emails_sent",
                                   "backup")):
        log.info("tick %s", report)
    return report


async def _charges(ctx: Context, now: datetime) -> int:
    if ctx.lane is not None:
        ctx.lane.wake()  # renewals just started are sent now, not at the lane's next look
        return 0
    return await charge_cards(ctx, now)


async def _mail(ctx: Context, now: datetime, mail_batches: int | None) -> int:
    sent = await _in_thread(ctx, mail.deliver_due, now, ctx.settings, None, mail_batches)
    return sent["sent"]


async def _revenue(ctx: Context, now: datetime) -> bool:
    try:
        return bool(await _in_thread(ctx, revenue.refresh_if_due, now, ctx.settings))
    except Exception:  # the metrics' snapshot must never stop renewals; the page folds from the last one
        log.exception("refreshing the revenue snapshot failed")
        return False
