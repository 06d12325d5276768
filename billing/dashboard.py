"""What a customer's billing dashboard shows, gathered in one read."""

from __future__ import annotations

import json
from datetime import datetime

from sqlite_utils import Database

from billing import (accounts, billing_details, cards, credit_notes, events, invoices, mail, money, payments, plans,
                     subscriptions, usage)
from billing.db import rows
from billing.i18n import gettext as _, lazy_gettext, ngettext


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


# The console's outbox words ("emails waiting", "failed"), as badges.
EMAIL_LABELS = {"pending": lazy_gettext("Waiting"), "sent": lazy_gettext("Sent"), "failed": lazy_gettext("Failed")}
KIND_LABELS = {"Event": lazy_gettext("Event"), "Payment": lazy_gettext("Payment"), "Invoice": lazy_gettext("Invoice"),
               "Email": lazy_gettext("Email")}


def _amount(data: dict, currency: str | None) -> str | None:
    value = data.get("amount")
    return money.format(int(value), currency) if isinstance(value, int) and currency else None


def event_text(event: dict, currencies: dict[str, str] | None = None,
               catalog: dict[str, plans.Plan] | None = None) -> tuple[str, str | None]:
    """(what the reader is told, a detail for staff) for one audit event, in the reader's language.

    Events are stored with an English `message`; the kinds a customer sees are told again from
    their `kind` and `data`. An unknown kind shows its stored message. The detail is PayTR's own
    words (a failure's reason), kept as they came."""
    kind, message = event["kind"], event["message"] or ""
    try:
        data = json.loads(event.get("data") or "{}")
    except ValueError:
        data = {}
    currency = (currencies or {}).get(data.get("merchant_oid"))
    amount = _amount(data, currency)
    after = message.partition(": ")[2] or None  # "Payment failed: <PayTR's words>"

    if kind == "company.registered":
        return _("Account registered; the free trial started."), None
    if kind.startswith("subscription."):
        status = kind.split(".", 1)[1]
        plan = (catalog or {}).get(data.get("plan") or "")
        previous_plan = (catalog or {}).get(data.get("previous_plan") or "")
        if status == "active" and previous_plan and plan:
            return _("Plan changed from %(old)s to %(new)s.", old=previous_plan.name, new=plan.name), None
        if status == "active" and data.get("previous") in ("active", "past_due"):
            return (_("Renewed: %(plan)s paid.", plan=plan.name) if plan else _("Subscription renewed.")), None
        if status == "active":
            return (_("Subscribed to %(plan)s.", plan=plan.name) if plan else _("Subscription started.")), None
        if status == "past_due":
            return _("The renewal payment did not go through; the subscription is past due."), None
        if status == "canceled":
            return _("The subscription ended."), None
        if status == "expired":
            return _("The free trial ended."), None
        if status == "trialing":
            return _("The free trial was extended."), None
        if status == "cancel_scheduled":
            return _("Cancellation requested: the subscription ends with the paid period."), None
        if status == "resumed":
            return _("Subscription resumed; it renews as usual."), None
        if status == "downgrade_scheduled":
            return (_("Move to %(plan)s scheduled for the end of the period.", plan=plan.name) if plan
                    else _("A plan change was scheduled for the end of the period.")), None
        if status == "downgrade_undone":
            return _("The scheduled plan change was undone."), None
        if status == "days_granted":
            days = data.get("days") if isinstance(data.get("days"), int) else 0
            return ngettext("%(num)d free day was added to the paid period; the renewal moves with it.",
                            "%(num)d free days were added to the paid period; the renewal moves with it.", days), None
        if status == "periods_skipped":
            return _("A late renewal: only the period running now was charged."), None
    if kind == "payment.started":
        return (_("Checkout opened for %(amount)s.", amount=amount) if amount else _("Checkout opened.")), None
    if kind == "payment.succeeded":
        return (_("Payment received; invoice %(number)s.", number=data["invoice"]) if data.get("invoice")
                else _("Payment received.")), None
    if kind == "payment.failed":
        return _("Payment failed: %(reason)s", reason=payments.failure_reason(data.get("reason_code"))), after
    if kind == "payment.abandoned":
        return str(payments.CHECKOUT_REFUSED), after
    if kind == "payment.expired":
        return _("A checkout closed without a payment."), None
    if kind == "renewal.charge_started":
        return _("Charging the saved card for the renewal."), None
    if kind == "card.saved":
        return _("Card saved at PayTR; renewals are charged to it from now on."), None
    if kind == "card.chosen":
        return _("Renewals are charged to %(card)s.", card=cards.shown(data.get("card")) or _("Saved card")), None
    if kind == "card.removed":
        return _("Saved card removed: %(card)s.", card=cards.shown(data.get("card")) or _("Saved card")), None
    if kind == "company.billing_details_updated":
        return _("Billing details updated."), None
    if kind == "refund.requested":
        return (_("Refund of %(amount)s requested.", amount=amount) if amount else _("Refund requested.")), None
    if kind == "refund.succeeded":
        return (_("%(amount)s refunded to the card.", amount=amount) if amount else _("Refunded to the card.")), None
    if kind == "refund.failed":
        return _("A refund did not go through."), after
    if kind == "refund.unknown":
        return _("Waiting for PayTR to confirm a refund."), None
    if kind == "team.invited":
        return _("%(email)s was invited to the team.", email=data.get("email") or "?"), None
    if kind == "team.joined":
        return _("A new member joined the team."), None
    if kind == "team.removed":
        return _("A member was removed from the team."), None
    if kind == "team.invite_withdrawn":
        return _("An invitation was withdrawn."), None
    if kind == "user.password_reset_requested":
        return _("A password reset was requested."), None
    if kind == "user.password_reset":
        return _("A password was changed with a reset link."), None
    if kind == "usage.limit_warning":
        return _("Usage reached %(level)s %% of a plan limit; the owner was emailed.", level=data.get("level", "?")), None
    if kind == "usage.over_scheduled_plan":
        return _("Usage no longer fits the scheduled plan; the owner was emailed."), None
    if kind == "portal.link_created":
        return _("A billing link was made for the host product."), None
    if kind == "portal.link_used":
        return _("Billing was opened from the host product."), None
    if kind == "customer.updated":
        return _("Customer details changed through the API."), None
    if kind == "email.resent":
        return _("An email was sent again by our team."), None
    if kind == "staff.upgrade_offered":
        plan = (catalog or {}).get(data.get("plan") or "")
        return (_("Our team emailed a link to upgrade to %(plan)s.", plan=plan.name) if plan
                else _("Our team emailed a link to upgrade.")), None
    if kind == "anomaly.resolved":
        return _("A payment our team checked was resolved."), None
    if kind.startswith("anomaly."):
        return _("A payment needs a look by our team."), None
    return message, None


def timeline(db: Database, company_id: int, settings, limit: int = 200) -> list[dict]:
    """Every event, payment, invoice and email of a company, newest first, in the reader's language."""
    labels = payments.STATUS_LABELS
    found_payments = rows(db, "SELECT * FROM payments WHERE company_id = ? ORDER BY id DESC LIMIT ?",
                          [company_id, limit])
    currencies = {p["merchant_oid"]: p["currency"] for p in found_payments}
    catalog = {p.code: p for p in plans.all_plans(db, hidden=True, archived=True)}
    entries = []
    for e in events.for_company(db, company_id, limit):
        text, detail = event_text(e, currencies, catalog)
        entries.append({"at": e["created_at"], "kind": "Event", "kind_label": str(KIND_LABELS["Event"]),
                        "text": text, "detail": detail, "order": (e["created_at"], 3, e["id"])})
    for p in found_payments:
        what = {"renewal": _("Renewal payment of %(amount)s"), "upgrade": _("Upgrade payment of %(amount)s"),
                "subscribe": _("Subscription payment of %(amount)s")}[p["kind"]]
        text = what % {"amount": money.format(p["amount"], p["currency"])}
        how = {"recurring": _("(saved card)"),
               "direct": _("(card saved)") if p["status"] == payments.SUCCEEDED else _("(saving a new card)")
               }.get(p["method"])
        if how:
            text = f"{text} {how}"
        detail = None
        if p["status"] == payments.FAILED:
            text = _("%(payment)s: %(reason)s", payment=text, reason=payments.failure_reason(p))
            detail = p["failed_reason_msg"]
        entries.append({"at": p["decided_at"] or p["created_at"], "kind": "Payment",
                        "kind_label": str(KIND_LABELS["Payment"]), "text": text, "detail": detail,
                        "badge": p["status"], "badge_label": str(labels[p["status"]]),
                        "order": (p["decided_at"] or p["created_at"], 2, p["id"])})
    for i in invoices.for_company(db, company_id, limit):
        entries.append({"at": i["issued_at"], "kind": "Invoice", "kind_label": str(KIND_LABELS["Invoice"]),
                        "text": _("Invoice %(number)s, %(total)s", number=i["number"],
                                  total=money.format(i["total"], i["currency"])),
                        "link": f"/billing/invoices/{i['number']}", "order": (i["issued_at"], 1, i["id"])})
    for m in rows(db, "SELECT * FROM outbox WHERE company_id = ? ORDER BY id DESC LIMIT ?", [company_id, limit]):
        try:
            subject = mail.rendered(m, settings)["subject"]  # not sent yet: render it to show what it will say
        except Exception:  # a template that does not render shows as its name; the sender reports the error
            subject = m["template"].replace("_", " ")
        entries.append({"at": m["sent_at"] or m["created_at"], "kind": "Email", "kind_label": str(KIND_LABELS["Email"]),
                        "text": _("“%(subject)s” to %(address)s", subject=subject, address=m["to_addr"]),
                        "badge": m["status"], "badge_label": str(EMAIL_LABELS.get(m["status"], m["status"])),
                        "outbox_id": m["id"], "order": (m["sent_at"] or m["created_at"], 0, m["id"])})
    entries.sort(key=lambda e: e["order"], reverse=True)
    return entries[:limit]
