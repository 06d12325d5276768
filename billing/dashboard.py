"""What a customer's billing dashboard shows, gathered in one read."""

from __future__ import annotations

from datetime import datetime

from sqlite_utils import Database

from billing import accounts, invoices, payments, plans, subscriptions


def overview(db: Database, now: datetime, company_id: int) -> dict:
    company = accounts.company(db, company_id)
    sub = subscriptions.for_company(db, company_id)
    return {
        "company": company,
        "subscription": sub,
        "plan": plans.PLANS.get(sub["plan"]),
        "status_label": subscriptions.STATUS_LABELS.get(sub["status"], sub["status"]),
        "on_trial": subscriptions.on_trial(sub, now),
        "trial_days_left": subscriptions.trial_days_left(sub, now),
        "trial_total_days": subscriptions.trial_length_days(sub),
        "is_paid": subscriptions.is_paid(sub),
        "paid_until": subscriptions.paid_until(sub),
        "first_period_later": subscriptions.first_period_later(sub, now),
        "plans": plans.all_plans(),
        "payments": payments.for_company(db, company_id),
        "invoices": invoices.for_company(db, company_id),
        "payment_labels": payments.STATUS_LABELS,
    }
