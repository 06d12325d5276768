"""Scheduled work: one `tick` does whatever is due, claimed row by row.

APScheduler is only the clock tick (every TICK_SECONDS); what is due lives in
the database, in indexed columns: `subscriptions.next_action_at`,
`payments.charge_requested_at` and `payments.reconcile_at`. Each kind of work
is claimed with one UPDATE … RETURNING that pushes the row's time forward (a
lease), so two processes ticking at once, or a restart in the middle of a tick,
never do the same work twice, and work missed while the app was down is done
once by the next tick. An idle tick is a handful of index lookups.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio.to_thread

from billing import billing_details, cards, clock, lifecycle, mail, payments, refunds, revenue
from billing.db import Store, one, rows, write
from billing.ops import backup
from billing.paytr import protocol
from billing.paytr.client import PaytrClient, PaytrRefused, PaytrUnavailable
from billing.settings import Settings

log = logging.getLogger("billing.jobs")

LEASE = timedelta(minutes=5)  # a claimed row comes back if its worker died
RECONCILE_RETRY = timedelta(minutes=10)
BATCH = 200
NETWORK_CONCURRENCY = 8


@dataclass
class Context:
    store: Store
    settings: Settings
    clock: object
    paytr: PaytrClient | None


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


def run_due_subscriptions(db, now: datetime, settings: Settings) -> int:
    total = 0
    while True:
        claimed = claim_subscriptions(db, now)
        if not claimed:
            return total
        total += advance_all(db, now, settings, claimed)


# --- renewal charges of saved cards ----------------------------------------------------


def claim_charges(db, now: datetime, limit: int = BATCH) -> list[dict]:
    with write(db):
        return rows(db, """UPDATE payments SET charge_requested_at = ?
                           WHERE id IN (SELECT id FROM payments WHERE method = 'recurring' AND status = 'pending'
                                        AND charge_requested_at IS NULL ORDER BY id LIMIT ?)
                           RETURNING *""", [clock.iso(now), limit])


async def charge_cards(ctx: Context, now: datetime) -> int:
    if ctx.paytr is None:
        return 0
    return await _each_claimed(ctx, now, claim_charges, _charge)


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
    while claimed := await _in_thread(ctx, claim, now):
        await asyncio.gather(*(one_row(row) for row in claimed))
        total += len(claimed)
    return total


async def _charge(ctx: Context, now: datetime, payment: dict) -> None:
    s = ctx.settings
    company = await _in_thread(ctx, lambda db: one(db, "SELECT * FROM companies WHERE id = ?", [payment["company_id"]]))
    try:
        if not company.get("paytr_utoken"):
            raise PaytrRefused("no saved card")
        listed = await ctx.paytr.list_cards(company["paytr_utoken"])
        # A card saved since the last list becomes the chosen one before anything is charged.
        company = await _in_thread(ctx, cards.sync, now, company, listed)
        ctoken = company.get("paytr_ctoken")
        if not ctoken:
            raise PaytrRefused("No saved card is chosen for renewals.")
        if cards.find(listed, ctoken) is None:
            # Never another card instead: the owner chose this one.
            raise PaytrRefused(f"The card chosen for renewals ({company.get('paytr_card_label') or 'saved card'}) "
                               "is no longer saved at PayTR.")
        request = protocol.recurring_request(
            merchant_id=s.paytr_merchant_id, key=str(s.paytr_merchant_key), salt=str(s.paytr_merchant_salt),
            user_ip=payment["user_ip"] or "127.0.0.1", merchant_oid=payment["merchant_oid"], email=payment["email"],
            amount=payment["amount"], currency=payment["currency"], test_mode=bool(payment["test_mode"]),
            utoken=company["paytr_utoken"], ctoken=ctoken, user_name=company["name"],
            **billing_details.paytr_contact(company),
            basket=protocol.encode_basket([(payment["description"] or f"{payment['plan'].title()} plan renewal",
                                            payment["amount"], 1)]),
            ok_url=s.url("/billing/"), fail_url=s.url("/billing/"))
        await ctx.paytr.charge_stored_card(request)
    except PaytrRefused as exc:
        # PayTR said no at once: that is this attempt's outcome, like a failed callback.
        outcome = protocol.Callback(payment["merchant_oid"], "failed", 0, {
            "merchant_oid": payment["merchant_oid"], "status": "failed", "failed_reason_code": "charge",
            "failed_reason_msg": exc.reason, "source": "recurring-charge-answer"})
        await _in_thread(ctx, payments.apply_callback, now, s, outcome, "paytr-api")
    except PaytrUnavailable:
        # It may or may not have reached PayTR: the status query finds out (reconcile_at).
        log.warning("renewal charge %s: PayTR did not answer; reconciling later", payment["merchant_oid"])


# --- reconciliation of payments whose callback never came -----------------------------------


def claim_reconcile(db, now: datetime, limit: int = BATCH) -> list[dict]:
    with write(db):
        return rows(db, """UPDATE payments SET reconcile_at = ?
                           WHERE id IN (SELECT id FROM payments WHERE status IN ('pending', 'superseded')
                                        AND reconcile_at <= ? ORDER BY reconcile_at LIMIT ?)
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
    `main.py jobs run` (no sender running) passes None and sends everything due."""
    now = now or ctx.clock.now()
    report = {"at": clock.iso(now)}
    report["subscriptions"] = await _in_thread(ctx, run_due_subscriptions, now, ctx.settings)
    report["charges"] = await charge_cards(ctx, now)
    report["reconciled"] = await reconcile(ctx, now)
    report["refunds_checked"] = await check_refunds(ctx, now)
    # Saved cards' stored details (pages never ask PayTR): a bounded number of lists per tick.
    report["cards_refreshed"] = await cards.refresh_due(ctx, now)
    # One batch at most: a storm of receipts (each rendering its invoice PDF, ~50 ms) must not hold up
    # the next tick's renewals; the app's mail sender works through the rest in the background.
    sent = await _in_thread(ctx, mail.deliver_due, now, ctx.settings, None, mail_batches)
    report["emails_sent"] = sent["sent"]
    report["bodies_pruned"] = await _in_thread(ctx, mail.prune_expired, now, ctx.settings)  # retention
    # Once a local day: fold the day's events into the revenue snapshot (an idle tick reads one row).
    try:
        report["revenue"] = bool(await _in_thread(ctx, revenue.refresh_if_due, now, ctx.settings))
    except Exception:  # the metrics' snapshot must never stop renewals; the page folds from the last one
        log.exception("refreshing the revenue snapshot failed")
        report["revenue"] = False
    report["backup"] = await daily_backup(ctx)
    if any(report[k] for k in ("subscriptions", "charges", "reconciled", "refunds_checked", "emails_sent",
                               "backup")):
        log.info("tick %s", report)
    return report
