"""What a customer's billing dashboard shows, gathered in one read. (The timeline is billing/timeline.py.)"""

from __future__ import annotations

from datetime import datetime

from sqlite_utils import Database

from billing import accounts, billing_details, cards, credit_notes, invoices, payments, plans, subscriptions, usage


def overview(db: Database, now: datetime, company_id: int) -> dict:
    company = accounts.company(db, company_id)
    sub = subscriptions.for_company(db, company_id)
    plan = plans.get(db, sub["plan"])
    scheduled = plans.get(db, sub["scheduled_plan"]) if sub["scheduled_plan"] else None
    return {
        "company": company,
        "subscription": sub,
        "plan": plan,
        "status_label": subscriptions.STATUS_LABELS.get(sub["status"], sub["status"]),
        "on_trial": subscriptions.on_trial(sub, now),
        "trial_days_left": subscriptions.trial_days_left(sub, now),
        "trial_total_days": subscriptions.trial_length_days(sub),
        "is_paid": subscriptions.is_paid(sub),
        "paid_until": subscriptions.paid_until(sub),
        "first_period_later": subscriptions.first_period_later(sub, now),
        # What the owner may choose: any offered plan to subscribe; once paying, those in the same currency.
        "plans": [p for p in plans.all_plans(db)
                  if not subscriptions.is_paid(sub) or p.currency == (sub["currency"] or plan.currency)],
        "price": sub["price"] or plan.price,  # what this subscription renews at
        "next_price": sub.get("next_price"), "next_price_from": sub.get("next_price_from"),
        "payments": payments.for_company(db, company_id),
        "invoices": invoices.for_company(db, company_id),
        "credit_notes": credit_notes.for_company(db, company_id),  # listed under their invoices
        "payment_labels": payments.STATUS_LABELS,
        "failure_reason": payments.failure_reason,  # our sentence for a failed payment, in the reader's language
        "renews_on": subscriptions.renews_on(sub),
        "will_cancel_on": subscriptions.will_cancel_on(sub),
        "scheduled_plan": scheduled,
        "has_card": cards.renews_by_card(company),  # renewals are charged to a saved card
        "has_saved_cards": bool(company.get("paytr_utoken")),
        "details": billing_details.of(company),
        "details_complete": billing_details.is_complete(company),
        "usage": usage.summary(plan, company, scheduled),
    }
