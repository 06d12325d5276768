"""Refunds that staff make through PayTR, and settling payment anomalies.

A refund is a row first (`pending`, with its own `reference_no`), then a call to
PayTR outside any transaction, then its outcome. PayTR does not deduplicate
refunds, so nothing here ever sends the same refund twice:

- the staff form carries a one-time key: a double submit finds the first refund;
- what is pending or unknown counts as spent, so two staff members cannot refund
  more than was paid between them;
- when PayTR does not answer in time the refund is `unknown`, not failed: the
  tick asks PayTR's status query (which lists a payment's refunds with their
  `reference_no`) before anyone may try again.

A refund returns money; it does not change the subscription (cancel it
separately) and it does not alter the issued invoice: it issues a credit note
against it (billing/credit_notes.py) in the transaction that records it as made.
"""

from __future__ import annotations

import secrets
from collections import Counter
from datetime import datetime, timedelta

from sqlite_utils import Database

from billing import clock, credit_notes, events, mail, money, payments
from billing.accounts import FormError
from billing.db import one, rows, scalar, write
from billing.i18n import gettext as _, lazy_gettext
from billing.settings import Settings
from billing.text import UnsafeText, clean as clean_text

PENDING, SUCCEEDED, FAILED, UNKNOWN = "pending", "succeeded", "failed", "unknown"
SPENT = (PENDING, SUCCEEDED, UNKNOWN)  # money that is, or may be, on its way back
STATUS_LABELS = {PENDING: lazy_gettext("Sending to PayTR"), SUCCEEDED: lazy_gettext("Refunded"),
                 FAILED: lazy_gettext("Refused by PayTR"), UNKNOWN: lazy_gettext("Checking with PayTR")}
# What we record about a refund's outcome (refunds.message) is stored in English, the staff's
# record; these are shown in the reader's language. PayTR's own reasons are shown as PayTR sent them.
ACCEPTED = "PayTR accepted the refund."
LISTED = "PayTR's status query lists this refund."
NO_RECORD = "PayTR has no record of this refund, so no money was returned. You can refund again."
SAME_AMOUNT = "PayTR's status query shows a refund of this amount."
NOT_SHOWN = "PayTR's status query does not show this refund, so no money was returned."
MESSAGES = {
    ACCEPTED: lazy_gettext("PayTR accepted the refund."),
    LISTED: lazy_gettext("PayTR's status query lists this refund."),
    NO_RECORD: lazy_gettext("PayTR has no record of this refund, so no money was returned. You can refund again."),
    SAME_AMOUNT: lazy_gettext("PayTR's status query shows a refund of this amount."),
    NOT_SHOWN: lazy_gettext("PayTR's status query does not show this refund, so no money was returned."),
}
# The kinds of payment anomaly (billing/payments.py records them, with an English detail for the record).
ANOMALY_LABELS = {
    "unknown_order": lazy_gettext("Unknown order"),
    "success_after_failure": lazy_gettext("Success after failure"),
    "mismatch": lazy_gettext("Mismatch"),
    "paid_after_cancel": lazy_gettext("Paid after cancel"),
    "stale_renewal": lazy_gettext("Stale renewal"),
    "second_success": lazy_gettext("Second success"),
    "stale_upgrade": lazy_gettext("Stale upgrade"),
    "replaced_checkout_paid": lazy_gettext("Replaced checkout paid"),
}
ANOMALY_EXPLANATIONS = {
    "unknown_order": lazy_gettext("PayTR reported a payment for an order we never created."),
    "success_after_failure": lazy_gettext(
        "PayTR reported a success for an order it had reported as failed. The money is recorded; the "
        "subscription was not changed."),
    "mismatch": lazy_gettext(
        "The payment does not match our order. The money is recorded; the subscription was not changed."),
    "paid_after_cancel": lazy_gettext(
        "A renewal was paid for a subscription its owner had canceled. The money is recorded; the subscription "
        "was not changed. Consider a refund."),
    "stale_renewal": lazy_gettext(
        "A renewal was paid for a plan the owner has since changed away from. The money is recorded; the "
        "subscription was not changed. Consider a refund."),
    "second_success": lazy_gettext(
        "A payment arrived for a period that was already paid or has changed since the checkout began. The "
        "money is recorded; the subscription was not changed. Consider a refund."),
    "stale_upgrade": lazy_gettext(
        "An upgrade was paid whose quote was made from a plan or period the subscription is no longer on. The "
        "money is recorded; the subscription was not changed. Consider a refund."),
    "replaced_checkout_paid": lazy_gettext(
        "A checkout that a newer one had replaced was paid. It was applied because nothing else had paid this "
        "period; watch for the newer one being paid too."),
}
CHECK_AFTER = timedelta(minutes=5)  # long enough for a refund PayTR was still processing to show up
CHECK_RETRY = timedelta(minutes=10)
REASON_MAX = 500


def message_text(message: str | None) -> str:
    """A refund's recorded outcome in the reader's language (PayTR's own words stay as they are)."""
    return str(MESSAGES.get(message or "", message or ""))


def anomaly_label(kind: str) -> str:
    return str(ANOMALY_LABELS.get(kind, kind.replace("_", " ").capitalize()))


def anomaly_explanation(kind: str) -> str:
    return str(ANOMALY_EXPLANATIONS.get(kind, ""))


def new_request_key() -> str:
    return secrets.token_urlsafe(16)


def refundable(db: Database, payment: dict) -> int:
    """What can still be refunded: what PayTR collected, less refunds made or under way."""
    if payment["status"] not in (payments.SUCCEEDED, payments.NEEDS_REVIEW) or not payment["paid_amount"]:
        return 0
    spent = scalar(db, f"SELECT coalesce(sum(amount), 0) FROM refunds WHERE payment_id = ? "
                       f"AND status IN ({', '.join('?' * len(SPENT))})", [payment["id"], *SPENT])
    return max(0, payment["paid_amount"] - spent)


def one_refund(db: Database, refund_id: int) -> dict | None:
    return one(db, "SELECT * FROM refunds WHERE id = ?", [refund_id])


def for_payment(db: Database, payment_id: int) -> list[dict]:
    return rows(db, "SELECT * FROM refunds WHERE payment_id = ? ORDER BY id", [payment_id])


def start(db: Database, now: datetime, *, payment_id: int, amount: str, reason: str, request_key: str,
          actor: str) -> tuple[dict, bool]:
    """Record a refund about to be sent to PayTR: (the refund, whether this call created it).
    Only its creator sends it; a resubmitted form (same `request_key`), even one arriving while
    the first is still waiting for PayTR, gets the existing refund and `False`. FormError
    (nothing written) for bad input."""
    errors = {}
    try:
        reason = clean_text(reason)
    except UnsafeText as exc:
        reason, errors["reason"] = "", str(exc)
    try:
        minor = money.parse(amount or "")
    except money.MoneyError:
        minor = None
        errors["amount"] = _("Enter the amount to refund, like 29.00.")
    if not reason:
        errors.setdefault("reason", _("Say why: the customer sees it in the refund email, and it stays on the record."))
    elif len(reason) > REASON_MAX:
        errors["reason"] = _("Keep it under %(max)d characters.", max=REASON_MAX)
    if not request_key or len(request_key) > 64:
        raise FormError({"form": _("This form has expired; open it again.")})
    with write(db):
        again = one(db, "SELECT * FROM refunds WHERE request_key = ?", [request_key])
        if again is not None:
            return again, False
        payment = one(db, "SELECT * FROM payments WHERE id = ?", [payment_id])
        if payment is None:
            raise LookupError(payment_id)
        available = refundable(db, payment)
        if minor is not None and not 0 < minor <= available:
            errors["amount"] = (_("At most %(amount)s can be refunded.",
                                  amount=money.format(available, payment["currency"]))
                                if available else _("Nothing is left to refund on this payment."))
        if errors:  # in the form's order, so the cursor lands on the first field to fix
            raise FormError({name: errors[name] for name in ("amount", "reason") if name in errors})
        reference_no = f"RF{payment['id']}X{secrets.token_hex(6).upper()}"  # PayTR: alphanumeric, ≤ 64
        refund_id = db.conn.execute(
            """INSERT INTO refunds (payment_id, company_id, amount, currency, reason, reference_no, request_key,
                   status, requested_by, check_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            # check_at: should this process die before PayTR's answer is recorded, the tick asks PayTR
            [payment["id"], payment["company_id"], minor, payment["currency"], reason, reference_no, request_key,
             PENDING, actor, clock.iso(now + CHECK_AFTER), clock.iso(now)]).lastrowid
        events.record(db, now, "refund.requested",
                      f"Refund of {money.format(minor, payment['currency'])} requested: {reason}",
                      company_id=payment["company_id"], actor=actor, merchant_oid=payment["merchant_oid"],
                      amount=minor, reference_no=reference_no)
        return one(db, "SELECT * FROM refunds WHERE id = ?", [refund_id]), True


def settle(db: Database, now: datetime, settings: Settings, refund_id: int, *, ok: bool, message: str) -> dict:
    """PayTR's answer (or its status query) decides a refund once; later answers change nothing."""
    with write(db):
        refund = one(db, "SELECT * FROM refunds WHERE id = ?", [refund_id])
        if refund["status"] in (SUCCEEDED, FAILED):
            return refund
        payment = one(db, "SELECT * FROM payments WHERE id = ?", [refund["payment_id"]])
        status = SUCCEEDED if ok else FAILED
        db.conn.execute("UPDATE refunds SET status = ?, message = ?, decided_at = ?, check_at = NULL WHERE id = ?",
                        [status, message[:500], clock.iso(now), refund_id])
        amount = money.format(refund["amount"], refund["currency"])
        if ok:
            events.record(db, now, "refund.succeeded", f"Refunded {amount} through PayTR",
                          company_id=refund["company_id"], actor="paytr", merchant_oid=payment["merchant_oid"],
                          amount=refund["amount"], reference_no=refund["reference_no"])
            # The credit note in this same transaction: a refund that is not recorded takes no number.
            note = credit_notes.issue(db, now, settings, refund)
            company = one(db, "SELECT name FROM companies WHERE id = ?", [refund["company_id"]])
            mail.enqueue(db, now, settings, template="refund_issued", to=payment["email"],
                         dedupe_key=f"refund:{refund_id}", company_id=refund["company_id"],
                         context=email_context(settings, refund, payment, company["name"] if company else "",
                                               note["number"] if note else None))
            if refundable(db, payment) == 0:
                _resolve_for_payment(db, now, payment["id"], refund["requested_by"],
                                     f"Refunded in full ({amount}, {refund['reference_no']}).")
        else:
            events.record(db, now, "refund.failed", f"Refund of {amount} did not go through: {message}",
                          company_id=refund["company_id"], actor="paytr", merchant_oid=payment["merchant_oid"],
                          reference_no=refund["reference_no"])
        return one(db, "SELECT * FROM refunds WHERE id = ?", [refund_id])


def email_context(settings: Settings, refund: dict, payment: dict, company_name: str,
                  credit_note: str | None) -> dict:
    """What the refund email says; the staff form's confirmation step shows it before anything is sent."""
    return {"company": company_name, "amount": refund["amount"], "currency": refund["currency"],
            "paid": payment["paid_amount"], "paid_at": payment["decided_at"], "description": payment["description"] or "",
            "reason": refund["reason"], "tz": settings.tz.key,
            # its number: the email names it, and the sender attaches its PDF
            "credit_note": credit_note}


def unknown(db: Database, now: datetime, refund_id: int, message: str) -> dict:
    """PayTR did not answer: the refund may or may not have happened. Ask before anything else."""
    with write(db):
        db.conn.execute("UPDATE refunds SET status = ?, message = ?, check_at = ? WHERE id = ? AND status = ?",
                        [UNKNOWN, message[:500], clock.iso(now + CHECK_AFTER), refund_id, PENDING])
        refund = one(db, "SELECT * FROM refunds WHERE id = ?", [refund_id])
        events.record(db, now, "refund.unknown", f"PayTR did not answer the refund of "
                      f"{money.format(refund['amount'], refund['currency'])}; its status query will tell",
                      company_id=refund["company_id"], reference_no=refund["reference_no"])
        return refund


def claim_checks(db: Database, now: datetime, limit: int = 50) -> list[dict]:
    """Refunds whose outcome PayTR's status query should tell now (leased, like every job)."""
    with write(db):
        return rows(db, """UPDATE refunds SET check_at = ?
                           WHERE id IN (SELECT id FROM refunds WHERE check_at <= ? ORDER BY check_at LIMIT ?)
                           RETURNING *, (SELECT merchant_oid FROM payments WHERE id = payment_id) AS merchant_oid""",
                    [clock.iso(now + CHECK_RETRY), clock.iso(now), limit])


def settle_from_status(db: Database, now: datetime, settings: Settings, refund_id: int,
                       answer: dict) -> tuple[bool, str] | None:
    """Read PayTR's status answer and settle the refund in ONE write: refunds of one payment are
    settled one at a time against what is already recorded, so two checks holding the same answer
    never both claim the one return PayTR lists. None (nothing changed) if the answer cannot tell."""
    with write(db):
        refund = one(db, "SELECT * FROM refunds WHERE id = ?", [refund_id])
        if refund is None or refund["status"] in (SUCCEEDED, FAILED):
            return None
        outcome = outcome_from_status(db, refund, answer)
        if outcome is not None:
            settle(db, now, settings, refund_id, ok=outcome[0], message=outcome[1])
        return outcome


def outcome_from_status(db: Database, refund: dict, answer: dict) -> tuple[bool, str] | None:
    """Read PayTR's status answer for the refund's payment: (made?, why), or None if it cannot tell."""
    returns = answer.get("returns")
    if answer.get("status") != "success" or not isinstance(returns, list):
        return None  # only a readable list of the payment's refunds can tell
    if any(isinstance(r, dict) and r.get("reference_no") == refund["reference_no"] for r in returns):
        return True, LISTED
    if any(isinstance(r, dict) and r.get("reference_no") for r in returns) or not returns:
        return False, NO_RECORD
    # Refunds listed without reference numbers: match amounts. Each return PayTR lists accounts
    # for at most one of our refunds: those already recorded as made take theirs first, and this
    # one is made only if a return of exactly its amount is left. (Comparing sums would credit a
    # 0.01 refund with a 28.99 return and leave the 28.99 one "not made".)
    try:
        listed = Counter(money.parse(str(r.get("return_amount", "0"))) for r in returns if isinstance(r, dict))
    except money.MoneyError:
        return None
    for (made,) in db.conn.execute("SELECT amount FROM refunds WHERE payment_id = ? AND status = ?",
                                   [refund["payment_id"], SUCCEEDED]):
        if listed[made]:
            listed[made] -= 1
    if listed[refund["amount"]]:
        return True, SAME_AMOUNT
    return False, NOT_SHOWN


# --- anomalies -----------------------------------------------------------------------------


def resolve_anomaly(db: Database, now: datetime, anomaly_id: int, note: str, actor: str) -> dict:
    """Staff settle an anomaly with a note saying what they did. FormError for an empty note."""
    try:
        note = clean_text(note)
    except UnsafeText as exc:
        raise FormError({"note": str(exc)}) from None
    if not note:
        raise FormError({"note": _("Say what was done, for whoever looks at this payment next.")})
    if len(note) > REASON_MAX:
        raise FormError({"note": _("Keep it under %(max)d characters.", max=REASON_MAX)})
    with write(db):
        anomaly = one(db, "SELECT * FROM anomalies WHERE id = ?", [anomaly_id])
        if anomaly is None:
            raise LookupError(anomaly_id)
        if anomaly["resolved_at"] is None:
            _resolve(db, now, anomaly, actor, note)
        return one(db, "SELECT * FROM anomalies WHERE id = ?", [anomaly_id])


def _resolve_for_payment(db, now, payment_id: int, actor: str, note: str) -> None:
    for anomaly in rows(db, "SELECT * FROM anomalies WHERE payment_id = ? AND resolved_at IS NULL", [payment_id]):
        _resolve(db, now, anomaly, actor, note)


def _resolve(db, now, anomaly: dict, actor: str, note: str) -> None:
    db.conn.execute("UPDATE anomalies SET resolved_at = ?, resolved_by = ?, resolution = ? WHERE id = ?",
                    [clock.iso(now), actor, note, anomaly["id"]])
    events.record(db, now, "anomaly.resolved", f"Resolved ({anomaly['kind'].replace('_', ' ')}): {note}",
                  company_id=anomaly["company_id"], actor=actor, merchant_oid=anomaly["merchant_oid"])
