"""The subscription's life on autopilot: what is due, and doing it.

`plan(sub, now, ...)` is pure: from the subscription and the time it says what
must happen now (an email, a transition, a renewal charge) and when to look
again (`next_action_at`). `advance(db, now, settings, sub)` does it in the
caller's transaction. Every email has a dedupe key naming the company, the
step and the date it is about, so a step done twice (two processes, a restart
mid-tick) sends once, and a new date (a trial extended by staff) sends anew.

Timeline of one subscription:

    trialing   T-7d, T-3d, T-1d: trial reminder  ·  T: expired + "trial ended"
    active     card saved: E-notice: "we will charge your card"  ·  E: charge the card
               pay link:   E-notice, E-3d, E-1d: renewal notice with a pay link
                           E: past due + "payment overdue"
               cancel at period end: E: canceled + email
    past_due   F = the first failure (E, or later when the renewal was noticed late)
               card saved: F+1d, F+3d, F+5d: retry the card (each failure emails a pay link)
               pay link:   F+1d, F+3d, F+5d: "payment overdue" with a pay link
               (retries that would fall after E+grace are dropped)
               E+grace: canceled + email
    expired, canceled: nothing (paying starts a new period)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from billing import cards, clock, events, mail, plans, subscriptions
from billing.db import one
from billing.notify import webhooks
from billing.paytr import protocol
from billing.settings import Settings
from billing.subscriptions import ACTIVE, CANCELED, EXPIRED, PAST_DUE, TRIALING

TRIAL_REMINDER_DAYS = (7, 3, 1)
TRIAL_WILL_END_DAYS = 3  # the host's subscription.trial_will_end goes with the reminder this close to the end
DAY = timedelta(days=1)
CHARGE_CHECK = timedelta(hours=1)  # while a renewal charge is out, look again this often


@dataclass
class Due:
    """What `plan` decided: things to do now, and when to look again."""

    emails: list[tuple[str, str, dict]] = field(default_factory=list)  # (template, dedupe key, context)
    transition: tuple[str, str] | None = None  # (status, reason)
    charge_attempt: int | None = None  # start recurring charge attempt n (0 = at period end)
    next_at: datetime | None = None


def _at(sub: dict, column: str) -> datetime | None:
    return clock.parse(sub[column]) if sub.get(column) else None


def _latest_passed(marks: list[tuple[int, datetime]], now: datetime) -> tuple[int, datetime] | None:
    """The most recent (label, time) whose time has come: late reminders are not stacked."""
    passed = [mark for mark in marks if mark[1] <= now]
    return max(passed, key=lambda mark: mark[1]) if passed else None


def _next_mark(times: list[datetime], now: datetime, end: datetime | None) -> datetime | None:
    future = [t for t in times if t > now]
    if end is not None and end > now:
        future.append(end)
    return min(future) if future else None


def plan(sub: dict, now: datetime, settings: Settings, *, has_card: bool, attempts: set[int]) -> Due:
    """Decide what is due for `sub` at `now`. `attempts`: recurring charge attempts already
    started for the current period (0 at its end, then one per dunning day)."""
    status, cid = sub["status"], sub["company_id"]
    due = Due()
    if status == TRIALING:
        ends = _at(sub, "trial_ends_at")
        if now >= ends:
            due.transition = (EXPIRED, "trial ended without a payment")
            due.emails.append(("trial_ended", f"trial-ended:{cid}:{sub['trial_ends_at']}", {}))
            return due
        marks = [(days, ends - days * DAY) for days in TRIAL_REMINDER_DAYS]
        passed = _latest_passed(marks, now)
        if passed:
            days = passed[0]
            due.emails.append(("trial_reminder", f"trial-reminder:{cid}:{days}:{sub['trial_ends_at']}",
                               {"days_left": math.ceil((ends - now) / DAY)}))
        due.next_at = _next_mark([t for _, t in marks], now, ends)
        return due

    if status == ACTIVE:
        ends = _at(sub, "current_period_end")
        if sub.get("cancel_at_period_end"):
            if now >= ends:
                due.transition = (CANCELED, "canceled by the owner, at the end of the paid period")
                due.emails.append(("subscription_canceled", f"canceled:{cid}:{sub['current_period_end']}",
                                   {"reason": "at_period_end"}))
            else:
                due.next_at = ends
            return due
        notice_days = sorted({settings.renewal_notice_days, 3, 1}, reverse=True)
        notice_days = [d for d in notice_days if d <= settings.renewal_notice_days] if not has_card \
            else [settings.renewal_notice_days]
        marks = [(days, ends - days * DAY) for days in notice_days]
        if now >= ends:
            if has_card:
                if 0 not in attempts:
                    due.charge_attempt = 0
                due.next_at = now + CHARGE_CHECK  # the callback moves us on; this is the safety net
            else:
                due.transition = (PAST_DUE, "renewal not paid by the end of the period")
                due.emails.append(("renewal_failed", f"renewal-failed:{cid}:{sub['current_period_end']}:0",
                                   {"step": 0, "card": False}))
            return due
        passed = _latest_passed(marks, now)
        if passed:
            days = passed[0]
            due.emails.append(("renewal_notice", f"renewal-notice:{cid}:{days}:{sub['current_period_end']}",
                               {"days_left": math.ceil((ends - now) / DAY), "card": has_card}))
        due.next_at = _next_mark([t for _, t in marks], now, ends)
        return due

    if status == PAST_DUE:
        ends = _at(sub, "current_period_end")
        grace_end = ends + settings.grace_days * DAY
        # Retries count from the first failure, not the period end: a renewal noticed late (the app
        # was down) fails once and emails once, then retries a day later, not 30 seconds later.
        since = _at(sub, "past_due_at") or ends
        if now >= grace_end:
            due.transition = (CANCELED, f"not paid within the {settings.grace_days}-day grace period")
            due.emails.append(("subscription_canceled", f"canceled:{cid}:{sub['current_period_end']}",
                               {"reason": "unpaid"}))
            return due
        steps = [(n, since + days * DAY) for n, days in enumerate(settings.dunning_retry_days, start=1)
                 if since + days * DAY < grace_end]
        passed = _latest_passed(steps, now)
        if passed:
            step = passed[0]
            if has_card:
                if step not in attempts:
                    due.charge_attempt = step
            else:
                due.emails.append(("renewal_failed", f"renewal-failed:{cid}:{sub['current_period_end']}:{step}",
                                   {"step": step, "card": False}))
        due.next_at = _next_mark([t for _, t in steps], now, grace_end)
        return due

    return due  # expired and canceled wait for the customer


# --- doing it -----------------------------------------------------------------------------


def renewal_plan(db: Database, sub: dict) -> plans.Plan:
    """The plan the next period is for: a scheduled downgrade takes effect at renewal."""
    return plans.get(db, sub.get("scheduled_plan") or sub["plan"])


def advance(db: Database, now: datetime, settings: Settings, sub: dict) -> Due:
    """Do what is due for `sub` now, inside the caller's transaction, and reschedule it."""
    company = one(db, "SELECT * FROM companies WHERE id = ?", [sub["company_id"]])
    attempts = {row[0] for row in db.conn.execute(
        "SELECT attempt FROM payments WHERE company_id = ? AND method = 'recurring' AND kind = 'renewal' "
        "AND base_period_end IS ?",
        [sub["company_id"], sub["current_period_end"]])}
    # A saved card the owner took off renewals (others kept) means pay links, as with no card.
    has_card = bool(settings.paytr_recurring and cards.renews_by_card(company))
    due = plan(sub, now, settings, has_card=has_card, attempts=attempts)
    tz = ZoneInfo(company["timezone"] or settings.timezone)
    owner = one(db, "SELECT * FROM users WHERE company_id = ? AND role = 'owner' ORDER BY id LIMIT 1",
                [sub["company_id"]])
    if due.transition:
        status, reason = due.transition
        changes = {"ended_at": now} if status in (EXPIRED, CANCELED) else {}
        if status == PAST_DUE:
            changes.update(past_due_since=sub["current_period_end"], past_due_at=now)
        if status == CANCELED:
            # cancel_at_period_end stays set when the owner asked: a renewal paid after it is not applied.
            changes.update(canceled_at=now, scheduled_plan=None)
        sub = subscriptions.transition(db, now, sub, status, reason, **changes)
    if due.charge_attempt is not None:
        start_renewal_charge(db, now, settings, sub, company, owner, due.charge_attempt)
    for template, _, extra in due.emails:
        if template == "trial_reminder" and extra["days_left"] <= TRIAL_WILL_END_DAYS:
            # The host hears once per trial end, even when the 3-day reminder was missed (downtime).
            webhooks.emit(db, now, "subscription.trial_will_end", company["id"],
                          dedupe_key=f"trial-will-end:{company['id']}:{sub['trial_ends_at']}")
    for template, key, extra in due.emails:
        if owner is None:
            break
        mail.enqueue(db, now, settings, template=template, to=owner["email"], dedupe_key=key,
                     company_id=company["id"], context=_context(db, settings, sub, company, owner, tz, extra))
    next_at = due.next_at
    if due.transition:
        # A new state has its own timeline (past due: the dunning days): plan it from here.
        after = plan(sub, now, settings, has_card=has_card, attempts=attempts)
        busy = after.emails or after.transition or after.charge_attempt is not None
        next_at = now if busy else after.next_at
    db.conn.execute("UPDATE subscriptions SET next_action_at = ? WHERE id = ?",
                    [clock.iso(next_at) if next_at else None, sub["id"]])
    return due


def _context(db: Database, settings: Settings, sub: dict, company: dict, owner: dict, tz: ZoneInfo, extra: dict) -> dict:
    plan_ = plans.get(db, sub["plan"])
    start = clock.parse(sub["current_period_end"]) if sub.get("current_period_end") else None
    next_plan, price = subscriptions.renewal_price(db, sub, start) if start else (plan_, plan_.price)
    return {"name": owner["name"], "company": company["name"], "plan_name": plan_.name,
            "next_plan_name": next_plan.name, "price": price, "currency": next_plan.currency,
            "interval": next_plan.interval,
            "trial_ends_at": sub.get("trial_ends_at"), "period_end": sub.get("current_period_end"),
            "grace_days": settings.grace_days, "tz": tz.key,
            "pay_url": settings.url("/billing/renew"), "dashboard_url": settings.url("/billing/"),
            "pricing_url": settings.url("/billing/#plans"), **extra}


def start_renewal_charge(db: Database, now: datetime, settings: Settings, sub: dict, company: dict, owner: dict,
                         attempt: int) -> dict:
    """Record a recurring charge of the saved card; jobs.charge_cards sends it to PayTR after commit."""
    plan_, price = subscriptions.renewal_price(db, sub, clock.parse(sub["current_period_end"]))
    oid = protocol.new_merchant_oid(company["id"], now)
    payment_id = db.conn.execute(
        """INSERT INTO payments (company_id, merchant_oid, kind, method, plan, amount, currency, test_mode,
               base_period_end, attempt, user_id, user_ip, email, reconcile_at, created_at, updated_at)
           VALUES (?, ?, 'renewal', 'recurring', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [company["id"], oid, plan_.code, price, plan_.currency, int(settings.paytr_test_mode),
         sub["current_period_end"], attempt, owner and owner["id"], company.get("card_ip") or "127.0.0.1",
         owner["email"] if owner else "", clock.iso(now + timedelta(minutes=30)), clock.iso(now), clock.iso(now)],
    ).lastrowid
    events.record(db, now, "renewal.charge_started",
                  f"Charging the saved card for {plan_.name} (attempt {attempt + 1})", company_id=company["id"],
                  merchant_oid=oid, attempt=attempt)
    return one(db, "SELECT * FROM payments WHERE id = ?", [payment_id])
