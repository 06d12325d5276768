"""What staff do to a customer's subscription from the console, each with a reason and an audit row.

Every action here is one transaction holding the change, its event (actor "staff:<id>", told on
the customer's timeline by billing/dashboard.py), its audit_log row (before/after, reason) and
the customer's email when the change affects them. What must happen at PayTR (charging the saved
card for an upgrade, sending refunds) happens after the commit, in the handler, like the
customer's own upgrade and the staff refund form: the rows it needs are returned in `Outcome`.

Invariants kept here, and tested in tests/test_staff_actions.py:
- nothing changes without a reason, and no change is recorded without its audit row;
- money that goes back never exceeds what the period's payments can still refund (refunds.refundable),
  and each refund goes through billing/refunds.py, which issues its credit note;
- a subscription whose renewal charge is out at PayTR is not changed under it;
- staff never move a customer to an archived plan, nor to a plan in another currency.
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from billing import (accounts, audit, cards, changes, clock, events, i18n, mail, money, payments, plans, refunds,
                     subscriptions, usage)
from billing.accounts import FormError
from billing.db import one, rows, write
from billing.i18n import gettext as _, lazy_gettext, ngettext
from billing.notify import webhooks
from billing.settings import Settings
from billing.subscriptions import ACTIVE, CANCELED, EXPIRED, PAST_DUE, TRIALING

MAX_DAYS = 90  # free days and trial days granted at once

# The audit log's action names, in the reader's language (other sections add theirs the same way;
# an action without a label shows its name).
ACTION_LABELS = {
    "subscription.change_plan": lazy_gettext("Changed the plan now"),
    "subscription.charge_upgrade": lazy_gettext("Charged an upgrade to the saved card"),
    "subscription.offer_upgrade": lazy_gettext("Emailed an upgrade link"),
    "subscription.schedule_change": lazy_gettext("Scheduled a plan change"),
    "subscription.cancel_now": lazy_gettext("Canceled now"),
    "subscription.cancel_at_period_end": lazy_gettext("Canceled at period end"),
    "subscription.resume": lazy_gettext("Resumed"),
    "subscription.extend_trial": lazy_gettext("Extended the trial"),
    "subscription.grant_days": lazy_gettext("Granted free days"),
    "email.resend": lazy_gettext("Resent an email"),
    "payment.refund": lazy_gettext("Refunded a payment"),
}
# How the before/after values are named on the audit pages.
FIELD_LABELS = {
    "plan": lazy_gettext("Plan"), "status": lazy_gettext("Status"), "period_end": lazy_gettext("Paid until"),
    "trial_ends_at": lazy_gettext("Trial ends"), "price": lazy_gettext("Price"),
    "scheduled_plan": lazy_gettext("Plan at period end"), "cancel_at_period_end": lazy_gettext("Ends at period end"),
    "refund": lazy_gettext("Refund"), "charge": lazy_gettext("Charge"), "days": lazy_gettext("Days"),
    "email": lazy_gettext("Email"), "to": lazy_gettext("To"), "refundable": lazy_gettext("Can be refunded"),
    "merchant_oid": lazy_gettext("Order"),
}
MONEY_FIELDS = ("price", "refund", "charge", "refundable")
DATE_FIELDS = ("period_end", "trial_ends_at")


def action_label(action: str) -> str:
    return str(ACTION_LABELS.get(action, action))


class ActionError(Exception):
    """The action cannot be done now; the message says why, for staff."""


@dataclass
class Outcome:
    """What an action did, and what the handler still has to do at PayTR after the commit."""

    sub: dict
    message: str  # one sentence for staff (the flash)
    refunds: list[dict] = field(default_factory=list)  # pending refund rows to send to PayTR
    charge: dict | None = None  # a pending saved-card payment to send to PayTR (jobs.charge_now)


# --- small shared pieces ------------------------------------------------------------------------


def _state(sub: dict) -> dict:
    """The part of a subscription an audit row shows before and after."""
    return {"plan": sub["plan"], "status": sub["status"], "period_end": sub.get("current_period_end"),
            "trial_ends_at": sub.get("trial_ends_at"), "price": sub.get("price"), "currency": sub.get("currency"),
            "scheduled_plan": sub.get("scheduled_plan"), "cancel_at_period_end": bool(sub.get("cancel_at_period_end"))}


def _diff(before: dict, after: dict) -> tuple[dict, dict]:
    """Only what changed (the currency stays beside a changed amount, so it can be read)."""
    keys = [k for k in after if k != "currency" and before.get(k) != after.get(k)]
    b, a = {k: before.get(k) for k in keys}, {k: after.get(k) for k in keys}
    if "price" in keys:
        b["currency"], a["currency"] = before.get("currency"), after.get("currency")
    return b, a


def _record(db, now, staff, action, sub_before, sub_after, *, reason, ip, extra_before=None, extra_after=None,
            target=None) -> int:
    before, after = _diff(_state(sub_before), _state(sub_after))
    before.update(extra_before or {})
    after.update(extra_after or {})
    return audit.record(db, now, staff, action, reason=reason, company_id=sub_before["company_id"], target=target,
                        before=before, after=after, ip=ip)


def _subscription(db, company_id: int) -> dict:
    sub = subscriptions.for_company(db, company_id)
    if sub is None:
        raise LookupError(company_id)
    return sub


def _owner(db, company_id: int) -> dict | None:
    return one(db, "SELECT * FROM users WHERE company_id = ? AND role = 'owner' ORDER BY id LIMIT 1", [company_id])


def _email(db, now, settings: Settings, template: str, sub: dict, key: str, **extra) -> None:
    """An email to the owner about what staff changed, in the owner's language."""
    company = accounts.company(db, sub["company_id"])
    owner = _owner(db, sub["company_id"])
    if owner is None:
        return
    plan = plans.get(db, sub["plan"])
    mail.enqueue(db, now, settings, template=template, to=owner["email"], dedupe_key=key, company_id=company["id"],
                 context={"name": owner["name"], "company": company["name"], "plan_name": plan.name,
                          "period_end": sub.get("current_period_end"), "trial_ends_at": sub.get("trial_ends_at"),
                          "price": sub.get("price") or plan.price, "currency": sub.get("currency") or plan.currency,
                          "tz": (company.get("timezone") or settings.timezone), "dashboard_url": settings.url("/billing/"),
                          **extra})


def _days(value) -> int:
    try:
        days = int(str(value).strip())
    except ValueError:
        days = 0
    if not 1 <= days <= MAX_DAYS:
        raise FormError({"days": _("Enter a number of days from 1 to 90.")})  # MAX_DAYS
    return days


def _not_while_charging(db, sub: dict) -> None:
    if changes.renewal_charge_in_flight(db, sub):
        # Its success would have to be refunded, or would undo the change: let it finish first.
        raise ActionError(_("A renewal charge is out at PayTR right now; try again once it is decided "
                            "(usually within a minute)."))


def _target_plan(db, sub: dict, code: str) -> plans.Plan:
    """A plan staff may move this subscription to: not archived, same currency, not the current one."""
    plan = plans.find(db, code or "")
    if plan is None or plan.archived:
        raise ActionError(_("Choose a plan from the list; archived plans take no new subscribers."))
    current = plans.get(db, sub["plan"])
    if plan.code == current.code:
        raise ActionError(_("The customer is already on %(plan)s.", plan=plan.name))
    if plan.currency != (sub.get("currency") or current.currency):
        raise ActionError(_("%(plan)s is priced in %(currency)s; a subscription cannot change currency. The "
                            "customer can subscribe to it once this subscription ends.",
                            plan=plan.name, currency=plan.currency))
    return plan


def plan_choices(db: Database, now: datetime, settings: Settings, sub: dict) -> list[dict]:
    """What the console's plan picker offers: every plan not archived (hidden ones too: only staff
    can move a customer to them) in the subscription's currency, with what moving now would mean."""
    current = plans.get(db, sub["plan"])
    currency = sub.get("currency") or current.currency
    found = []
    for plan in plans.all_plans(db, hidden=True, archived=False):
        if plan.code == current.code or plan.currency != currency:
            continue
        choice = {"plan": plan, "kind": "upgrade" if plan.price > current.price else "downgrade", "amount": None}
        if sub["status"] == ACTIVE and sub.get("current_period_end"):
            try:
                q = changes.current_quote(db, now, settings, sub, plan.code)
                choice["amount"] = abs(q.exact)
            except changes.ChangeError:
                pass
        found.append(choice)
    return found


def _active(db, sub: dict) -> None:
    if sub["status"] != ACTIVE:
        raise ActionError(_("Only an active, paid subscription can change plans now; this one is %(status)s.",
                            status=subscriptions.STATUS_LABELS[sub["status"]]))
    if sub["cancel_at_period_end"]:
        raise ActionError(_("The subscription is set to end; resume it before changing plans."))
    _not_while_charging(db, sub)


# --- refunds of unused time ------------------------------------------------------------------


def _running_payments(db, sub: dict, now: datetime) -> list[tuple[dict, datetime, datetime]]:
    """Succeeded payments whose paid time has not all passed, newest first: (payment, from, to).
    A period's payment covers its period; an upgrade covers from when it was paid to the end of
    the period it upgraded."""
    found = []
    for p in rows(db, """SELECT * FROM payments WHERE company_id = ? AND status = 'succeeded' AND paid_amount > 0
                         AND ((kind IN ('subscribe', 'renewal') AND period_end > ?)
                              OR (kind = 'upgrade' AND base_period_end > ?)) ORDER BY id DESC""",
                  [sub["company_id"], clock.iso(now), clock.iso(now)]):
        if p["kind"] == "upgrade":
            start, end = clock.parse(p["decided_at"] or p["created_at"]), clock.parse(p["base_period_end"])
        elif p["period_start"] and p["period_end"]:
            start, end = clock.parse(p["period_start"]), clock.parse(p["period_end"])
        else:
            continue
        if end > start:
            found.append((p, start, end))
    return found


def _unused(payment: dict, start: datetime, end: datetime, now: datetime) -> int:
    """The part of what was paid for time not used yet, rounded half up to the cent."""
    left = int((end - max(now, start)).total_seconds())
    share = Fraction(left, int((end - start).total_seconds()))
    return math.floor(payment["paid_amount"] * share + Fraction(1, 2))


def unused_time_refund(db: Database, now: datetime, sub: dict) -> list[tuple[dict, int]]:
    """[(payment, amount)]: the unused paid time of each running payment, at most what it can still refund."""
    pieces = []
    for payment, start, end in _running_payments(db, sub, now):
        amount = min(_unused(payment, start, end, now), refunds.refundable(db, payment))
        if amount > 0:
            pieces.append((payment, amount))
    return pieces


def _allocate(db, now, sub: dict, total: int) -> list[tuple[dict, int]]:
    """Spread `total` over the running payments, newest first, each up to what it can still refund."""
    pieces, left = [], total
    for payment, _start, _end in _running_payments(db, sub, now):
        take = min(left, refunds.refundable(db, payment))
        if take > 0:
            pieces.append((payment, take))
            left -= take
        if not left:
            return pieces
    currency = sub.get("currency") or "USD"
    raise ActionError(_("Only %(amount)s of this period's payments can still be refunded, less than the %(total)s "
                        "due. Choose “no refund” and refund by hand from the payments below.",
                        amount=money.format(total - left, currency), total=money.format(total, currency)))


def _start_refunds(db, now, pieces: list[tuple[dict, int]], reason: str, actor: str) -> list[dict]:
    made = []
    for payment, amount in pieces:
        refund, _created = refunds.start(db, now, payment_id=payment["id"], amount=money.decimal_string(amount),
                                         reason=reason, request_key=refunds.new_request_key(), actor=actor)
        made.append(refund)
    return made


def _check_minimum(total: int, currency: str) -> None:
    if 0 < total < changes.MINIMUM_CHARGE:
        raise ActionError(_("The refund would be %(amount)s, below PayTR's minimum of %(minimum)s. Choose “no "
                            "refund”.", amount=money.format(total, currency),
                            minimum=money.format(changes.MINIMUM_CHARGE, currency)))


# --- plan changes ------------------------------------------------------------------------------


CHARGES = ("card", "link", "none")  # how an upgrade's difference is paid
REFUNDS = ("refund", "none")  # whether a downgrade's or a cancellation's unused time goes back


def change_plan_now(db: Database, now: datetime, settings: Settings, staff: dict, company_id: int, plan_code: str,
                    *, settle: str, reason: str, ip: str | None = None) -> Outcome:
    """Move to another plan at once, as the customer's own change would, or say why not.

    Upgrade: `settle` "card" charges the prorated difference to the saved card (the plan changes
    when PayTR confirms, like the customer's upgrade); "link" emails the owner the change-plan page
    (public plans only: the customer pays there); "none" switches at no charge. Downgrade:
    "refund" sends the prorated difference for the time left back through the refund path (a
    credit note per refund), "none" keeps it."""
    reason = audit.check_reason(reason)
    actor = events.user_actor(staff)
    with write(db):
        sub = _subscription(db, company_id)
        _active(db, sub)
        plan = _target_plan(db, sub, plan_code)
        kind = changes.direction(db, sub, plan.code)
        q = changes.current_quote(db, now, settings, sub, plan.code)
        currency = sub.get("currency") or plan.currency
        if kind == "upgrade":
            if settle not in CHARGES:
                raise ActionError(_("Say how the difference is paid: the saved card, a link for the customer, or no charge."))
            if settle == "none" or not q.amount:
                after = changes.switch_plan_now(db, now, settings, sub, plan.code,
                                                f"plan changed by staff {staff['name']}: {reason}", actor=actor)
                _record(db, now, staff, "subscription.change_plan", sub, after, reason=reason, ip=ip,
                        extra_after={"charge": 0})
                return Outcome(after, _("%(company)s is now on %(plan)s, at no charge. The customer gets an email.",
                                        company=_company_name(db, company_id), plan=plan.name))
            if settle == "card":
                company = accounts.company(db, company_id)
                if not (settings.paytr_recurring and cards.renews_by_card(company)):
                    raise ActionError(_("This customer has no saved card that renewals charge, so the %(amount)s "
                                        "difference needs their payment: email them a link, or change at no charge.",
                                        amount=money.format(q.amount, currency)))
                owner = _owner(db, company_id)
                if owner is None:
                    raise ActionError(_("The customer has no owner to charge for."))
                checkout = payments.start_checkout(db, now, settings, user=owner, plan_code=plan.code,
                                                   ip=ip or "127.0.0.1", method="recurring", upgrade=q, actor=actor)
                _record(db, now, staff, "subscription.charge_upgrade", sub, sub, reason=reason, ip=ip,
                        target=checkout.payment["merchant_oid"],
                        extra_before={"plan": sub["plan"]},
                        extra_after={"plan": plan.code, "charge": q.amount, "currency": currency,
                                     "merchant_oid": checkout.payment["merchant_oid"]})
                return Outcome(sub, _("Charging %(amount)s to the saved card; the plan changes to %(plan)s when PayTR "
                                      "confirms, and the customer gets the receipt.",
                                      amount=money.format(q.amount, currency), plan=plan.name),
                               charge=checkout.payment)
            # "link": the customer pays on their own change-plan page, which offers public plans only.
            if not plan.public:
                raise ActionError(_("%(plan)s is hidden, so the customer cannot pick it on their page: charge the "
                                    "saved card or change at no charge.", plan=plan.name))
            owner = _owner(db, company_id)
            if owner is None:
                raise ActionError(_("The customer has no owner to email."))
            _email(db, now, settings, "upgrade_offered", sub,
                   f"upgrade-offered:{company_id}:{plan.code}:{clock.iso(now)}", new_plan_name=plan.name,
                   amount=q.amount, days_left=q.days_left, change_url=settings.url(f"/billing/plan/{plan.code}"),
                   reason=reason)
            events.record(db, now, "staff.upgrade_offered", f"staff {staff['name']} emailed a link to upgrade to "
                          f"{plan.name}: {reason}", company_id=company_id, actor=actor, plan=plan.code,
                          amount=q.amount)
            _record(db, now, staff, "subscription.offer_upgrade", sub, sub, reason=reason, ip=ip,
                    extra_after={"plan": plan.code, "charge": q.amount, "currency": currency})
            return Outcome(sub, _("Emailed %(email)s a link to upgrade to %(plan)s for %(amount)s. Nothing changes "
                                  "until they pay.", email=owner["email"], plan=plan.name,
                                  amount=money.format(q.amount, currency)))

        # A downgrade now: the time left is worth less on the new plan.
        if settle not in REFUNDS:
            raise ActionError(_("Say whether the difference for the time left is refunded."))
        too_big = usage.refusals(plan, accounts.company(db, company_id))
        if too_big:
            raise ActionError(" ".join(too_big))
        due = max(0, -q.exact)
        pieces = []
        if settle == "refund":
            if not due:
                raise ActionError(_("There is nothing to refund for the time left; choose “no refund”."))
            _check_minimum(due, currency)
            pieces = _allocate(db, now, sub, due)
        after = changes.switch_plan_now(db, now, settings, sub, plan.code,
                                        f"plan changed by staff {staff['name']}: {reason}", actor=actor)
        made = _start_refunds(db, now, pieces, reason, actor)
        _record(db, now, staff, "subscription.change_plan", sub, after, reason=reason, ip=ip,
                extra_after={"refund": sum(r["amount"] for r in made), "currency": currency})
        if made:
            message = _("%(company)s is now on %(plan)s; %(amount)s for the time left is being refunded. The customer "
                        "gets an email for each.", company=_company_name(db, company_id), plan=plan.name,
                        amount=money.format(sum(r["amount"] for r in made), currency))
        else:
            message = _("%(company)s is now on %(plan)s, with no refund. The customer gets an email.",
                        company=_company_name(db, company_id), plan=plan.name)
        return Outcome(after, message, refunds=made)


def _company_name(db, company_id: int) -> str:
    return accounts.company(db, company_id)["name"]


def schedule_change(db: Database, now: datetime, settings: Settings, staff: dict, company_id: int, plan_code: str,
                    *, reason: str, ip: str | None = None) -> Outcome:
    """The next renewal is for `plan_code` (up or down); nothing is charged or refunded now."""
    reason = audit.check_reason(reason)
    actor = events.user_actor(staff)
    with write(db):
        sub = _subscription(db, company_id)
        _active(db, sub)
        plan = _target_plan(db, sub, plan_code)
        if changes.direction(db, sub, plan.code) == "downgrade" and (
                too_big := usage.refusals(plan, accounts.company(db, company_id))):
            raise ActionError(" ".join(too_big))
        after = changes._update(db, now, sub, scheduled_plan=plan.code)
        events.record(db, now, "subscription.downgrade_scheduled",
                      f"staff {staff['name']} scheduled a move to {plan.name} at period end: {reason}",
                      company_id=company_id, actor=actor, plan=plan.code)
        company = accounts.company(db, company_id)
        owner = _owner(db, company_id)
        if owner is not None:
            mail.enqueue(db, now, settings, template="plan_change_scheduled", to=owner["email"],
                         dedupe_key=f"plan-change-scheduled:{company_id}:{plan.code}:{clock.iso(now)}",
                         company_id=company_id,
                         context={"name": owner["name"], "company": company["name"],
                                  "plan_name": plans.get(db, sub["plan"]).name, "next_plan_name": plan.name,
                                  "price": plan.price, "currency": plan.currency,
                                  "period_end": sub["current_period_end"],
                                  "tz": company.get("timezone") or settings.timezone,
                                  "dashboard_url": settings.url("/billing/")})
        _record(db, now, staff, "subscription.schedule_change", sub, after, reason=reason, ip=ip)
        return Outcome(after, _("%(company)s moves to %(plan)s when the current period ends. The customer gets an "
                                "email.", company=company["name"], plan=plan.name))


# --- cancel and resume -------------------------------------------------------------------------


def cancel_now(db: Database, now: datetime, settings: Settings, staff: dict, company_id: int, *, settle: str,
               reason: str, ip: str | None = None) -> Outcome:
    """End the subscription at once; with `settle="refund"` the unused paid time goes back."""
    reason = audit.check_reason(reason)
    if settle not in REFUNDS:
        raise ActionError(_("Say whether the unused time is refunded."))
    actor = events.user_actor(staff)
    with write(db):
        sub = _subscription(db, company_id)
        if sub["status"] not in (ACTIVE, PAST_DUE, TRIALING):
            raise ActionError(_("This subscription has already ended (%(status)s).",
                                status=subscriptions.STATUS_LABELS[sub["status"]]))
        _not_while_charging(db, sub)
        currency = sub.get("currency") or plans.get(db, sub["plan"]).currency
        pieces = unused_time_refund(db, now, sub) if settle == "refund" else []
        total = sum(amount for _p, amount in pieces)
        if settle == "refund":
            if not total:
                raise ActionError(_("No paid time is left to refund; choose “no refund”."))
            _check_minimum(total, currency)
        # cancel_at_period_end stays set: a renewal checkout paid after this is kept for staff, not applied.
        after = subscriptions.transition(db, now, sub, CANCELED, f"canceled now by staff {staff['name']}: {reason}",
                                         actor=actor, canceled_at=now, ended_at=now, cancel_at_period_end=1,
                                         scheduled_plan=None, next_action_at=None)
        made = _start_refunds(db, now, pieces, reason, actor)
        _email(db, now, settings, "subscription_canceled_by_staff", after, f"canceled-by-staff:{company_id}:"
               f"{clock.iso(now)}", when="now", refund=sum(r["amount"] for r in made), ended_at=clock.iso(now))
        _record(db, now, staff, "subscription.cancel_now", sub, after, reason=reason, ip=ip,
                extra_after={"refund": sum(r["amount"] for r in made), "currency": currency})
        name = _company_name(db, company_id)
        if made:
            return Outcome(after, _("%(company)s's subscription has ended; %(amount)s for the unused time is being "
                                    "refunded. The customer gets an email.", company=name,
                                    amount=money.format(total, currency)), refunds=made)
        return Outcome(after, _("%(company)s's subscription has ended, with no refund. The customer gets an email.",
                                company=name))


def cancel_at_period_end(db: Database, now: datetime, settings: Settings, staff: dict, company_id: int, *,
                         reason: str, ip: str | None = None) -> Outcome:
    """Like the owner's own cancel: it ends when the paid period does, and can be resumed until then."""
    reason = audit.check_reason(reason)
    with write(db):
        sub = _subscription(db, company_id)
        if sub["status"] != ACTIVE:
            raise ActionError(_("Only an active subscription can be set to end with its period."))
        if sub["cancel_at_period_end"]:
            raise ActionError(_("This subscription is already set to end with its period."))
        _not_while_charging(db, sub)
        after = changes._update(db, now, sub, cancel_at_period_end=1, scheduled_plan=None)
        events.record(db, now, "subscription.cancel_scheduled",
                      f"canceled by staff {staff['name']} at period end ({sub['current_period_end'][:10]}): {reason}",
                      company_id=company_id, actor=events.user_actor(staff))
        _email(db, now, settings, "subscription_canceled_by_staff", after,
               f"cancel-scheduled:{company_id}:{sub['current_period_end']}", when="period_end", refund=0,
               ended_at=sub["current_period_end"])
        _record(db, now, staff, "subscription.cancel_at_period_end", sub, after, reason=reason, ip=ip)
        return Outcome(after, _("%(company)s's subscription ends with the paid period. The customer gets an email.",
                                company=_company_name(db, company_id)))


def resume(db: Database, now: datetime, settings: Settings, staff: dict, company_id: int, *, reason: str,
           ip: str | None = None) -> Outcome:
    """Undo a cancellation at period end: it renews as usual."""
    reason = audit.check_reason(reason)
    with write(db):
        sub = _subscription(db, company_id)
        if sub["status"] != ACTIVE or not sub["cancel_at_period_end"]:
            raise ActionError(_("Only a subscription set to end with its period can be resumed."))
        if now >= clock.parse(sub["current_period_end"]):
            raise ActionError(_("The paid period is over; the customer has to subscribe again."))
        after = changes._update(db, now, sub, cancel_at_period_end=0)
        events.record(db, now, "subscription.resumed", f"resumed by staff {staff['name']}: {reason}",
                      company_id=company_id, actor=events.user_actor(staff))
        _email(db, now, settings, "subscription_resumed", after, f"resumed:{company_id}:{clock.iso(now)}")
        _record(db, now, staff, "subscription.resume", sub, after, reason=reason, ip=ip)
        return Outcome(after, _("%(company)s's subscription renews as usual again. The customer gets an email.",
                                company=_company_name(db, company_id)))


# --- time given ------------------------------------------------------------------------------


def extend_trial(db: Database, now: datetime, settings: Settings, staff: dict, company_id: int, days,
                 *, reason: str, ip: str | None = None) -> Outcome:
    """More trial days from the trial's end or from now, whichever is later (fresh reminders follow)."""
    errors = {}
    try:
        days = _days(days)
    except FormError as exc:
        errors.update(exc.errors)
    try:
        reason = audit.check_reason(reason)
    except FormError as exc:
        errors.update(exc.errors)
    if errors:
        raise FormError(errors)
    with write(db):
        sub = _subscription(db, company_id)
        if sub["status"] not in (TRIALING, EXPIRED):
            raise ActionError(_("Only a trial (running or ended) can be extended."))
        after = subscriptions.extend_trial(db, now, sub, days, events.user_actor(staff))
        _email(db, now, settings, "free_days_granted", after, f"trial-extended:{company_id}:{after['trial_ends_at']}",
               days=days, trial=True, until=after["trial_ends_at"])
        _record(db, now, staff, "subscription.extend_trial", sub, after, reason=reason, ip=ip,
                extra_after={"days": days})
        ends = clock.parse(after["trial_ends_at"]).astimezone(settings.tz)
        return Outcome(after, ngettext("Trial extended by %(num)d day, to %(date)s. New reminders will go out.",
                                       "Trial extended by %(num)d days, to %(date)s. New reminders will go out.",
                                       days, date=i18n.date_text(ends)))


def grant_days(db: Database, now: datetime, settings: Settings, staff: dict, company_id: int, days,
               *, reason: str, ip: str | None = None) -> Outcome:
    """Free days: the paid period (or the running trial) ends N days later; nothing is charged.

    The renewal, its notices and reminders are planned again from the new end (next_action_at now;
    their dedupe keys name the date, so they go out anew). The period's anchor moves with its end,
    so the next period is a whole one from the new date, not a short one back to the old day. An
    open pay-link checkout for the renewal is moved along, so paying it still renews from the new end."""
    errors = {}
    try:
        days = _days(days)
    except FormError as exc:
        errors.update(exc.errors)
    try:
        reason = audit.check_reason(reason)
    except FormError as exc:
        errors.update(exc.errors)
    if errors:
        raise FormError(errors)
    actor = events.user_actor(staff)
    with write(db):
        sub = _subscription(db, company_id)
        if sub["status"] == TRIALING:
            ends = clock.parse(sub["trial_ends_at"]) + timedelta(days=days)
            after = subscriptions.transition(db, now, sub, TRIALING, f"{days} free days granted by staff "
                                             f"{staff['name']}: {reason}", actor=actor, trial_ends_at=ends,
                                             next_action_at=now)
            until = after["trial_ends_at"]
        elif sub["status"] == ACTIVE:
            _not_while_charging(db, sub)
            company = accounts.company(db, company_id)
            tz = ZoneInfo(company.get("timezone") or settings.timezone)
            old_end = sub["current_period_end"]
            new_end = clock.parse(old_end) + timedelta(days=days)
            local = new_end.astimezone(tz)
            after = changes._update(db, now, sub, current_period_end=clock.iso(new_end), period_anchor_day=local.day,
                                    period_anchor_time=subscriptions.anchor_time_of(new_end, tz))
            db.conn.execute("UPDATE payments SET base_period_end = ? WHERE company_id = ? AND kind = 'renewal' "
                            "AND status IN ('pending', 'superseded') AND base_period_end = ?",
                            [clock.iso(new_end), company_id, old_end])
            events.record(db, now, "subscription.days_granted", f"{days} free days granted by staff {staff['name']}, "
                          f"paid until {clock.iso(new_end)[:10]}: {reason}", company_id=company_id, actor=actor,
                          days=days, current_period_end=clock.iso(new_end), previous_period_end=old_end)
            webhooks.emit(db, now, "subscription.updated", company_id,
                          dedupe_key=f"days-granted:{company_id}:{clock.iso(now)}")
            until = after["current_period_end"]
        else:
            raise ActionError(_("Free days extend a running trial or an active paid period; this subscription is "
                                "%(status)s.", status=subscriptions.STATUS_LABELS[sub["status"]]))
        _email(db, now, settings, "free_days_granted", after, f"days-granted:{company_id}:{until}", days=days,
               trial=sub["status"] == TRIALING, until=until)
        _record(db, now, staff, "subscription.grant_days", sub, after, reason=reason, ip=ip,
                extra_after={"days": days})
        date = i18n.date_text(clock.parse(until).astimezone(settings.tz))
        return Outcome(after, ngettext("%(num)d free day granted: %(company)s is covered until %(date)s.",
                                       "%(num)d free days granted: %(company)s is covered until %(date)s.", days,
                                       company=_company_name(db, company_id), date=date))


# --- email and refunds ------------------------------------------------------------------------


def resend_email(db: Database, now: datetime, staff: dict, company_id: int, outbox_id: int, *, reason: str,
                 ip: str | None = None) -> dict:
    """Queue a copy of one of the customer's emails (same template, stored context, address and
    language) under a new dedupe key. The original row stays as it was. -> the new row. FormError for an
    email whose content was pruned (MAIL_BODY_RETENTION_DAYS)."""
    reason = audit.check_reason(reason)
    with write(db):
        original = one(db, "SELECT * FROM outbox WHERE id = ? AND company_id = ?", [outbox_id, company_id])
        if original is None:
            raise LookupError(outbox_id)
        if original["pruned_at"]:
            # Its context (the snapshot the email was rendered from) went with the body. Rendering it from
            # today's data would send a different email under the old one's name, so it is refused instead.
            raise FormError({"form": _("This email's content was removed under the email retention rule, so it "
                                       "cannot be sent again as it was. Send what the customer needs from its "
                                       "page instead (an invoice, a password reset).")})
        key = f"resend:{original['id']}:{clock.iso(now)}:{secrets.token_hex(4)}"
        mail.enqueue(db, now, None, template=original["template"], to=original["to_addr"], dedupe_key=key,
                     context=json.loads(original["context"] or "{}"), company_id=company_id,
                     locale=original["locale"])
        copy = one(db, "SELECT * FROM outbox WHERE dedupe_key = ?", [key])
        events.record(db, now, "email.resent", f"staff {staff['name']} sent email #{original['id']} "
                      f"({original['template']}) again to {original['to_addr']}: {reason}", company_id=company_id,
                      actor=events.user_actor(staff), template=original["template"], original=original["id"])
        audit.record(db, now, staff, "email.resend", reason=reason, company_id=company_id,
                     target=f"outbox:{original['id']}", before={},
                     after={"email": original["template"], "to": original["to_addr"]}, ip=ip)
        return copy


def refund(db: Database, now: datetime, staff: dict, *, payment_id: int, amount: str, reason: str, request_key: str,
           ip: str | None = None) -> tuple[dict, bool]:
    """The staff refund form's refund (billing/refunds.py `start`), with its audit row in the same
    transaction. The same form sent twice finds the first refund and records nothing more."""
    with write(db):
        made, created = refunds.start(db, now, payment_id=payment_id, amount=amount, reason=reason,
                                      request_key=request_key, actor=events.user_actor(staff))
        if created:
            payment = one(db, "SELECT * FROM payments WHERE id = ?", [payment_id])
            audit.record(db, now, staff, "payment.refund", reason=made["reason"], company_id=made["company_id"],
                         target=payment["merchant_oid"],
                         before={"refundable": refunds.refundable(db, payment) + made["amount"],
                                 "currency": made["currency"]},
                         after={"refund": made["amount"], "currency": made["currency"],
                                "merchant_oid": payment["merchant_oid"]}, ip=ip)
        return made, created


class _Preview(Exception):
    pass


def refund_preview(db: Database, now: datetime, settings: Settings, *, payment_id: int, amount: str, reason: str,
                   request_key: str) -> dict:
    """Check a refund exactly as `refund` would, and show what the customer will be emailed, while
    writing nothing: the check runs in a transaction that is rolled back. FormError for bad input;
    {"already": refund} when this form's refund was already made."""
    try:
        with write(db):
            made, created = refunds.start(db, now, payment_id=payment_id, amount=amount, reason=reason,
                                          request_key=request_key, actor="preview")
            if not created:
                raise _Preview({"already": made})
            payment = one(db, "SELECT * FROM payments WHERE id = ?", [payment_id])
            company = accounts.company(db, payment["company_id"])
            context = refunds.email_context(settings, made, payment, company["name"], None)
            # Read as the sender will: the recipient's language and name (the greeting), then rendered.
            locale, context = mail.for_reader(db, payment["email"], context)
            subject, text, _html = mail.render("refund_issued", settings, context, locale, payment["email"])
            raise _Preview({"refund": made, "to": payment["email"], "subject": subject, "text": text,
                            "company": company["name"]})
    except _Preview as done:
        return done.args[0]
