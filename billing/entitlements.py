"""What a customer may use now: the answer the host product enforces.

One function computes it from the subscription, the plan and the usage the host last
reported, so the JSON API, the webhooks and the dashboard can never disagree. `access`
follows `subscriptions.has_access` (trial, paid period, grace after a failed renewal),
and also covers a subscription canceled outright while paid time is left.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from billing import clock, plans, subscriptions
from billing.subscriptions import ACTIVE, CANCELED, PAST_DUE, TRIALING

GB = 1024 ** 3
WARN_AT = 0.8  # share of a limit at which the owner is told (and again at 100 %)


def customer_id(company_id: int) -> str:
    return f"cus_{company_id}"


def parse_customer_id(value: str) -> int | None:
    """`cus_42` -> 42; anything else -> None (the API answers 404)."""
    if not isinstance(value, str) or not value.startswith("cus_"):
        return None
    digits = value[4:]
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 18 or digits.startswith("0"):
        return None
    return int(digits)


def _at(value: str | None) -> datetime | None:
    return clock.parse(value) if value else None


def access(sub: dict, now: datetime, grace_days: int) -> bool:
    if subscriptions.has_access(sub, now, grace_days):
        return True
    end = _at(sub.get("current_period_end"))
    return sub["status"] == CANCELED and end is not None and now < end


def valid_until(sub: dict, now: datetime, grace_days: int) -> datetime | None:
    """Until when `access` holds if nothing else happens (no payment, no cancel)."""
    if not access(sub, now, grace_days):
        return None
    if sub["status"] == TRIALING:
        return _at(sub.get("trial_ends_at"))
    if sub["status"] == PAST_DUE:
        return subscriptions.grace_ends(sub, grace_days)
    end = _at(sub.get("current_period_end"))
    if sub["status"] == ACTIVE and end is not None and end <= now:
        return now + timedelta(days=grace_days)  # being renewed right now; a failure still leaves the grace
    return end


def limits(plan: plans.Plan) -> dict:
    return {"workspaces": plan.workspaces, "storage_gb": plan.storage_gb}


def usage(company: dict) -> dict:
    return {"workspaces": company.get("usage_workspaces"), "storage_bytes": company.get("usage_storage_bytes"),
            "reported_at": company.get("usage_reported_at")}


def over_limit(plan: plans.Plan, company: dict, share: float = 1.0) -> list[str]:
    """The limits the reported usage is over; with share < 1, those it has reached that share of."""
    def crossed(used, allowed) -> bool:
        if used is None or allowed is None:
            return False
        return used > allowed if share == 1.0 else used >= allowed * share

    over = []
    if crossed(company.get("usage_workspaces"), plan.workspaces):
        over.append("workspaces")
    if crossed(company.get("usage_storage_bytes"), plan.storage_gb * GB):
        over.append("storage_gb")
    return over


def for_company(db, company: dict, sub: dict, now: datetime, grace_days: int) -> dict:
    """The entitlements object of the JSON API (also a webhook's and a snapshot's part)."""
    plan = plans.get(db, sub["plan"])
    until = valid_until(sub, now, grace_days)
    return {
        "customer": customer_id(company["id"]),
        "plan": plan.code,
        "status": sub["status"],
        "access": access(sub, now, grace_days),
        "limits": limits(plan),
        "usage": usage(company),
        "over_limit": over_limit(plan, company),
        "valid_until": clock.iso(until) if until else None,
    }
