"""Subscription state: one state machine, period arithmetic, and pure predicates taking `now`.

States: trialing -> active <-> past_due -> canceled; trialing -> expired (trial ended unpaid);
expired and canceled come back to active by paying. Every change goes through
`transition()`, which refuses moves not in `ALLOWED` and records an event with its reason.
"""

from __future__ import annotations

import calendar
import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from billing import clock, events, plans
from billing.db import one
from billing.i18n import gettext as _, lazy_gettext

TRIALING = "trialing"
ACTIVE = "active"
PAST_DUE = "past_due"
CANCELED = "canceled"
EXPIRED = "expired"
STATES = (TRIALING, ACTIVE, PAST_DUE, CANCELED, EXPIRED)

STATUS_LABELS = {  # lazy: shown in the language of whoever reads them
    TRIALING: lazy_gettext("Trial"),
    ACTIVE: lazy_gettext("Active"),
    PAST_DUE: lazy_gettext("Past due"),
    CANCELED: lazy_gettext("Canceled"),
    EXPIRED: lazy_gettext("Trial ended"),
}

# Which states each state may move to. Active -> active is a renewal or plan change.
ALLOWED = {
    TRIALING: {ACTIVE, EXPIRED, CANCELED, TRIALING},  # trialing -> trialing: extended by staff
    ACTIVE: {ACTIVE, PAST_DUE, CANCELED},
    PAST_DUE: {ACTIVE, CANCELED},
    EXPIRED: {ACTIVE, TRIALING},  # staff may extend an ended trial
    CANCELED: {ACTIVE},
}


class TransitionError(Exception):
    pass


def start_trial(db: Database, now: datetime, company_id: int, plan: str, trial_days: int) -> int:
    ends = now + timedelta(days=trial_days)
    cursor = db.conn.execute(
        """INSERT INTO subscriptions (company_id, plan, status, trial_ends_at, next_action_at, created_at, updated_at,
                                      price, currency)
           SELECT ?, code, 'trialing', ?, ?, ?, ?, price, currency FROM plans WHERE code = ?""",
        # due now: the next tick works out the first reminder and schedules it
        [company_id, clock.iso(ends), clock.iso(now), clock.iso(now), clock.iso(now), plan],
    )
    if not cursor.rowcount:
        raise plans.UnknownPlan(plan)
    return cursor.lastrowid


def for_company(db: Database, company_id: int) -> dict | None:
    return one(db, "SELECT * FROM subscriptions WHERE company_id = ?", [company_id])


def transition(db: Database, now: datetime, sub: dict, status: str, reason: str, *, actor: str = "system",
               **changes) -> dict:
    """Move `sub` to `status` (and set `changes`), recording why. Call inside a write."""
    if status not in ALLOWED.get(sub["status"], set()):
        raise TransitionError(f"a {sub['status']} subscription cannot become {status}")
    if changes.get("plan", sub["plan"]) != sub["plan"] or "price" not in changes and not sub.get("price"):
        # A new plan renews at its catalog price (a price change reaches existing subscribers only by staff).
        plan = plans.get(db, changes.get("plan", sub["plan"]))
        changes = {"price": plan.price, "currency": plan.currency, "next_price": None, "next_price_from": None,
                   **changes}
    values = {"status": status, "updated_at": now, **changes}
    stored = {column: _store(value) for column, value in values.items()}
    assignments = ", ".join(f"{column} = ?" for column in stored)
    db.conn.execute(f"UPDATE subscriptions SET {assignments} WHERE id = ?", [*stored.values(), sub["id"]])
    moved = {"previous_plan": sub["plan"]} if stored.get("plan", sub["plan"]) != sub["plan"] else {}
    # The MRR-relevant state after the change, always: revenue metrics are folded from these events.
    state = {k: stored.get(k, sub.get(k)) for k in ("plan", "price", "currency")}
    events.record(db, now, f"subscription.{status}", reason, company_id=sub["company_id"], actor=actor,
                  previous=sub["status"], **moved, **{**state, **{k: stored[k] for k in changes}})
    return {**sub, **stored}


def _store(value):
    return clock.iso(value) if isinstance(value, datetime) else value


# --- periods --------------------------------------------------------------------------


def add_month(at: datetime, anchor_day: int, tz: ZoneInfo, anchor_time: str | None = None,
              months: int = 1) -> datetime:
    """`months` calendar months later (1, or 12 for a yearly plan) on the anchor day and wall-clock
    time, clamped to the month's length: anchored on the 31st, Jan 31 -> Feb 28 (29 in leap years)
    -> Mar 31; yearly on Feb 29, 2028 -> Feb 28, 2029 -> Feb 28, 2030 ... -> Feb 29, 2032.

    The anchor is local wall-clock time (`anchor_time`, "HH:MM:SS"; default: `at`'s own). A time
    that does not exist that day (the hour a DST change skips) moves forward by the gap, for that
    occurrence only: the next month is back on the anchor time.
    """
    local = at.astimezone(tz)
    year, month = divmod(local.year * 12 + local.month - 1 + months, 12)
    month += 1
    day = min(anchor_day, calendar.monthrange(year, month)[1])
    hour, minute, second = (int(part) for part in anchor_time.split(":")) if anchor_time else \
        (local.hour, local.minute, local.second)
    # fold=0 on a skipped wall time takes the offset before the change: 02:30 in a gap is 03:30.
    return datetime(year, month, day, hour, minute, second, tzinfo=tz).astimezone(UTC)


def renewal_price(db: Database, sub: dict, period_start: datetime) -> tuple[plans.Plan, int]:
    """(plan, amount) the period starting at `period_start` renews at: a scheduled change's plan at
    its catalog price; else the subscription's stored price, or the price staff applied with notice
    once the period starts on or after its date. Never the catalog's price for a running subscription."""
    if sub.get("scheduled_plan") and sub["scheduled_plan"] != sub["plan"]:
        plan = plans.get(db, sub["scheduled_plan"])
        return plan, plan.price
    plan = plans.get(db, sub["plan"])
    if sub.get("next_price") and sub.get("next_price_from") and clock.iso(period_start) >= sub["next_price_from"]:
        return plan, sub["next_price"]
    return plan, sub.get("price") or plan.price


def anchor_time_of(at: datetime, tz: ZoneInfo) -> str:
    return at.astimezone(tz).strftime("%H:%M:%S")


def next_period(sub: dict, now: datetime, tz: ZoneInfo, months: int = 1) -> tuple[datetime, datetime, int]:
    """(start, end, anchor day) of the period a payment made now would buy: `months` long (the
    plan's: 1, or 12 for yearly).

    Active or past due: from the current period's end, so paying early or late
    loses no paid day; but late work does not stack: when whole periods have gone by
    unpaid (the app was down), it is the period that contains now, on the same anchor.
    On a running trial: from the trial's end, so the trial is not cut short.
    Otherwise (trial over, canceled): from now.
    """
    current_end = _at(sub, "current_period_end")
    trial_end = _at(sub, "trial_ends_at")
    anchor_time = None
    if sub["status"] in (ACTIVE, PAST_DUE) and current_end is not None:
        start = current_end
        anchor = sub.get("period_anchor_day") or start.astimezone(tz).day
        anchor_time = sub.get("period_anchor_time")
        while (following := add_month(start, anchor, tz, anchor_time, months)) <= now:
            start = following
    elif sub["status"] == TRIALING and trial_end is not None and trial_end > now:
        start, anchor = trial_end, trial_end.astimezone(tz).day
    else:
        start, anchor = now, now.astimezone(tz).day
    return start, add_month(start, anchor, tz, anchor_time, months), anchor


def activate(db: Database, now: datetime, sub: dict, plan: str, tz: ZoneInfo, reason: str,
             actor: str = "paytr") -> tuple[dict, datetime, datetime]:
    """A payment for the next period succeeded: become (or stay) active through its end.
    The new period's start is recorded every time (a quote prorates over the current period)."""
    catalog = plans.get(db, plan)
    start, end, anchor = next_period(sub, now, tz, catalog.months)
    extending = sub["status"] in (ACTIVE, PAST_DUE) and sub.get("current_period_end")
    changes = {"plan": plan, "current_period_start": start, "current_period_end": end, "period_anchor_day": anchor,
               "past_due_since": None, "past_due_at": None, "next_action_at": now}
    if not extending:
        # A new subscription (after a trial, or after it ended): a new anchor, nothing to cancel, today's price.
        changes.update(period_anchor_time=anchor_time_of(start, tz), cancel_at_period_end=0, canceled_at=None,
                       ended_at=None)
        changes.update(price=catalog.price, currency=catalog.currency, next_price=None, next_price_from=None)
    elif plan == sub["plan"] and sub.get("next_price") and clock.iso(start) >= sub["next_price_from"]:
        # The first period at the price staff applied with notice: from now on it renews at it.
        changes.update(price=sub["next_price"], next_price=None, next_price_from=None)
        events.record(db, now, "subscription.price_changed",
                      f"Renews at the new price of {catalog.name} from this period on",
                      company_id=sub["company_id"], actor="system", plan=plan, previous_price=sub["price"],
                      price=sub["next_price"], currency=sub["currency"])
    if sub.get("scheduled_plan") == plan:  # a scheduled downgrade took effect with this renewal
        changes["scheduled_plan"] = None
    if extending and clock.iso(start) != sub["current_period_end"]:
        events.record(db, now, "subscription.periods_skipped",
                      f"Not billed from {sub['current_period_end'][:10]} to {clock.iso(start)[:10]}: the renewal "
                      f"ran late (the app was not running), so only the period containing now was charged",
                      company_id=sub["company_id"], actor="system", skipped_from=sub["current_period_end"],
                      skipped_to=clock.iso(start))
    updated = transition(db, now, sub, ACTIVE, reason, actor=actor, **changes)
    return updated, start, end


def waits_for_scheduled_change(sub: dict, now: datetime) -> datetime | None:
    """A scheduled plan change begins at the period's end; paying for that plan's period before
    then would switch plans early, so it is paid from that day. Returns the day, or None."""
    ends = _at(sub, "current_period_end")
    if sub["status"] == ACTIVE and sub.get("scheduled_plan") and ends is not None and now < ends:
        return ends
    return None


def checkout_kind(sub: dict, plan: str) -> str:
    """What paying for `plan` means now: a new subscription or the next period of this one."""
    if sub["status"] in (ACTIVE, PAST_DUE):
        if plan != (sub.get("scheduled_plan") or sub["plan"]):
            raise TransitionError(_("Your subscription is on another plan; change plans from your dashboard."))
        return "renewal"
    return "subscribe"


# --- pure predicates ----------------------------------------------------------------


def _at(sub: dict, column: str) -> datetime | None:
    value = sub.get(column)
    return clock.parse(value) if value else None


def on_trial(sub: dict, now: datetime) -> bool:
    ends = _at(sub, "trial_ends_at")
    return sub["status"] == TRIALING and ends is not None and now < ends


def trial_days_left(sub: dict, now: datetime) -> int:
    """Whole days left, rounded up: 14 right after sign-up, 1 on the last day, 0 after."""
    ends = _at(sub, "trial_ends_at")
    if sub["status"] != TRIALING or ends is None or now >= ends:
        return 0
    return math.ceil((ends - now) / timedelta(days=1))


def trial_length_days(sub: dict) -> int:
    ends, started = _at(sub, "trial_ends_at"), _at(sub, "created_at")
    if ends is None or started is None:
        return 0
    return max(1, math.ceil((ends - started) / timedelta(days=1)))


def is_paid(sub: dict) -> bool:
    return sub["status"] in (ACTIVE, PAST_DUE)


def paid_until(sub: dict) -> datetime | None:
    return _at(sub, "current_period_end") if is_paid(sub) else None


def first_period_later(sub: dict, now: datetime) -> bool:
    """Paid during the trial: the first paid period begins when the trial ends."""
    start = _at(sub, "current_period_start")
    return is_paid(sub) and start is not None and start > now and sub.get("trial_ends_at") == sub["current_period_start"]


def grace_ends(sub: dict, grace_days: int) -> datetime | None:
    end = _at(sub, "current_period_end")
    return end + timedelta(days=grace_days) if sub["status"] == PAST_DUE and end else None


def in_grace_period(sub: dict, now: datetime, grace_days: int) -> bool:
    ends = grace_ends(sub, grace_days)
    return ends is not None and now < ends


def has_access(sub: dict, now: datetime, grace_days: int) -> bool:
    """May the customer use the product now? Trial, paid period, or the grace after a failed renewal."""
    if sub["status"] == TRIALING:
        return on_trial(sub, now)
    if sub["status"] == ACTIVE:
        return True  # an active subscription past its end is being renewed right now
    return in_grace_period(sub, now, grace_days)


def renews_on(sub: dict) -> datetime | None:
    """When the next period starts, unless the subscription is set to end."""
    if sub["status"] != ACTIVE or sub.get("cancel_at_period_end"):
        return None
    return _at(sub, "current_period_end")


def will_cancel_on(sub: dict) -> datetime | None:
    if sub["status"] == ACTIVE and sub.get("cancel_at_period_end"):
        return _at(sub, "current_period_end")
    return None


def extend_trial(db: Database, now: datetime, sub: dict, days: int, actor: str) -> dict:
    """Staff give more trial days, counted from the trial's end or from now, whichever is later.
    The new end date means new reminders (their dedupe keys name the date)."""
    if sub["status"] not in (TRIALING, EXPIRED):
        raise TransitionError("Only a trial can be extended.")
    start = max(now, _at(sub, "trial_ends_at"))
    ends = start + timedelta(days=days)
    return transition(db, now, sub, TRIALING, f"trial extended by {days} days, to {clock.iso(ends)[:10]}",
                      actor=actor, trial_ends_at=ends, ended_at=None, next_action_at=now)
