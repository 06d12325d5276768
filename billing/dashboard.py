"""What a customer's billing dashboard shows, gathered in one read."""

from __future__ import annotations

from datetime import datetime

from sqlite_utils import Database

from billing import (accounts, billing_details, cards, events, invoices, mail, money, payments, plans, subscriptions,
                     usage)
from billing.db import rows


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
        "renews_on": subscriptions.renews_on(sub),
        "will_cancel_on": subscriptions.will_cancel_on(sub),
        "scheduled_plan": plans.PLANS.get(sub["scheduled_plan"]) if sub["scheduled_plan"] else None,
        "has_card": cards.renews_by_card(company),  # renewals are charged to a saved card
        "has_saved_cards": bool(company.get("paytr_utoken")),
        "details": billing_details.of(company),
        "details_complete": billing_details.is_complete(company),
        "usage": usage.summary(plans.get(sub["plan"]), company,
                               plans.get(sub["scheduled_plan"]) if sub["scheduled_plan"] else None),
    }


# The console's outbox words ("emails waiting", "failed"), as badges.
EMAIL_LABELS = {"pending": "Waiting", "sent": "Sent", "failed": "Failed"}


def timeline(db: Database, company_id: int, settings, limit: int = 200) -> list[dict]:
    """Every event, payment, invoice and email of a company, newest first."""
    labels = payments.STATUS_LABELS
    entries = [{"at": e["created_at"], "kind": "Event", "text": e["message"], "order": (e["created_at"], 3, e["id"])}
               for e in events.for_company(db, company_id, limit)]
    for p in rows(db, "SELECT * FROM payments WHERE company_id = ? ORDER BY id DESC LIMIT ?", [company_id, limit]):
        what = {"renewal": "Renewal", "upgrade": "Upgrade", "subscribe": "Subscription"}[p["kind"]]
        how = {"recurring": " (saved card)", "direct": " (card saved)" if p["status"] == payments.SUCCEEDED
               else " (saving a new card)"}.get(p["method"], "")
        text = f"{what} payment of {money.format(p['amount'], p['currency'])}{how}"
        if p["failed_reason_msg"]:
            text += f": {p['failed_reason_msg']}"
        entries.append({"at": p["decided_at"] or p["created_at"], "kind": "Payment", "text": text,
                        "badge": p["status"], "badge_label": labels[p["status"]],
                        "order": (p["decided_at"] or p["created_at"], 2, p["id"])})
    for i in invoices.for_company(db, company_id, limit):
        entries.append({"at": i["issued_at"], "kind": "Invoice",
                        "text": f"Invoice {i['number']}, {money.format(i['total'], i['currency'])}",
                        "link": f"/billing/invoices/{i['number']}", "order": (i["issued_at"], 1, i["id"])})
    for m in rows(db, "SELECT * FROM outbox WHERE company_id = ? ORDER BY id DESC LIMIT ?", [company_id, limit]):
        try:
            subject = mail.rendered(m, settings)["subject"]  # not sent yet: render it to show what it will say
        except Exception:  # a template that does not render shows as its name; the sender reports the error
            subject = m["template"].replace("_", " ")
        entries.append({"at": m["sent_at"] or m["created_at"], "kind": "Email",
                        "text": f"“{subject}” to {m['to_addr']}", "badge": m["status"],
                        "badge_label": EMAIL_LABELS.get(m["status"], m["status"]),
                        "order": (m["sent_at"] or m["created_at"], 0, m["id"])})
    entries.sort(key=lambda e: e["order"], reverse=True)
    return entries[:limit]
