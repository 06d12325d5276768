"""What a customer uses now, as the host product reports it (`PUT /api/v1/customers/{id}/usage`).

The host knows its workspaces and stored bytes; billing keeps the latest figures beside the
company, shows them against the plan's limits, tells the owner when they near or reach a
limit, and refuses a downgrade they would not fit.

Warnings go out once per billing period (or trial), per limit and level (80 %, 100 %): a host
that reports every minute does not send an email every minute, and a new period starts
afresh. A jump straight past 100 % sends the 100 % email only.

A downgrade scheduled before usage grew still happens at the period's end: the owner agreed
to that price, and billing never charges more than the owner agreed to. Instead the owner
is told once, as soon as a report no longer fits the plan they are moving to, with the way
out (reduce usage, or keep the current plan); after the move the entitlements show the
overage and the host product enforces its limits as usual.
"""

from __future__ import annotations

from datetime import datetime

from sqlite_utils import Database

from billing import clock, events, i18n, mail, plans, subscriptions
from billing.accounts import FormError
from billing.db import one, scalar
from billing.entitlements import GB
from billing.i18n import gettext as _, ngettext

MAX_COUNT = 10 ** 15  # far beyond any real figure; keeps values inside SQLite's integers
LEVELS = (100, 80)  # percent of a limit at which the owner is told, highest first
LIMITS = ("workspaces", "storage_gb")
# Only a customer still using the product is warned: an ended trial or subscription is not.
WARNED_STATUSES = (subscriptions.TRIALING, subscriptions.ACTIVE, subscriptions.PAST_DUE)


def _count(value, field: str, errors: dict) -> int | None:
    # bool is an int in Python; JSON true is not a count
    if isinstance(value, bool) or not isinstance(value, int):
        errors[field] = _("%(field)s must be a whole number.", field=field)
    elif not 0 <= value <= MAX_COUNT:
        errors[field] = _("%(field)s must be between 0 and %(max)d.", field=field, max=MAX_COUNT)
    else:
        return value
    return None


def check(workspaces, storage_bytes) -> tuple[int, int]:
    errors: dict[str, str] = {}
    w = _count(workspaces, "workspaces", errors)
    b = _count(storage_bytes, "storage_bytes", errors)
    if errors:
        raise FormError(errors)
    return w, b


# --- figures against a plan --------------------------------------------------------------


def figures(plan: plans.Plan, company: dict) -> dict[str, tuple[int, int | None]]:
    """{limit: (used, allowed)} for what the host has reported; allowed None = unlimited."""
    found = {}
    if company.get("usage_workspaces") is not None:
        found["workspaces"] = (company["usage_workspaces"], plan.workspaces)
    if company.get("usage_storage_bytes") is not None:
        found["storage_gb"] = (company["usage_storage_bytes"], plan.storage_gb * GB)
    return found


def level(used: int, allowed: int | None) -> int | None:
    """The highest warning level (100 or 80) `used` has reached; None below 80 % or unlimited."""
    if allowed is None:
        return None
    return next((lv for lv in LEVELS if used * 100 >= allowed * lv), None)


def gb(used_bytes: int, allowed_bytes: int | None = None) -> str:
    """Bytes as GB with one decimal, to the nearest tenth, except never onto the wrong side of
    the limit: 9.97 GB of 10 is "9.9 GB", and 10 GB and a byte is "10.1 GB", not "10 GB"."""
    tenths = (used_bytes * 10 + GB // 2) // GB
    if allowed_bytes is not None:
        limit = allowed_bytes * 10 // GB
        if used_bytes < allowed_bytes:
            tenths = min(tenths, limit - 1)
        elif used_bytes > allowed_bytes:
            tenths = max(tenths, limit + 1)
    whole, decimal = divmod(tenths, 10)
    if i18n.current() == "tr":
        return f"{whole} GB" if not decimal else f"{whole},{decimal} GB"  # Turkish decimal comma
    return f"{whole} GB" if not decimal else f"{whole}.{decimal} GB"


def amount(limit: str, used: int, allowed: int | None) -> str:
    """'5 of 5 workspaces', '8.1 GB of 10 GB storage', '12 workspaces' (unlimited)."""
    if limit == "workspaces":
        if allowed is None:
            return ngettext("%(num)d workspace", "%(num)d workspaces", used)
        return ngettext("%(used)d of %(num)d workspace", "%(used)d of %(num)d workspaces", allowed, used=used)
    if allowed is None:
        return _("%(size)s storage", size=gb(used))
    return _("%(size)s of %(allowed)d GB storage", size=gb(used, allowed), allowed=allowed // GB)


def refusals(plan: plans.Plan, company: dict) -> list[str]:
    """Why the reported usage does not fit `plan`, one sentence per limit it is over."""
    reasons = []
    for limit, (used, allowed) in figures(plan, company).items():
        if allowed is None or used <= allowed:
            continue
        if limit == "workspaces":
            reasons.append(ngettext("You use %(num)d workspace; %(plan)s allows %(allowed)d.",
                                    "You use %(num)d workspaces; %(plan)s allows %(allowed)d.", used,
                                    plan=plan.name, allowed=allowed))
        else:
            reasons.append(_("You store %(size)s; %(plan)s allows %(allowed)d GB.", size=gb(used, allowed),
                             plan=plan.name, allowed=allowed // GB))
    return reasons


def summary(plan: plans.Plan, company: dict, scheduled: plans.Plan | None = None) -> dict | None:
    """What the dashboard shows; None when the host has reported nothing."""
    if company.get("usage_reported_at") is None:
        return None
    rows = []
    for limit, (used, allowed) in figures(plan, company).items():
        lv = level(used, allowed)
        rows.append({"limit": limit, "label": _("Workspaces") if limit == "workspaces" else _("Storage"),
                     "used": used, "allowed": allowed, "text": amount(limit, used, allowed),
                     "over": allowed is not None and used > allowed, "level": lv,
                     "percent": None if allowed is None else min(100, used * 100 // allowed)})
    return {"rows": rows, "reported_at": company["usage_reported_at"], "over": refusals(plan, company),
            "scheduled_over": refusals(scheduled, company) if scheduled else []}


# --- recording and telling the owner ---------------------------------------------------------


def record(db: Database, now: datetime, company_id: int, workspaces, storage_bytes) -> dict | None:
    """Store the figures and warn the owner of limits neared or reached (call inside a write);
    returns the updated company row."""
    w, b = check(workspaces, storage_bytes)
    company = one(db, """UPDATE companies SET usage_workspaces = ?, usage_storage_bytes = ?, usage_reported_at = ?
                         WHERE id = ? RETURNING *""", [w, b, clock.iso(now), company_id])
    if company is None:
        return None
    sub = subscriptions.for_company(db, company_id)
    owner = one(db, "SELECT * FROM users WHERE company_id = ? AND role = 'owner' ORDER BY id LIMIT 1", [company_id])
    if sub is None or owner is None or sub["status"] not in WARNED_STATUSES:
        return company
    _warn_limits(db, now, company, sub, owner)
    _warn_scheduled_plan(db, now, company, sub, owner)
    return company


def period_key(sub: dict) -> str:
    """Names the billing period warnings are counted in: the trial, or the paid period's start."""
    if sub["status"] == subscriptions.TRIALING or not sub.get("current_period_start"):
        return f"trial:{sub.get('trial_ends_at')}"
    return sub["current_period_start"]


def _key(company: dict, sub: dict, limit: str, lv: int) -> str:
    return f"usage:{company['id']}:{period_key(sub)}:{limit}:{lv}"


def upgrade_path(db, sub: dict, plan: plans.Plan, limit: str, used: int) -> tuple[str, plans.Plan | None]:
    """Where the email's button leads, and the plan it suggests: the cheapest bigger plan
    with room for what is used now (None when there is none)."""
    def room(candidate: plans.Plan) -> bool:
        allowed = candidate.workspaces if limit == "workspaces" else candidate.storage_gb * GB
        return level(used, allowed) is None  # below 80 %: not warned again the day after upgrading

    bigger = sorted((p for p in plans.all_plans(db)
              if p.currency == plan.currency and p.price > plan.price and room(p)), key=lambda p: p.price)
    suggested = bigger[0] if bigger else None
    if suggested and sub["status"] == subscriptions.ACTIVE and not sub.get("cancel_at_period_end"):
        return f"/billing/plan/{suggested.code}", suggested
    return "/billing/#plans" if suggested else "/billing/", suggested


def _warn_limits(db, now, company, sub, owner) -> None:
    plan = plans.get(db, sub["plan"])
    for limit, (used, allowed) in figures(plan, company).items():
        lv = level(used, allowed)
        if lv is None:
            continue
        if lv < 100 and scalar(db, "SELECT 1 FROM outbox WHERE dedupe_key = ?", [_key(company, sub, limit, 100)]):
            continue  # already told it was full this period; falling back to 80 % is no news
        path, suggested = upgrade_path(db, sub, plan, limit, used)
        with i18n.using(owner.get("locale")):  # the email's sentences, in the owner's language
            context = {"name": owner["name"], "company": company["name"], "plan_name": plan.name, "limit": limit,
                       "level": lv, "over": used > allowed, "amount": amount(limit, used, allowed),
                       "upgrade_path": path, "suggested_name": suggested.name if suggested else None,
                       "suggested_limits": (_("%(workspaces)s and %(storage)s",
                                              workspaces=i18n.lower(suggested.workspaces_label),
                                              storage=suggested.storage_label) if suggested else None)}
        if company.get("timezone"):
            context["tz"] = company["timezone"]
        if mail.enqueue(db, now, None, template="usage_warning", to=owner["email"],
                        dedupe_key=_key(company, sub, limit, lv), company_id=company["id"], context=context):
            with i18n.using("en"):  # the audit trail is written in English; the timeline translates it
                figure = amount(limit, used, allowed)
            events.record(db, now, "usage.limit_warning",
                          f"{company['name']} uses {figure} on {plan.name} ({lv} %): owner emailed", company_id=company["id"], actor="api", limit=limit, level=lv)


def _warn_scheduled_plan(db, now, company, sub, owner) -> None:
    if not sub.get("scheduled_plan") or sub["status"] != subscriptions.ACTIVE:
        return
    scheduled, current = plans.get(db, sub["scheduled_plan"]), plans.get(db, sub["plan"])
    with i18n.using("en"):  # the audit trail is written in English; the timeline translates it
        reasons = refusals(scheduled, company)
    if not reasons:
        return
    with i18n.using(owner.get("locale")):  # the email's sentences, in the owner's language
        reasons_for_owner = refusals(scheduled, company)
    context = {"name": owner["name"], "company": company["name"], "plan_name": current.name,
               "next_plan_name": scheduled.name, "reasons": reasons_for_owner, "period_end": sub["current_period_end"]}
    if company.get("timezone"):
        context["tz"] = company["timezone"]
    key = f"usage-scheduled:{company['id']}:{sub['current_period_end']}:{scheduled.code}"
    if mail.enqueue(db, now, None, template="usage_over_scheduled_plan", to=owner["email"], dedupe_key=key,
                    company_id=company["id"], context=context):
        events.record(db, now, "usage.over_scheduled_plan",
                      f"usage no longer fits {scheduled.name}, scheduled from {sub['current_period_end'][:10]}: "
                      f"{' '.join(reasons)} Owner emailed", company_id=company["id"], actor="api")
