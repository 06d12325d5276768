"""What a customer's billing dashboard shows, gathered in one read."""

from __future__ import annotations

from datetime import datetime

from sqlite_utils import Database

from billing import accounts, plans, subscriptions


def overview(db: Database, now: datetime, company_id: int) -> dict:
    company = accounts.company(db, company_id)
    sub = subscriptions.for_company(db, company_id)
    return {
        "company": company,
        "subscription": sub,
        "plan": plans.PLANS.get(sub["plan"]) if sub else None,
        "status_label": subscriptions.STATUS_LABELS.get(sub["status"], sub["status"]) if sub else "",
        "on_trial": subscriptions.on_trial(sub, now) if sub else False,
        "trial_days_left": subscriptions.trial_days_left(sub, now) if sub else 0,
        "trial_total_days": subscriptions.trial_length_days(sub) if sub else 0,
        "plans": plans.all_plans(),
    }
