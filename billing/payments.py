"""Payments: starting a checkout, and applying PayTR's callbacks exactly once.

A checkout is a `pending` payment row with its own merchant_oid; starting a new
one supersedes the company's older open checkouts. PayTR's callback decides the
row once: the first callback for a merchant_oid counts, repeats are recorded and
change nothing. Anything that does not add up (an unknown order, an amount or
currency or mode that differs from our row, a success after a recorded failure,
a second success for one period) is kept for staff, alerts them, and never
activates anything by itself.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from billing import accounts, billing_details, cards, changes, clock, events, i18n, invoices, mail, plans, subscriptions
from billing.db import one, rows, write
from billing.i18n import gettext as _, lazy_gettext
from billing.paytr import protocol
from billing.settings import Settings

log = logging.getLogger("billing.payments")

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"
ABANDONED, SUPERSEDED, NEEDS_REVIEW = "abandoned", "superseded", "needs_review"
OPEN = (PENDING, SUPERSEDED, ABANDONED)  # not decided by PayTR yet
STATUS_LABELS = {PENDING: lazy_gettext("Waiting for PayTR"), SUCCEEDED: lazy_gettext("Paid"),
                 FAILED: lazy_gettext("Failed"), ABANDONED: lazy_gettext("Not completed"),
                 SUPERSEDED: lazy_gettext("Replaced"), NEEDS_REVIEW: lazy_gettext("Under review")}

# Why a payment failed, in our words and the customer's language, from PayTR's failed_reason_code
# (https://dev.paytr.com/hata-kodlari). PayTR's own failed_reason_msg (Turkish, and for code 0 the
# bank's words) stays in the payment row and the timeline for staff; it is never shown as the reason.
FAILURE_REASONS = {
    "0": lazy_gettext("Your bank declined the payment. Please try another card, or ask your bank why."),
    "1": lazy_gettext("The identity check was not completed. Please try again and finish it."),
    "2": lazy_gettext("The identity check failed: the code entered was not right. Please try again."),
    "3": lazy_gettext("The payment did not pass the security check. Please try another card."),
    "6": lazy_gettext("The payment page was closed or timed out before the payment was made."),
    "8": lazy_gettext("This card cannot pay in instalments."),
    "9": lazy_gettext("This card cannot be used for this payment. Please try another card."),
    "10": lazy_gettext("This payment needs 3D Secure. Please try again with 3D Secure."),
    "11": lazy_gettext("The payment was stopped by a security warning. Please try another card."),
    "99": lazy_gettext("The payment could not be completed because of a technical problem. Please try again later."),
    "charge": lazy_gettext("Your saved card could not be charged."),  # PayTR refused a saved-card charge
}
DECLINED = lazy_gettext("The payment was declined.")
# PayTR refused to open its payment page (get-token): the customer sees this; staff see PayTR's reason.
CHECKOUT_REFUSED = lazy_gettext("The payment page could not be opened; please try again.")
RECONCILE_AFTER = timedelta(minutes=30)
TOKEN_MINUTES = 30  # how long PayTR's iframe token stays valid (timeout_limit)


class CheckoutError(Exception):
    """The customer cannot start this checkout; the message says why."""


@dataclass(frozen=True)
class Checkout:
    payment: dict
    request: dict  # for PayTR: get-token fields, or the Direct API form's hidden fields (paytr_token included)


# --- starting a checkout -------------------------------------------------------------


def start_checkout(db: Database, now: datetime, settings: Settings, *, user: dict, plan_code: str, ip: str,
                   method: str = "iframe", upgrade: "changes.Quote | None" = None,
                   actor: str | None = None) -> Checkout:
    """Create the pending payment (superseding the company's open checkouts) and the request
    for PayTR: get-token fields for the iframe, or the hidden fields of a Direct API card form
    (`method="direct"`, which can save the card for automatic renewal). `method="recurring"`
    (an upgrade charged to the saved card) needs no request from the browser. `actor`: who started
    it, when not `user` (staff charging an upgrade for the owner)."""
    plan = plans.get(db, plan_code)
    with write(db):
        company = accounts.company(db, user["company_id"])
        sub = subscriptions.for_company(db, company["id"])
        if upgrade is not None:
            if method == "recurring" and one(db, "SELECT id FROM payments WHERE company_id = ? AND kind = 'upgrade' "
                                                 "AND method = 'recurring' AND status = ?", [company["id"], PENDING]):
                raise CheckoutError(_("Your upgrade is already being charged to your saved card; "
                                      "see the outcome on your billing page in a moment."))
            kind, amount, base_plan = "upgrade", upgrade.amount, upgrade.old.code
            until = upgrade.period_end.astimezone(settings.tz)
            description = (f"Upgrade {upgrade.old.name} → {upgrade.new.name}, {upgrade.days_left} days until "
                           f"{until:%d.%m.%Y}" if upgrade.paid_ahead else
                           f"Upgrade {upgrade.old.name} → {upgrade.new.name}, {upgrade.days_left} of "
                           f"{upgrade.period_days} days until {until:%d.%m.%Y}")
        else:
            try:
                kind = subscriptions.checkout_kind(sub, plan.code)
            except subscriptions.TransitionError as exc:
                raise CheckoutError(str(exc)) from None
            if kind == "renewal" and sub["cancel_at_period_end"]:
                raise CheckoutError(_("Your subscription is set to end. Resume it first if you want to keep it."))
            if kind == "renewal" and (begins := subscriptions.waits_for_scheduled_change(sub, now)):
                raise CheckoutError(_("Your move to %(plan)s begins on %(date)s; you can pay for it from that day, "
                                      "or undo the change to renew now.", plan=plan.name,
                                      date=i18n.date_text(begins.astimezone(settings.tz))))
            base_plan = sub["plan"]
            # What the basket tells PayTR; the invoice line is written from the period actually granted.
            start, end, _anchor = subscriptions.next_period(sub, now, settings.tz, plan.months)
            # A renewal is charged at the price the subscription renews at (staff apply catalog
            # changes with notice); a new subscription at the catalog's.
            amount = subscriptions.renewal_price(db, sub, start)[1] if kind == "renewal" else plan.price
            description = line_description(plan, start, end, settings.tz)
        superseded = db.conn.execute(
            "UPDATE payments SET status = ?, updated_at = ? WHERE company_id = ? AND status = ? AND method != ?",
            [SUPERSEDED, clock.iso(now), company["id"], PENDING, "recurring"]).rowcount
        oid = protocol.new_merchant_oid(company["id"], now)
        payment_id = db.conn.execute(
            """INSERT INTO payments (company_id, merchant_oid, kind, method, plan, amount, currency, test_mode,
                   base_period_end, base_plan, description, user_id, user_ip, email, reconcile_at, created_at,
                   updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [company["id"], oid, kind, method, plan.code, amount, plan.currency, int(settings.paytr_test_mode),
             sub["current_period_end"], base_plan, description, user["id"], ip, user["email"],
             clock.iso(now + RECONCILE_AFTER), clock.iso(now), clock.iso(now)],
        ).lastrowid
        events.record(db, now, "payment.started", f"{user['name']} started a checkout: {description}",
                      company_id=company["id"], actor=actor or f"user:{user['id']}", merchant_oid=oid, payment_kind=kind,
                      amount=amount, superseded=superseded)
        payment = one(db, "SELECT * FROM payments WHERE id = ?", [payment_id])
    # A saved-card charge is sent by our server (jobs.charge_now), not by the customer's browser.
    request = {} if method == "recurring" else paytr_request(settings, payment, user["name"], company)
    return Checkout(payment=payment, request=request)


def failure_reason(payment_or_code) -> str:
    """The customer's sentence for a failed payment (a payment row, or its failed_reason_code)."""
    code = payment_or_code.get("failed_reason_code") if isinstance(payment_or_code, dict) else payment_or_code
    return str(FAILURE_REASONS.get(str(code or "").strip(), DECLINED))


def paytr_request(settings: Settings, payment: dict, user_name: str, company: dict, lang: str | None = None) -> dict:
    """What the browser or our server sends PayTR for this payment (pure: no I/O). PayTR's page
    speaks `lang` (default: the language of the request or email being handled)."""
    oid = payment["merchant_oid"]
    common = dict(merchant_id=settings.paytr_merchant_id, key=str(settings.paytr_merchant_key),
                  salt=str(settings.paytr_merchant_salt), user_ip=payment["user_ip"] or "127.0.0.1",
                  merchant_oid=oid, email=payment["email"], amount=payment["amount"], currency=payment["currency"],
                  test_mode=bool(payment["test_mode"]), user_name=user_name,
                  **billing_details.paytr_contact(company),
                  basket=protocol.encode_basket([(payment["description"], payment["amount"], 1)]),
                  ok_url=settings.url(f"/billing/payment/success?oid={oid}"),
                  fail_url=settings.url(f"/billing/payment/fail?oid={oid}"), lang=lang or i18n.current())
    if payment["method"] == "direct":
        return protocol.direct_form_fields(**common, store_card=True, utoken=company.get("paytr_utoken") or "")
    return protocol.get_token_request(**common, timeout_limit=TOKEN_MINUTES)


def direct_form(db: Database, settings: Settings, payment: dict) -> dict:
    """The hidden fields of the Direct API card form for a pending `direct` payment."""
    company = accounts.company(db, payment["company_id"])
    user = accounts.user_by_id(db, payment["user_id"]) if payment["user_id"] else None
    return paytr_request(settings, payment, user["name"] if user else company["name"], company)


def line_description(plan: plans.Plan, start: datetime, end: datetime, tz: ZoneInfo) -> str:
    return (f"{plan.name} plan, {start.astimezone(tz):%d.%m.%Y} – {end.astimezone(tz):%d.%m.%Y}")


def token_received(db: Database, now: datetime, merchant_oid: str, token: str) -> None:
    with write(db):
        db.conn.execute("UPDATE payments SET paytr_token = ?, updated_at = ? WHERE merchant_oid = ? AND status = ?",
                   [token, clock.iso(now), merchant_oid, PENDING])


def abandon(db: Database, now: datetime, merchant_oid: str, reason: str) -> None:
    """PayTR refused the checkout or did not answer: nothing else changes."""
    _close(db, now, merchant_oid, reason, (PENDING,), "payment.abandoned", "Checkout could not start")


def expire(db: Database, now: datetime, merchant_oid: str, reason: str) -> None:
    """A checkout that PayTR never saw paid, long after its page expired: close it."""
    _close(db, now, merchant_oid, reason, (PENDING, SUPERSEDED), "payment.expired", "Checkout closed")


def _close(db, now, merchant_oid, reason, closable, event, message) -> None:
    with write(db):
        payment = by_oid(db, merchant_oid)
        if payment is None or payment["status"] not in closable:
            return
        db.conn.execute("UPDATE payments SET status = ?, abandon_reason = ?, updated_at = ?, reconcile_at = NULL "
                        "WHERE id = ?", [ABANDONED, reason[:500], clock.iso(now), payment["id"]])
        events.record(db, now, event, f"{message}: {reason}", company_id=payment["company_id"],
                      merchant_oid=merchant_oid)


def by_oid(db: Database, merchant_oid: str) -> dict | None:
    return one(db, "SELECT * FROM payments WHERE merchant_oid = ?", [merchant_oid])


def for_company_by_oid(db: Database, company_id: int, merchant_oid: str) -> dict | None:
    """A payment with what the status pages show, only if it belongs to this company."""
    payment = one(db, "SELECT * FROM payments WHERE merchant_oid = ? AND company_id = ?", [merchant_oid, company_id])
    if payment is None:
        return None
    payment["subscription"] = subscriptions.for_company(db, company_id)
    payment["invoice"] = one(db, "SELECT number FROM invoices WHERE payment_id = ?", [payment["id"]])
    payment["plan_obj"] = plans.find(db, payment["plan"])
    payment["buyer"] = billing_details.invoice_buyer(accounts.company(db, company_id))
    return payment


def renewal_confirming(db: Database, now: datetime, company_id: int) -> bool:
    """Is a payment for the overdue renewal out at PayTR right now (a saved-card charge, or a
    checkout whose page is still open), its outcome not known yet?"""
    return one(db, "SELECT id FROM payments WHERE company_id = ? AND kind = 'renewal' AND status = ? "
                   "AND (method = 'recurring' OR created_at >= ?) LIMIT 1",
               [company_id, PENDING, clock.iso(now - timedelta(minutes=TOKEN_MINUTES))]) is not None


def for_company(db: Database, company_id: int, limit: int = 50) -> list[dict]:
    return rows(db, """SELECT p.*, i.number AS invoice_number,
                              (SELECT coalesce(sum(amount), 0) FROM refunds r
                               WHERE r.payment_id = p.id AND r.status = 'succeeded') AS refunded
                       FROM payments p LEFT JOIN invoices i ON i.payment_id = p.id
                       WHERE p.company_id = ? AND p.status != ?
                       ORDER BY p.id DESC LIMIT ?""", [company_id, ABANDONED, limit])


# --- applying a callback --------------------------------------------------------------------


def apply_callback(db: Database, now: datetime, settings: Settings, cb: protocol.Callback,
                   remote_addr: str = "") -> str:
    """Apply one verified callback in one write; returns what happened.

    'applied', 'failed', 'duplicate' or 'anomaly'. Every answer means PayTR
    may be told OK: the raw callback and its outcome are committed together.
    """
    with write(db):
        return apply_callback_in(db, now, settings, cb, remote_addr)


def apply_callback_in(db: Database, now: datetime, settings: Settings, cb: protocol.Callback,
                      remote_addr: str = "") -> str:
    """`apply_callback` inside a transaction the caller holds (the group commit's)."""
    payment = by_oid(db, cb.merchant_oid)
    if payment is None:
        outcome = _anomaly(db, now, settings, "unknown_order", cb, None,
                           f"PayTR reported {cb.status} for an order we never created.")
    elif payment["status"] in OPEN:
        outcome = _decide(db, now, settings, payment, cb)
    elif payment["status"] == FAILED and cb.status == "success":
        _set(db, now, payment, status=NEEDS_REVIEW, paid_amount=cb.total_amount,
             flag="PayTR reported a success after a recorded failure")
        outcome = _anomaly(db, now, settings, "success_after_failure", cb, payment,
                           "PayTR reported a success for an order it had reported as failed. "
                           "The money is recorded; the subscription was not changed.")
    else:
        outcome = "duplicate"  # the first callback decided; a later failed never undoes a success
    _keep_raw(db, now, cb, remote_addr, outcome)
    return outcome


def _decide(db, now, settings, payment, cb) -> str:
    if cb.status == "failed":
        return _failed(db, now, settings, payment, cb)

    problems = _mismatches(settings, payment, cb)
    if problems:
        _set(db, now, payment, status=NEEDS_REVIEW, paid_amount=cb.total_amount, decided_at=now,
             reconcile_at=None, flag="; ".join(problems))
        return _anomaly(db, now, settings, "mismatch", cb, payment,
                        "The payment does not match our order: " + "; ".join(problems)
                        + ". The money is recorded; the subscription was not changed.")

    sub = subscriptions.for_company(db, payment["company_id"])
    company = accounts.company(db, payment["company_id"])
    stale = _not_applicable(sub, payment, now)
    if stale:
        kind, flag, detail = stale
        _set(db, now, payment, status=NEEDS_REVIEW, paid_amount=cb.total_amount, decided_at=now,
             reconcile_at=None, flag=flag)
        return _anomaly(db, now, settings, kind, cb, payment,
                        f"{detail} The money is recorded; the subscription was not changed. Consider a refund.")

    # The card form always stores the card, under the PayTR user it named (ours, if we had one).
    # PayTR's status query, which finds a callback that never came, does not say the utoken.
    utoken = cb.get("utoken") or company.get("paytr_utoken")
    if utoken and payment["method"] == "direct":
        _save_card(db, now, payment, utoken)
    tz = _tz(company, settings)
    if payment["kind"] == "upgrade":
        _apply_upgrade(db, now, settings, payment, cb, sub, company, tz)
    else:
        _apply_period(db, now, settings, payment, cb, sub, company, tz)
    if payment["status"] in (SUPERSEDED, ABANDONED):
        _anomaly(db, now, settings, "replaced_checkout_paid", cb, payment,
                 "A checkout that a newer one had replaced was paid. It was applied because nothing else had "
                 "paid this period; watch for the newer one being paid too.")
    return "applied"


def _not_applicable(sub: dict, payment: dict, now: datetime) -> tuple[str, str, str] | None:
    """Why this payment must not change the subscription, if it must not: (anomaly kind, flag, detail).
    A payment applies only to the subscription as it was when its checkout began."""
    if payment["kind"] == "renewal" and sub.get("cancel_at_period_end"):
        # A payment never undoes a cancellation the owner asked for; only resuming does.
        return ("paid_after_cancel", "paid after the owner canceled: possible unwanted charge",
                "A renewal was paid for a subscription its owner had canceled.")
    early = sub["current_period_end"] is not None and now < clock.parse(sub["current_period_end"])
    if payment["kind"] == "renewal" and (payment["plan"] != (sub.get("scheduled_plan") or sub["plan"])
                                         or (early and payment["plan"] != sub["plan"])):
        # The owner changed plans after this renewal's checkout began: what it bought is not what
        # the subscription renews at any more, and the owner's later choice wins. Nor may a
        # scheduled change paid early switch plans while the paid month still runs.
        return ("stale_renewal", "renewal for a plan the subscription no longer renews at: not applied",
                "A renewal was paid for a plan the owner has since changed away from (an upgrade or a "
                "scheduled change after the renewal's checkout began).")
    if sub["current_period_end"] != payment["base_period_end"]:
        return ("second_success", "possible double payment: this period was already paid",
                "A payment arrived for a period that was already paid or has changed since the checkout began "
                "(two tabs, a replaced checkout, a renewal and a pay link).")
    if payment["kind"] == "upgrade" and (sub["status"] != subscriptions.ACTIVE or sub["plan"] == payment["plan"]
                                         or (payment.get("base_plan") and sub["plan"] != payment["base_plan"])
                                         or now >= clock.parse(sub["current_period_end"])):
        # Two upgrade tabs: only the quote made from the plan the customer is on still holds.
        return ("stale_upgrade", "upgrade quoted from another plan or period: not applied",
                "An upgrade was paid whose quote was made from a plan or period the subscription is no longer "
                "on (two upgrade tabs, a plan change since, or the period it upgrades has ended).")
    return None


def _apply_period(db, now, settings, payment, cb, sub, company, tz) -> None:
    """A subscription or renewal payment: one more calendar month, an invoice, a receipt."""
    plan = plans.get(db, payment["plan"])
    previous_plan = sub["plan"]
    reason = (f"renewed: {plan.name} paid" if payment["kind"] == "renewal"
              else f"subscribed to {plan.name}: payment received")
    sub, start, end = subscriptions.activate(db, now, sub, plan.code, tz, reason)
    # The line names the period granted now, not the one guessed when the checkout opened.
    description = line_description(plan, start, end, tz)
    payment = _succeeded(db, now, payment, cb, start, end, description=description)
    invoice = invoices.issue(db, now, settings, company=company, payment=payment, buyer_email=payment["email"],
                             lines=[(description, payment["amount"], 1)], period_start=start, period_end=end)
    events.record(db, now, "payment.succeeded", f"Payment of {plan.name} received; invoice {invoice['number']}",
                  company_id=company["id"], actor="paytr", merchant_oid=payment["merchant_oid"],
                  amount=payment["amount"], paid=cb.total_amount, invoice=invoice["number"])
    mail.enqueue(db, now, settings, template="payment_succeeded", to=payment["email"],
                 dedupe_key=f"payment-succeeded:{payment['merchant_oid']}", company_id=company["id"],
                 context={"company": company["name"], "plan_name": plan.name, "amount": payment["amount"],
                          "currency": payment["currency"], "period_start": payment["period_start"],
                          "period_end": payment["period_end"], "invoice_number": invoice["number"], "tz": tz.key,
                          "renewal": payment["kind"] == "renewal", "automatic": payment["method"] == "recurring",
                          "previous_plan_name": plans.get(db, previous_plan).name if previous_plan != plan.code else None,
                          "invoice_url": settings.url(f"/billing/invoices/{invoice['number']}"),
                          # The sender renders and attaches the PDF when it sends: never in this transaction.
                          "attach_invoice": invoice["number"]})


def _apply_upgrade(db, now, settings, payment, cb, sub, company, tz) -> None:
    """The prorated difference is paid: the new plan starts now, the period stays."""
    payment = _succeeded(db, now, payment, cb, now, clock.parse(sub["current_period_end"]))
    invoice = invoices.issue(db, now, settings, company=company, payment=payment, buyer_email=payment["email"],
                             lines=[(payment["description"], payment["amount"], 1)], period_start=now,
                             period_end=clock.parse(sub["current_period_end"]))
    events.record(db, now, "payment.succeeded", f"Upgrade paid; invoice {invoice['number']}",
                  company_id=company["id"], actor="paytr", merchant_oid=payment["merchant_oid"],
                  amount=payment["amount"], invoice=invoice["number"])
    changes.switch_plan_now(db, now, settings, sub, payment["plan"],
                            f"upgraded to {plans.get(db, payment['plan']).name}: prorated difference paid",
                            actor="paytr", charged=payment["amount"], invoice_number=invoice["number"])


def _succeeded(db, now, payment, cb, start, end, **also) -> dict:
    replaced = payment["status"] in (SUPERSEDED, ABANDONED)
    return _set(db, now, payment, status=SUCCEEDED, paid_amount=cb.total_amount, period_start=start, period_end=end,
                decided_at=now, reconcile_at=None,
                flag="paid after a newer checkout replaced it: possible double payment" if replaced else None, **also)


def _save_card(db, now, payment, utoken: str) -> None:
    """PayTR stored the card with this payment: it renews the subscription from now on."""
    cards.saved_with_payment(db, now, payment, utoken)


def _failed(db, now, settings, payment, cb) -> str:
    code, message = cb.get("failed_reason_code"), cb.get("failed_reason_msg") or "The payment was declined."
    _set(db, now, payment, status=FAILED, failed_reason_code=code[:20], failed_reason_msg=message[:500],
         decided_at=now, reconcile_at=None)
    events.record(db, now, "payment.failed", f"Payment failed: {message}", company_id=payment["company_id"],
                  actor="paytr", merchant_oid=payment["merchant_oid"], reason_code=code)
    if payment["method"] == "recurring" and payment["kind"] == "renewal":
        _renewal_charge_failed(db, now, settings, payment, message, code)
    elif payment["status"] == PENDING:  # a replaced checkout failing is the customer moving on
        _email_failure(db, now, settings, payment, message, code)
    return "failed"


def _renewal_charge_failed(db, now, settings, payment, message, code=None) -> None:
    """Dunning: the first failure makes the subscription past due; each failure emails a pay link."""
    sub = subscriptions.for_company(db, payment["company_id"])
    if sub["current_period_end"] != payment["base_period_end"]:
        return  # the period was paid some other way meanwhile
    if sub["status"] == subscriptions.ACTIVE:
        sub = subscriptions.transition(db, now, sub, subscriptions.PAST_DUE, f"renewal failed: {message}",
                                       actor="paytr", past_due_since=sub["current_period_end"], past_due_at=now,
                                       next_action_at=now)
    elif sub["status"] != subscriptions.PAST_DUE:
        return
    company = accounts.company(db, payment["company_id"])
    owner = one(db, "SELECT * FROM users WHERE company_id = ? AND role = 'owner' ORDER BY id LIMIT 1",
                [company["id"]])
    if owner is None:
        return
    plan = plans.get(db, payment["plan"])
    step = payment["attempt"] or 0
    mail.enqueue(db, now, settings, template="renewal_failed", to=owner["email"],
                 dedupe_key=f"renewal-failed:{company['id']}:{sub['current_period_end']}:{step}",
                 company_id=company["id"],
                 context={"name": owner["name"], "company": company["name"], "plan_name": plan.name,
                          "next_plan_name": plan.name, "price": payment["amount"], "currency": payment["currency"],
                          "period_end": sub["current_period_end"], "grace_days": settings.grace_days,
                          "tz": _tz(company, settings).key, "step": step, "card": True, "reason": message,
                          "reason_code": code,  # payments.failure_reason(reason_code): our sentence
                          "pay_url": settings.url("/billing/renew"), "dashboard_url": settings.url("/billing/")})


def _mismatches(settings: Settings, payment: dict, cb: protocol.Callback) -> list[str]:
    problems = []
    if cb.total_amount < payment["amount"]:
        problems.append(f"PayTR collected {cb.total_amount} but the order was {payment['amount']} (minor units)")
    currency = cb.get("currency")
    if currency and protocol.PAYTR_TO_CURRENCY.get(currency.upper()) != payment["currency"]:
        problems.append(f"currency {currency} but the order was in {payment['currency']}")
    test_callback = cb.get("test_mode", "0") == "1"
    if test_callback and not settings.paytr_test_mode:
        problems.append("a test-mode payment reached the live store")
    elif test_callback != bool(payment["test_mode"]):
        problems.append("test mode differs from the order's")
    return problems


def _set(db, now, payment, **values) -> dict:
    values["updated_at"] = now
    stored = {k: clock.iso(v) if isinstance(v, datetime) else v for k, v in values.items()}
    db.conn.execute(f"UPDATE payments SET {', '.join(f'{k} = ?' for k in stored)} WHERE id = ?",
                    [*stored.values(), payment["id"]])
    return {**payment, **stored}


def _anomaly(db, now, settings, kind, cb, payment, detail) -> str:
    cursor = db.conn.execute(
        """INSERT INTO anomalies (created_at, kind, merchant_oid, payment_id, company_id, detail)
           VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, merchant_oid) DO NOTHING""",
        [clock.iso(now), kind, cb.merchant_oid, payment and payment["id"], payment and payment["company_id"],
         detail])
    if cursor.rowcount:  # alert once per anomaly, however often PayTR repeats the callback
        log.warning("payment anomaly %s for %s: %s", kind, cb.merchant_oid, detail)
        events.record(db, now, f"anomaly.{kind}", detail, company_id=payment and payment["company_id"],
                      actor="paytr", merchant_oid=cb.merchant_oid)
        mail.alert_staff(db, now, settings, dedupe_key=f"anomaly:{cursor.lastrowid}",
                         title=f"Payment needs a look: {kind.replace('_', ' ')} ({cb.merchant_oid})",
                         body=f"{detail}\n\nPayTR said: status={cb.status}, total_amount={cb.total_amount}, "
                              f"merchant_oid={cb.merchant_oid}.",
                         company_id=payment and payment["company_id"])
    return "anomaly"


def _keep_raw(db, now, cb, remote_addr, outcome) -> None:
    db.conn.execute("""INSERT INTO callbacks (received_at, merchant_oid, status, total_amount, fields, remote_addr, outcome)
                  VALUES (?, ?, ?, ?, ?, ?, ?)""",
               [clock.iso(now), cb.merchant_oid, cb.status, cb.total_amount,
                json.dumps(cb.fields, sort_keys=True, ensure_ascii=False), remote_addr, outcome])


def _email_failure(db, now, settings, payment, message, code=None) -> None:
    company = accounts.company(db, payment["company_id"])
    plan = plans.get(db, payment["plan"])
    mail.enqueue(db, now, settings, template="payment_failed", to=payment["email"],
                 dedupe_key=f"payment-failed:{payment['merchant_oid']}", company_id=company["id"],
                 context={"company": company["name"], "plan_name": plan.name, "amount": payment["amount"],
                          "currency": payment["currency"], "reason": message,
                          "reason_code": code,  # payments.failure_reason(reason_code): our sentence
                          "retry_url": settings.url(f"/billing/payment/fail?oid={payment['merchant_oid']}")})


def _tz(company: dict, settings: Settings) -> ZoneInfo:
    return ZoneInfo(company.get("timezone") or settings.timezone)
