"""What the landing and pricing pages offer the person reading them, plan by plan.

A visitor gets a free trial (registration is the only way to one, and it turns signed-in
people away, so nobody signed in can still have a trial). A customer's owner gets what the
dashboard and the change-plan flow would give them: Subscribe while not paying; once paying,
an upgrade (now, prorated) or a switch at the period's end, decided by `changes.direction`
so the page never promises what the flow then refuses. Members and staff see the plans
without buttons.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlite_utils import Database

from billing import changes, clock, plans, subscriptions

# What a plan's card offers.
TRIAL = "trial"          # "Start free trial": a link to registration
SUBSCRIBE = "subscribe"  # "Subscribe": the dashboard's POST to checkout
UPGRADE = "upgrade"      # "Upgrade to …": the change-plan page, which charges the prorated difference now
SWITCH = "switch"        # "Switch to … at period end": the change-plan page, which schedules the move
NONE = "none"            # nothing to press (staff, members, or not possible now)

# Why a paying owner's cards have no change buttons (the page says it once, above the plans).
PAST_DUE = "past_due"
ENDING = "ending"
NOT_OWNER = "not_owner"


@dataclass(frozen=True)
class Offer:
    plan: plans.Plan
    action: str = NONE
    current: bool = False  # the viewer's company is on this plan now (trial or paid)
    starts_on: datetime | None = None  # a move to this plan is scheduled for then
    other_currency: str | None = None  # priced in another currency than the subscription is paid in
    paying: int | None = None  # on the current plan at a price other than today's catalog price


@dataclass(frozen=True)
class View:
    viewer: str  # "visitor", "staff", "member" or "owner"
    offers: list[Offer]
    trial_offered: bool  # may the reader still get a free trial (the trial line shows)
    trial_days: int | None  # one length for every plan, said once; None when they differ
    subscription: dict | None = None
    blocked: str | None = None  # PAST_DUE, ENDING or NOT_OWNER: why a paying company's cards have no buttons


def view(db: Database, user: dict | None) -> View:
    catalog = plans.all_plans(db)
    lengths = {p.trial_days for p in catalog}
    one_length = lengths.pop() if len(lengths) == 1 else None
    if user is None or user.get("role") == "staff":
        # Staff see the page as visitors do (it is their public offer), without buttons to press.
        action = TRIAL if user is None else NONE
        return View("visitor" if user is None else "staff", [Offer(p, action) for p in catalog],
                    trial_offered=True, trial_days=one_length)
    sub = subscriptions.for_company(db, user["company_id"])
    owner = user.get("role") == "owner"
    viewer = "owner" if owner else "member"
    if not subscriptions.is_paid(sub):
        # Trialing, trial ended or canceled: any plan is bought from the start (checkout decides when it begins).
        on_it = sub["status"] == subscriptions.TRIALING
        return View(viewer, [Offer(p, SUBSCRIBE if owner else NONE, current=on_it and p.code == sub["plan"])
                             for p in catalog], trial_offered=False, trial_days=one_length, subscription=sub)
    return _paying(db, sub, catalog, viewer, one_length)


def _paying(db: Database, sub: dict, catalog: list[plans.Plan], viewer: str, one_length: int | None) -> View:
    current = plans.get(db, sub["plan"])
    if current.code not in {p.code for p in catalog}:
        # On a plan no longer offered (hidden or archived): still shown, so the page says where they are.
        catalog = sorted([*catalog, current], key=lambda p: (p.sort_order, p.price, p.code))
    blocked = (NOT_OWNER if viewer != "owner" else PAST_DUE if sub["status"] == subscriptions.PAST_DUE
               else ENDING if sub["cancel_at_period_end"] else None)
    paying = sub.get("price") or current.price
    offers = []
    for plan in catalog:
        if plan.code == current.code:
            offers.append(Offer(plan, current=True, paying=paying if paying != plan.price else None))
            continue
        try:
            kind = changes.direction(db, sub, plan.code)
        except changes.ChangeError:  # another currency: the change-plan flow refuses it
            offers.append(Offer(plan, other_currency=sub.get("currency") or current.currency))
            continue
        if plan.code == sub.get("scheduled_plan"):
            offers.append(Offer(plan, starts_on=clock.parse(sub["current_period_end"])))
        elif blocked:
            offers.append(Offer(plan))
        else:
            offers.append(Offer(plan, UPGRADE if kind == "upgrade" else SWITCH))
    return View(viewer, offers, trial_offered=False, trial_days=one_length, subscription=sub, blocked=blocked)
