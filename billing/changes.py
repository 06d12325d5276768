"""Changes the owner makes to a subscription: cancel at period end, resume, change plan.

Upgrades take effect at once and charge the prorated difference for the rest of
the paid period; downgrades wait for the period's end (and can be undone until
then). Proration is exact arithmetic on seconds of the CURRENT period (the one
the last renewal bought), on net prices, rounded half up to the cent once; the
VAT is then the rate of that net, so the invoice splits exactly:

    net   = (new net - old net) × seconds left / seconds in the period   (half up)
    total = net + round_half_up(net × VAT rate)

Paid early, the next period is already bought: the quote is the rest of the
period running now plus the whole next one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from billing import accounts, clock, events, mail, money, plans, subscriptions, usage
from billing.db import one, write
from billing.i18n import gettext as _
from billing.settings import Settings
from billing.subscriptions import ACTIVE, PAST_DUE

MINIMUM_CHARGE = 100  # PayTR takes nothing under 1.00; a smaller difference is not charged


class ChangeError(Exception):
    """The change is not possible now; the message says why, for the customer."""


@dataclass(frozen=True)
class Quote:
    """What upgrading now costs."""

    old: plans.Plan
    new: plans.Plan
    amount: int  # minor units to charge now, VAT included (0: below PayTR's minimum, switched for free)
    exact: int  # before the minimum rule
    days_left: int  # days charged for: the rest of this period (plus the next, when paid ahead)
    period_days: int
    period_end: datetime
    period_start: datetime | None = None
    paid_ahead: bool = False  # the next period was paid early: the quote covers it too
    starts_later: bool = False  # paid during the trial: the current period has not begun


def _owner_context(db, settings: Settings, sub: dict, company: dict) -> tuple[dict, ZoneInfo]:
    owner = one(db, "SELECT * FROM users WHERE company_id = ? AND role = 'owner' ORDER BY id LIMIT 1", [company["id"]])
    return owner, ZoneInfo(company["timezone"] or settings.timezone)


def _email(db, now, settings, template, key, sub, company, **extra) -> None:
    owner, tz = _owner_context(db, settings, sub, company)
    if owner is None:
        return
    plan = plans.get(db, sub["plan"])
    next_plan = plans.get(db, sub.get("scheduled_plan") or sub["plan"])
    mail.enqueue(db, now, settings, template=template, to=owner["email"], dedupe_key=key, company_id=company["id"],
                 context={"name": owner["name"], "company": company["name"], "plan_name": plan.name,
                          "next_plan_name": next_plan.name, "price": next_plan.price, "currency": next_plan.currency,
                          "period_end": sub.get("current_period_end"), "tz": tz.key,
                          "dashboard_url": settings.url("/billing/"), **extra})


def _active_sub(db, company_id: int) -> dict:
    sub = subscriptions.for_company(db, company_id)
    if sub["status"] != ACTIVE:
        raise ChangeError(_("Plans can be changed while the subscription is active and paid.")
                          if sub["status"] != PAST_DUE else _("Please pay the overdue month first."))
    return sub


# --- cancel and resume -------------------------------------------------------------------


def renewal_charge_in_flight(db: Database, sub: dict) -> bool:
    """Is a saved-card charge for the period after this one out at PayTR, outcome unknown?"""
    return one(db, "SELECT id FROM payments WHERE company_id = ? AND kind = 'renewal' AND method = 'recurring' "
                   "AND status = 'pending' AND base_period_end IS ?",
               [sub["company_id"], sub["current_period_end"]]) is not None


def cancel_at_period_end(db: Database, now: datetime, settings: Settings, user: dict) -> dict:
    with write(db):
        sub = _active_sub(db, user["company_id"])
        if sub["cancel_at_period_end"]:
            return sub
        if renewal_charge_in_flight(db, sub):
            # Its success would have to be refunded, or would undo the cancel: let it finish first.
            raise ChangeError(_("A renewal charge is being processed; try again in a minute."))
        company = accounts.company(db, user["company_id"])
        sub = _update(db, now, sub, cancel_at_period_end=1, scheduled_plan=None)
        events.record(db, now, "subscription.cancel_scheduled",
                      f"canceled by {user['name']} at period end ({sub['current_period_end'][:10]})",
                      company_id=company["id"], actor=events.user_actor(user))
        # Once per period: cancel, resume, cancel again does not send the owner a second letter.
        _email(db, now, settings, "cancel_scheduled", f"cancel-scheduled:{company['id']}:{sub['current_period_end']}",
               sub, company)
    return sub


def resume(db: Database, now: datetime, settings: Settings, user: dict) -> dict:
    with write(db):
        sub = _active_sub(db, user["company_id"])
        if not sub["cancel_at_period_end"]:
            return sub
        if now >= clock.parse(sub["current_period_end"]):
            raise ChangeError(_("The subscription has already ended; subscribe again instead."))
        sub = _update(db, now, sub, cancel_at_period_end=0)
        events.record(db, now, "subscription.resumed", f"resumed by {user['name']}; it renews as usual",
                      company_id=sub["company_id"], actor=events.user_actor(user))
    return sub


def _update(db, now: datetime, sub: dict, **values) -> dict:
    # Something about the subscription changed: the next tick looks at it again.
    values.update(updated_at=clock.iso(now), next_action_at=clock.iso(now))
    db.conn.execute(f"UPDATE subscriptions SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",
                    [*values.values(), sub["id"]])
    return {**sub, **values}


# --- plan changes -------------------------------------------------------------------------


def quote(db: Database, sub: dict, new_code: str, now: datetime, vat_rate: Decimal,
          earlier: list[tuple[datetime, datetime]] = ()) -> Quote:
    """The prorated price of upgrading `sub` to `new_code` now, over the paid time left.

    `earlier`: the periods paid before the current one that have not ended yet (the next
    periods were paid early): the paid part of each that is left is charged too."""
    old, new = plans.get(db, sub["plan"]), plans.get(db, new_code)
    paying = sub.get("price") or old.price  # what this customer renews at, which may be below today's catalog
    start, end = clock.parse(sub["current_period_start"]), clock.parse(sub["current_period_end"])
    period = int((end - start).total_seconds())
    left = int((end - max(now, start)).total_seconds())
    if left <= 0 or period <= 0:
        raise ChangeError(_("The current period has ended; renew first."))
    share = Fraction(left, period)
    running = [(s_, e_) for s_, e_ in earlier if e_ > now and e_ <= start and e_ > s_]
    for s_, e_ in running:
        # Only the paid part: time before a period began (a trial) costs nothing.
        share += Fraction(int((e_ - max(now, s_)).total_seconds()), int((e_ - s_).total_seconds()))
    paid_ahead = bool(running) and now < start
    net_difference = money.split_gross(new.price, vat_rate)[0] - money.split_gross(paying, vat_rate)[0]
    net = math.floor(net_difference * share + Fraction(1, 2))  # half up, once
    exact = money.gross_from_net(net, vat_rate)
    charged_from = max(now, min(s_ for s_, _ in running)) if paid_ahead else max(now, start)
    return Quote(old=old, new=new, amount=exact if exact >= MINIMUM_CHARGE else 0, exact=exact,
                 days_left=math.ceil((end - charged_from).total_seconds() / 86400),
                 period_days=round(period / 86400), period_end=end, period_start=start, paid_ahead=paid_ahead,
                 starts_later=now < start and not paid_ahead)


def _earlier_periods(db, sub: dict, now: datetime) -> list[tuple[datetime, datetime]]:
    """Periods paid before the current one that are still running or yet to come (paid early)."""
    found = db.conn.execute(
        "SELECT period_start, period_end FROM payments WHERE company_id = ? AND status = 'succeeded' "
        "AND kind IN ('subscribe', 'renewal') AND period_end > ? AND period_end <= ? ORDER BY period_start",
        [sub["company_id"], clock.iso(now), sub["current_period_start"]]).fetchall()
    return [(clock.parse(s_), clock.parse(e_)) for s_, e_ in found if s_ and e_]


def current_quote(db: Database, now: datetime, settings: Settings, sub: dict, new_code: str) -> Quote:
    return quote(db, sub, new_code, now, settings.vat_rate, _earlier_periods(db, sub, now))


def direction(db: Database, sub: dict, new_code: str) -> str:
    """'upgrade', 'downgrade' or 'same' for moving `sub` to plan `new_code`.

    Upgrades start now and prorate the difference over the current period, which only means
    something between plans of the same interval: a move between monthly and yearly is made at
    the period's end, like a downgrade. Plans in another currency are not offered (ChangeError)."""
    old, new = plans.get(db, sub["plan"]), plans.get(db, new_code)
    if new.code == old.code:
        return "same"
    if new.currency != (sub.get("currency") or old.currency):
        raise ChangeError(_("%(plan)s is priced in %(currency)s, and your subscription is paid in %(paid)s. "
                            "Contact us to move between currencies.", plan=new.name, currency=new.currency,
                            paid=sub.get("currency") or old.currency))
    if new.interval != old.interval:
        return "downgrade"
    return "upgrade" if new.price > (sub.get("price") or old.price) else "downgrade"


def preview(db: Database, now: datetime, settings: Settings, company_id: int,
            new_code: str) -> tuple[str, Quote | None]:
    """('upgrade', its quote) or ('downgrade', None) for moving to `new_code` now; ChangeError if not possible."""
    sub = _active_sub(db, company_id)
    if renewal_charge_in_flight(db, sub):
        # The charge is for the current plan; a change now would have to undo or refund it.
        raise ChangeError(_("A renewal charge is being processed; try again in a minute."))
    kind = direction(db, sub, new_code)
    if kind == "same":
        raise ChangeError(_("You're already on %(plan)s.", plan=plans.get(db, new_code).name))
    if sub["cancel_at_period_end"]:
        raise ChangeError(_("The subscription is set to end; resume it before changing plans."))
    if kind == "downgrade" and (too_big := usage.refusals(plans.get(db, new_code), accounts.company(db, company_id))):
        # Checked against the latest report the host product sent; a later report that outgrows
        # a downgrade already scheduled warns the owner instead (usage.record).
        raise ChangeError(" ".join(too_big))
    return kind, current_quote(db, now, settings, sub, new_code) if kind == "upgrade" else None


def upgrade_quote(db: Database, now: datetime, settings: Settings, company_id: int, new_code: str) -> Quote:
    kind, upgrade = preview(db, now, settings, company_id, new_code)
    if kind != "upgrade":
        raise ChangeError(_("That plan is not an upgrade."))
    return upgrade


def upgrade_for_free(db: Database, now: datetime, settings: Settings, user: dict, new_code: str) -> dict:
    """The prorated difference is below PayTR's minimum: switch now, charge nothing."""
    with write(db):
        sub = _active_sub(db, user["company_id"])
        q = current_quote(db, now, settings, sub, new_code)
        if q.amount:
            raise ChangeError(_("This upgrade has a charge; pay it at checkout."))
        return switch_plan_now(db, now, settings, sub, q.new.code, f"upgraded by {user['name']} (no charge: "
                               f"{q.exact} cents is below PayTR's minimum)", actor=events.user_actor(user))


def switch_plan_now(db: Database, now: datetime, settings: Settings, sub: dict, plan_code: str, reason: str,
                    *, actor: str, charged: int = 0, invoice_number: str | None = None) -> dict:
    """Move an active subscription to another plan at once; the period stays as it is."""
    previous = plans.get(db, sub["plan"])
    sub = subscriptions.transition(db, now, sub, ACTIVE, reason, actor=actor, plan=plan_code, scheduled_plan=None,
                                   next_action_at=now)
    company = accounts.company(db, sub["company_id"])
    _email(db, now, settings, "plan_changed", f"plan-changed:{company['id']}:{plan_code}:{clock.iso(now)}", sub,
           company, previous_plan_name=previous.name, charged=charged, invoice_number=invoice_number,
           # The upgrade's receipt: the sender attaches the invoice's PDF when it sends.
           **({"attach_invoice": invoice_number} if invoice_number else {}))
    return sub


def schedule_downgrade(db: Database, now: datetime, settings: Settings, user: dict, new_code: str) -> dict:
    with write(db):
        if preview(db, now, settings, user["company_id"], new_code)[0] != "downgrade":
            raise ChangeError(_("That plan is not a downgrade."))
        sub = subscriptions.for_company(db, user["company_id"])
        company = accounts.company(db, user["company_id"])
        sub = _update(db, now, sub, scheduled_plan=new_code)
        new = plans.get(db, new_code)
        events.record(db, now, "subscription.downgrade_scheduled",
                      f"{user['name']} scheduled a move to {new.name} at period end", company_id=company["id"],
                      actor=events.user_actor(user), plan=new_code)
        _email(db, now, settings, "plan_change_scheduled",
               f"plan-change-scheduled:{company['id']}:{new_code}:{clock.iso(now)}", sub, company)
    return sub


def undo_scheduled_change(db: Database, now: datetime, settings: Settings, user: dict) -> dict:
    with write(db):
        sub = _active_sub(db, user["company_id"])
        if not sub["scheduled_plan"]:
            return sub
        if renewal_charge_in_flight(db, sub):
            raise ChangeError(_("A renewal charge is being processed; try again in a minute."))
        undone = plans.get(db, sub["scheduled_plan"])
        sub = _update(db, now, sub, scheduled_plan=None)
        events.record(db, now, "subscription.downgrade_undone",
                      f"{user['name']} kept {plans.get(db, sub['plan']).name} (the move to {undone.name} is off)",
                      company_id=sub["company_id"], actor=events.user_actor(user))
    return sub

