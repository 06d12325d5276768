"""A company's billing timeline as people read it: one sentence per happening, in the reader's language.

The history lives in five places (events, payments, invoices and credit notes, refunds' events, the
outbox), and one happening often leaves a trace in several: a renewal writes `renewal.charge_started`,
a payment row, `payment.succeeded` and `subscription.active` in the same transaction. Read raw, that
is four lines saying one thing. Here each happening becomes one `Entry`:

- a payment row gathers its own events (by merchant_oid) and the subscription change decided in the
  same instant, and says what it did: "Your Starter plan renewed: $29.00 paid with Visa ending 4358";
- a refund's events (requested, then succeeded or failed) fold by PayTR's reference into one line;
- the same email to the same address within minutes (retries, a copy sent again) shows once,
  "sent 3 times";
- the rest are told from their kind and data. Raw kinds and ids stay in `tech`, which only the
  staff view shows (behind a <details>), with PayTR's own message.

`page()` builds the whole view model in one pass over rows read once (a timeline has 200 entries
and the staff customer page must stay fast: nothing here queries per entry). It is plain data, so
the folding, the sentences, the day groups and the filter are tested without a browser.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from babel.dates import format_date
from sqlite_utils import Database

from billing import cards, clock, i18n, mail, money, payments, plans
from billing.db import rows
from billing.i18n import gettext as _, lazy_gettext, ngettext, pgettext

# The filter: (GET value, label). "" is everything.
PAYMENTS, INVOICES, EMAILS, PLAN, ACCOUNT = "payments", "invoices", "emails", "plan", "account"
FILTERS = (("", lazy_gettext("All")), (PAYMENTS, lazy_gettext("Payments")), (INVOICES, lazy_gettext("Invoices")),
           (EMAILS, lazy_gettext("Emails")), (PLAN, lazy_gettext("Plan changes")), (ACCOUNT, lazy_gettext("Account")))
EMPTY = {"": lazy_gettext("Nothing has happened yet."), PAYMENTS: lazy_gettext("No payments yet."),
         INVOICES: lazy_gettext("No invoices or credit notes yet."), EMAILS: lazy_gettext("No emails yet."),
         PLAN: lazy_gettext("No plan changes yet."), ACCOUNT: lazy_gettext("No account changes yet.")}

# The same email to the same address this close together is one happening (a retry, a copy sent again).
EMAIL_FOLD_WINDOW = timedelta(minutes=10)


def email_status_label(status: str) -> str:
    """An email's status as a word beside it. With a context: a bare "Sent" is also a column's heading
    (the date it was sent), which Turkish says differently."""
    if status == "pending":
        return pgettext("email status", "Waiting")
    if status == "sent":
        return pgettext("email status", "Sent")
    if status == "failed":
        return pgettext("email status", "Failed")
    return status


@dataclass
class Entry:
    at: str                                   # ISO UTC, when it happened (the latest trace of it)
    groups: frozenset                         # which filters show it
    text: str                                 # the sentence, in the reader's language
    link: str | None = None                   # an invoice or credit note (the staff view adds ".pdf")
    badge: str | None = None                  # a payment's or an email's status, as a word beside the sentence
    badge_label: str | None = None
    notes: list[str] = field(default_factory=list)   # related happenings folded in, as sentences
    tech: list[tuple[str, str]] = field(default_factory=list)  # staff only: raw kinds, ids, PayTR's words
    outbox_id: int | None = None              # the latest email of a folded group (read it, send it again)
    times: int = 1                            # how many emails were folded into this one
    staff_only: bool = False                  # internal bookkeeping a customer has no use for
    order: tuple = ()

    def note_tech(self, label: str, value) -> None:
        if value not in (None, "") and (label, str(value)) not in self.tech:
            self.tech.append((label, str(value)))


def _data(event: dict) -> dict:
    try:
        data = json.loads(event.get("data") or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _by_staff(event: dict) -> bool:
    return (event.get("actor") or "").startswith("staff:")


# --- sentences -------------------------------------------------------------------------------


def payment_text(payment: dict, plan_name: str, card: str | None) -> str:
    """What a payment did, told from its kind and outcome."""
    amount = money.format(payment["amount"], payment["currency"])
    kind, status = payment["kind"], payment["status"]
    if status == payments.SUCCEEDED:
        if kind == "renewal":
            return (_("Your %(plan)s plan renewed: %(amount)s paid with %(card)s", plan=plan_name, amount=amount,
                      card=card) if card else _("Your %(plan)s plan renewed: %(amount)s paid", plan=plan_name,
                                                 amount=amount))
        if kind == "upgrade":
            return (_("You upgraded to %(plan)s: %(amount)s paid with %(card)s", plan=plan_name, amount=amount,
                      card=card) if card else _("You upgraded to %(plan)s: %(amount)s paid", plan=plan_name,
                                                 amount=amount))
        return (_("You subscribed to the %(plan)s plan: %(amount)s paid with %(card)s", plan=plan_name,
                  amount=amount, card=card) if card else
                _("You subscribed to the %(plan)s plan: %(amount)s paid", plan=plan_name, amount=amount))
    if status == payments.FAILED:
        reason = payments.failure_reason(payment)
        if kind == "renewal":
            return _("The %(amount)s renewal of your %(plan)s plan did not go through. %(reason)s",
                     amount=amount, plan=plan_name, reason=reason)
        return _("A payment of %(amount)s for %(plan)s did not go through. %(reason)s",
                 amount=amount, plan=plan_name, reason=reason)
    if status == payments.PENDING:
        return _("A payment of %(amount)s for %(plan)s is waiting for PayTR", amount=amount, plan=plan_name)
    if status == payments.SUPERSEDED:
        return _("A checkout of %(amount)s for %(plan)s was replaced by a newer one", amount=amount, plan=plan_name)
    if status == payments.NEEDS_REVIEW:
        return _("A payment of %(amount)s for %(plan)s is being checked by our team", amount=amount, plan=plan_name)
    return _("A checkout of %(amount)s for %(plan)s closed without a payment", amount=amount, plan=plan_name)


def email_text(row: dict, subject: str, viewer_email: str | None) -> str:
    """'We emailed you: “Payment received”' — the subject as it was sent, in the recipient's language."""
    if not row["to_addr"]:  # erased on request: who it went to is gone, what it was stays
        return _("We sent an email: “%(subject)s”", subject=subject)
    to_reader = bool(viewer_email) and row["to_addr"].casefold() == viewer_email.casefold()
    if row["status"] == "pending":
        return (_("An email to you is on its way: “%(subject)s”", subject=subject) if to_reader else
                _("An email to %(address)s is on its way: “%(subject)s”", address=row["to_addr"], subject=subject))
    if row["status"] == "failed":
        return (_("An email to you could not be delivered: “%(subject)s”", subject=subject) if to_reader else
                _("An email to %(address)s could not be delivered: “%(subject)s”", address=row["to_addr"],
                  subject=subject))
    return (_("We emailed you: “%(subject)s”", subject=subject) if to_reader else
            _("We emailed %(address)s: “%(subject)s”", address=row["to_addr"], subject=subject))


def subscription_text(event: dict, data: dict, catalog: dict, tz: ZoneInfo | None = None) -> str:
    """A subscription's change of state, from its event."""
    status = event["kind"].split(".", 1)[1]
    plan = catalog.get(data.get("plan") or "")
    previous_plan = catalog.get(data.get("previous_plan") or "")
    staff = _by_staff(event)
    if status == "active" and previous_plan and plan:
        return (_("Our team moved you from %(old)s to %(new)s", old=previous_plan.name, new=plan.name) if staff
                else _("Your plan changed from %(old)s to %(new)s", old=previous_plan.name, new=plan.name))
    if status == "active" and data.get("previous") in ("active", "past_due"):
        return _("Your %(plan)s plan renewed", plan=plan.name) if plan else _("Your subscription renewed")
    if status == "active":
        return _("You subscribed to the %(plan)s plan", plan=plan.name) if plan else _("Your subscription started")
    if status == "past_due":
        return _("The renewal was not paid: your subscription is past due")
    if status == "canceled":
        return _("Our team ended your subscription") if staff else _("Your subscription ended")
    if status == "expired":
        return _("Your free trial ended")
    if status == "trialing":
        ends = data.get("trial_ends_at")
        return (_("Our team extended your free trial to %(date)s", date=_local_date(ends, tz)) if ends
                else _("Our team extended your free trial"))
    if status == "cancel_scheduled":
        return (_("Our team canceled your subscription: it ends with the paid period") if staff
                else _("You canceled: your subscription ends with the paid period"))
    if status == "resumed":
        return _("Your subscription was resumed: it renews as usual")
    if status == "downgrade_scheduled":
        return (_("Your move to %(plan)s is scheduled for the end of the period", plan=plan.name) if plan
                else _("A plan change is scheduled for the end of the period"))
    if status == "downgrade_undone":
        return _("The scheduled plan change was undone")
    if status == "days_granted":
        days = data.get("days") if isinstance(data.get("days"), int) else 0
        return ngettext("Our team added %(num)d free day to your paid period; the renewal moves with it",
                        "Our team added %(num)d free days to your paid period; the renewal moves with it", days)
    if status == "periods_skipped":
        return _("A late renewal: only the period running now was charged")
    if status == "price_changed":
        price, currency = data.get("price"), data.get("currency")
        if isinstance(price, int) and currency:
            return _("Your plan renews at its new price from now on: %(amount)s",
                     amount=money.format(price, currency))
        return _("Your plan renews at its new price from now on")
    return event["message"] or event["kind"]


def _local_date(value, tz: ZoneInfo | None) -> str:
    try:
        moment = clock.parse(value)
    except (TypeError, ValueError):
        return str(value)
    return i18n.date_text(moment.astimezone(tz) if tz else moment)


def event_entry(event: dict, catalog: dict, currencies: dict, tz: ZoneInfo | None = None) -> Entry:
    """One event told on its own (not folded into a payment, refund, credit note or email)."""
    kind, data = event["kind"], _data(event)
    staff = _by_staff(event)
    amount = None
    currency = currencies.get(data.get("merchant_oid")) or data.get("currency")
    if isinstance(data.get("amount"), int) and currency:
        amount = money.format(data["amount"], currency)
    groups, text, staff_only = {ACCOUNT}, None, False

    if kind == "company.registered":
        groups = {ACCOUNT, PLAN}
        try:
            days = (clock.parse(data["trial_ends_at"]) - clock.parse(event["created_at"])).days
        except (KeyError, TypeError, ValueError):
            days = 0
        text = (ngettext("Account opened: your free trial started (%(num)d day)",
                         "Account opened: your free trial started (%(num)d days)", days) if days > 0
                else _("Account opened: your free trial started"))
    elif kind.startswith("subscription."):
        groups, text = {PLAN}, subscription_text(event, data, catalog, tz)
    elif kind == "payment.started":
        groups, text = {PAYMENTS}, (_("Checkout opened for %(amount)s", amount=amount) if amount
                                    else _("Checkout opened"))
    elif kind == "payment.succeeded":
        groups, text = {PAYMENTS}, _("Payment received")
    elif kind == "payment.failed":
        groups, text = {PAYMENTS}, _("A payment did not go through. %(reason)s",
                                     reason=payments.failure_reason(data.get("reason_code")))
    elif kind == "payment.abandoned":
        groups, text = {PAYMENTS}, str(payments.CHECKOUT_REFUSED)
    elif kind == "payment.expired":
        groups, text = {PAYMENTS}, _("A checkout closed without a payment")
    elif kind == "renewal.charge_started":
        groups, text = {PAYMENTS}, _("We started charging your saved card for the renewal")
    elif kind == "card.saved":
        groups, text = {PAYMENTS}, _("Card saved: renewals are charged to it from now on")
    elif kind == "card.chosen":
        groups, text = {PAYMENTS}, _("Renewals are now charged to %(card)s",
                                     card=cards.shown(data.get("card")) or _("Saved card"))
    elif kind == "card.removed":
        groups, text = {PAYMENTS}, _("Saved card removed: %(card)s", card=cards.shown(data.get("card")) or
                                     _("Saved card"))
    elif kind.startswith("refund."):
        groups, text = {PAYMENTS}, refund_text(kind, amount)
    elif kind == "anomaly.resolved":
        groups, text = {PAYMENTS}, _("Our team resolved a payment it was checking")
    elif kind.startswith("anomaly."):
        groups, text = {PAYMENTS}, _("A payment is being checked by our team")
    elif kind == "credit_note.issued":
        groups = {INVOICES}
        text = _("Credit note %(number)s issued against invoice %(invoice)s",
                 number=data.get("credit_note") or "?", invoice=data.get("invoice") or "?")
    elif kind == "credit_note.none":
        groups, staff_only = {INVOICES}, True
        text = _("No credit note for a refund: no invoice, or the invoice is already fully credited")
    elif kind == "email.resent":
        groups, text = {EMAILS}, _("Our team sent an email again")
    elif kind == "staff.upgrade_offered":
        plan = catalog.get(data.get("plan") or "")
        groups = {PLAN}
        text = (_("Our team emailed you a link to upgrade to %(plan)s", plan=plan.name) if plan
                else _("Our team emailed you a link to upgrade"))
    elif kind == "usage.limit_warning":
        groups = {PLAN}
        text = _("Your usage reached %(level)s%% of a plan limit; we emailed the owner", level=data.get("level", "?"))
    elif kind == "usage.over_scheduled_plan":
        groups, text = {PLAN}, _("Your usage no longer fits the scheduled plan; we emailed the owner")
    elif kind == "company.billing_details_updated":
        text = _("Our team updated your billing details") if staff else _("Billing details updated")
    elif kind == "company.erased":
        text = _("Personal data was erased on request")
    elif kind == "customer.updated":
        text = _("Customer details changed through the API")
    elif kind == "team.invited":
        text = _("%(email)s was invited to your team", email=data.get("email") or "?")
    elif kind == "team.joined":
        text = _("A new member joined your team")
    elif kind == "team.removed":
        text = _("A member was removed from your team")
    elif kind == "team.invite_withdrawn":
        text = _("An invitation to your team was withdrawn")
    elif kind == "user.renamed":
        text = _("A member changed their name")
    elif kind == "user.password_reset_requested":
        text = _("A password reset was requested")
    elif kind == "user.password_reset":
        text = _("A password was changed with a reset link")
    elif kind == "user.password_changed":
        text = _("A member changed their password")
    elif kind == "user.email_changed":
        text = _("A member changed their sign-in email address")
    elif kind == "user.email_change_undone":
        text = _("A change of sign-in email address was undone")
    elif kind == "user.two_factor_enabled":
        text = _("Two-factor authentication was turned on for a member")
    elif kind == "user.two_factor_disabled":
        text = _("Two-factor authentication was turned off for a member")
    elif kind == "user.recovery_code_used":
        text = _("A member signed in with a recovery code")
    elif kind == "user.recovery_codes_regenerated":
        text = _("A member made new recovery codes")
    elif kind == "portal.link_created":
        text = _("A billing link was made for your product")
    elif kind == "portal.link_used":
        text = _("Billing was opened from your product")
    else:  # a kind this module does not know yet: its stored words (English) rather than nothing
        text = event["message"] or kind
    entry = Entry(at=event["created_at"], groups=frozenset(groups), text=text, staff_only=staff_only,
                  order=(event["created_at"], 3, event["id"]))
    _event_tech(entry, event, data)
    return entry


def refund_text(kind: str, amount: str | None) -> str:
    if kind == "refund.succeeded":
        return _("%(amount)s refunded to your card", amount=amount) if amount else _("Refunded to your card")
    if kind == "refund.failed":
        return (_("A refund of %(amount)s did not go through", amount=amount) if amount
                else _("A refund did not go through"))
    if kind == "refund.unknown":
        return (_("Waiting for PayTR to confirm a refund of %(amount)s", amount=amount) if amount
                else _("Waiting for PayTR to confirm a refund"))
    return _("Refund of %(amount)s requested", amount=amount) if amount else _("Refund requested")


def _event_tech(entry: Entry, event: dict, data: dict) -> None:
    """The staff's view of one event: its id, kind, actor and stored words (the audit trail's English,
    with a staff member's reason or a skipped span), and what PayTR said."""
    message = event.get("message") or ""
    entry.note_tech(_("Event"), f"#{event['id']} {event['kind']} ({event.get('actor') or 'system'})"
                                + (f": {message}" if message else ""))
    if event["kind"] in ("payment.failed", "payment.abandoned", "payment.expired", "refund.failed") \
            and ": " in message:
        entry.note_tech(_("PayTR's message"), message.partition(": ")[2])


# --- the whole history, folded ----------------------------------------------------------------


@dataclass
class Sources:
    """The rows a timeline is told from, read once."""
    events: list[dict]
    payments: list[dict]
    invoices: list[dict]
    credit_notes: list[dict]
    emails: list[dict]
    catalog: dict


def read(db: Database, company_id: int, limit: int = 200) -> Sources:
    q = "SELECT * FROM {} WHERE company_id = ? ORDER BY id DESC LIMIT ?"
    return Sources(
        events=rows(db, q.format("events"), [company_id, limit]),
        payments=rows(db, q.format("payments"), [company_id, limit]),
        invoices=rows(db, q.format("invoices"), [company_id, limit]),
        credit_notes=rows(db, """SELECT c.id, c.number, c.issued_at, c.total, c.currency, c.refund_id,
                                        i.number AS invoice_number
                                 FROM credit_notes c JOIN invoices i ON i.id = c.invoice_id
                                 WHERE c.company_id = ? ORDER BY c.id DESC LIMIT ?""", [company_id, limit]),
        emails=rows(db, q.format("outbox"), [company_id, limit]),
        catalog={p.code: p for p in plans.all_plans(db, hidden=True, archived=True)},
    )


# Events a payment row tells itself: folded into it (by merchant_oid), kept only as staff detail.
_PAYMENT_KINDS = ("payment.", "renewal.charge_started", "card.saved", "anomaly.")
# A subscription change made by a payment, in the same instant: the payment's sentence says it.
_PAID_CHANGES = {payments.SUCCEEDED: ("subscription.active",), payments.FAILED: ("subscription.past_due",)}


def entries(src: Sources, settings, viewer_email: str | None = None) -> list[Entry]:
    """Every happening once, newest first."""
    catalog = src.catalog
    currencies = {p["merchant_oid"]: p["currency"] for p in src.payments}
    card_of = {i["payment_id"]: i["paid_with"] for i in src.invoices if i.get("paid_with")}
    out: list[Entry] = []

    by_oid: dict[str, Entry] = {}
    paid_rows: dict[str, dict] = {}  # merchant_oid -> its row, to name the card once an event tells it
    by_decision: dict[tuple[str, str], Entry] = {}   # (decided_at, status) -> the payment decided then
    for p in src.payments:
        plan = catalog.get(p["plan"])
        at = p["decided_at"] or p["created_at"]
        entry = Entry(at=at, groups=frozenset({PAYMENTS}),
                      text=payment_text(p, plan.name if plan else p["plan"], cards.shown(card_of.get(p["id"]))),
                      badge=p["status"], badge_label=str(payments.STATUS_LABELS.get(p["status"], p["status"])),
                      order=(at, 2, p["id"]))
        entry.note_tech("merchant_oid", p["merchant_oid"])
        entry.note_tech(_("Payment"), f"#{p['id']} {p['kind']} / {p['method']} / {p['status']}")
        entry.note_tech(_("PayTR's message"), p.get("failed_reason_msg") or p.get("abandon_reason"))
        by_oid[p["merchant_oid"]] = entry
        paid_rows[p["merchant_oid"]] = p
        if p["status"] in _PAID_CHANGES and p["decided_at"]:
            by_decision[(p["decided_at"], p["status"])] = entry
        out.append(entry)

    notes_by_number: dict[str, Entry] = {}
    for i in src.invoices:
        entry = Entry(at=i["issued_at"], groups=frozenset({INVOICES}),
                      text=_("Invoice %(number)s issued: %(total)s", number=i["number"],
                             total=money.format(i["total"], i["currency"])),
                      link=f"/billing/invoices/{i['number']}", order=(i["issued_at"], 1, i["id"]))
        entry.note_tech(_("Invoice"), f"#{i['id']} {i['number']}")
        out.append(entry)
    for c in src.credit_notes:
        entry = Entry(at=c["issued_at"], groups=frozenset({INVOICES}),
                      text=_("Credit note %(number)s issued: %(total)s back on invoice %(invoice)s",
                             number=c["number"], total=money.format(c["total"], c["currency"]),
                             invoice=c["invoice_number"]),
                      link=f"/billing/credit-notes/{c['number']}", order=(c["issued_at"], 1, c["id"]))
        entry.note_tech(_("Credit note"), f"#{c['id']} {c['number']}")
        notes_by_number[c["number"]] = entry
        out.append(entry)

    emails, emails_by_moment = _email_entries(src.emails, settings, viewer_email)
    out.extend(emails)

    refunds: dict[str, list[dict]] = {}
    cards_saved_at: dict[str, tuple[Entry, dict]] = {}  # when a card was saved -> (its payment, the row)
    for e in reversed(src.events):  # oldest first: a refund's events in order, the card saved before chosen
        kind, data = e["kind"], _data(e)
        payment = by_oid.get(data.get("merchant_oid") or "")
        if payment is not None and kind.startswith(_PAYMENT_KINDS) and not kind.startswith("refund."):
            _event_tech(payment, e, data)
            if kind == "card.saved":
                payment.notes.append(_("Card saved: renewals are charged to it from now on"))
                cards_saved_at[e["created_at"]] = (payment, paid_rows[data["merchant_oid"]])
            elif kind.startswith("anomaly.") and kind != "anomaly.resolved":
                payment.notes.append(_("Our team is checking this payment"))
            elif kind == "anomaly.resolved":
                payment.notes.append(_("Our team resolved a payment it was checking"))
            continue
        if kind == "card.chosen" and e["created_at"] in cards_saved_at:  # the card just saved, chosen with it
            payment, row = cards_saved_at[e["created_at"]]
            _event_tech(payment, e, data)
            if row["status"] == payments.SUCCEEDED and data.get("card") and row["id"] not in card_of:
                plan = catalog.get(row["plan"])  # the invoice did not know the card yet: the event names it
                payment.text = payment_text(row, plan.name if plan else row["plan"], cards.shown(data["card"]))
            continue
        decided = next((by_decision.get((e["created_at"], status)) for status, kinds in _PAID_CHANGES.items()
                        if kind in kinds), None)
        if decided is not None:
            decided.groups = decided.groups | {PLAN}
            _event_tech(decided, e, data)
            if kind == "subscription.past_due":
                decided.notes.append(_("Your subscription is past due until the renewal is paid"))
            continue
        if kind.startswith("refund.") and data.get("reference_no"):
            refunds.setdefault(data["reference_no"], []).append(e)
            continue
        if kind == "credit_note.issued" and data.get("credit_note") in notes_by_number:
            _event_tech(notes_by_number[data["credit_note"]], e, data)
            continue
        if kind == "email.resent":
            copy = emails_by_moment.get((data.get("template"), e["created_at"]))
            if copy is not None:
                copy.notes.append(_("Sent again by our team"))
                _event_tech(copy, e, data)
                continue
        out.append(event_entry(e, catalog, currencies, getattr(settings, "tz", None)))

    for reference, found in refunds.items():  # one line per refund, in its latest state
        latest = found[-1]
        entry = Entry(at=latest["created_at"], groups=frozenset({PAYMENTS}),
                      text=refund_text(latest["kind"], _refund_amount(found, currencies)),
                      order=(latest["created_at"], 3, latest["id"]))
        entry.note_tech(_("Refund reference"), reference)
        for e in found:
            _event_tech(entry, e, _data(e))
        out.append(entry)

    out.sort(key=lambda entry: entry.order, reverse=True)
    return out


def _refund_amount(found: list[dict], currencies: dict) -> str | None:
    """The amount a refund's events name (a failure does not), in its payment's currency."""
    for data in map(_data, found):
        currency = currencies.get(data.get("merchant_oid")) or data.get("currency")
        if isinstance(data.get("amount"), int) and currency:
            return money.format(data["amount"], currency)
    return None


def _email_entries(found: list[dict], settings, viewer_email: str | None) -> tuple[list[Entry], dict]:
    """One entry per email, the same message to the same address within EMAIL_FOLD_WINDOW folded.
    -> (entries, {(template, created_at): its entry}), the second to fold a staff "send again" in."""
    out: list[Entry] = []
    last: dict[tuple, Entry] = {}
    moments: dict[tuple, Entry] = {}
    for m in reversed(found):  # oldest first, so a fold keeps the latest copy's status and id
        try:
            subject = mail.rendered(m, settings)["subject"]  # not sent yet: render it to show what it will say
        except Exception:  # a template that does not render shows as its name; the sender reports the error
            subject = m["template"].replace("_", " ")
        subject = subject or m["template"].replace("_", " ")
        at = m["sent_at"] or m["created_at"]
        key = (m["template"], m["to_addr"].casefold(), subject)
        previous = last.get(key)
        if previous is not None and clock.parse(m["created_at"]) - clock.parse(previous.at) <= EMAIL_FOLD_WINDOW:
            previous.times += 1
            previous.at, previous.order = at, (at, 0, m["id"])
            previous.outbox_id = m["id"]
            previous.badge = m["status"]
            previous.badge_label = email_status_label(m["status"])
            previous.text = email_text(m, subject, viewer_email)
            _email_tech(previous, m)
            moments[(m["template"], m["created_at"])] = previous
            continue
        entry = Entry(at=at, groups=frozenset({EMAILS}), text=email_text(m, subject, viewer_email),
                            badge=m["status"], badge_label=email_status_label(m["status"]),
                            outbox_id=m["id"], order=(at, 0, m["id"]))
        _email_tech(entry, m)
        last[key] = moments[(m["template"], m["created_at"])] = entry
        out.append(entry)
    return out, moments


def _email_tech(entry: Entry, m: dict) -> None:
    entry.note_tech(_("Outbox"), f"#{m['id']} {m['template']} / {m['status']} / "
                                 + ngettext("%(num)d attempt", "%(num)d attempts", m.get("attempts") or 0))
    entry.note_tech(_("Last error"), m.get("last_error"))


# --- the page ---------------------------------------------------------------------------------


def chosen_filter(value: str | None) -> str:
    """The GET parameter `show`, or everything for anything else."""
    return value if value in {code for code, _label in FILTERS} else ""


# The weekday helps people find "last Tuesday". Each language's own order (CLDR's full date for
# Turkish), with the day before the month as the app's dates everywhere else (i18n.date_text).
_DAY_PATTERNS = {"en": "EEEE, d MMMM y", "tr": "d MMMM y EEEE"}


@functools.lru_cache(maxsize=1024)
def _day_heading(y: int, m: int, d: int, locale: str) -> str:
    return format_date(date(y, m, d), _DAY_PATTERNS.get(locale, "EEEE, d MMMM y"), locale=locale)


def day_heading(day: date, today: date) -> str:
    if day == today:
        return _("Today")
    if day == today - timedelta(days=1):
        return _("Yesterday")
    return _day_heading(day.year, day.month, day.day, i18n.current())


def page(db: Database, company_id: int, settings, now: datetime, *, show: str | None = None,
         viewer_email: str | None = None, staff_view: bool = False, limit: int = 200) -> dict:
    """The timeline's view model for one company, from rows read once."""
    found = entries(read(db, company_id, limit), settings, viewer_email)
    return view(found, now, settings.tz, show, staff_view=staff_view, limit=limit)


def view(found: list[Entry], now: datetime, tz: ZoneInfo, show: str | None = None, *, staff_view: bool = False,
         limit: int = 200) -> dict:
    """The filter (with counts), and the chosen entries grouped by day in the company's time zone,
    newest first, each with its local time."""
    if not staff_view:
        found = [e for e in found if not e.staff_only]
    show = chosen_filter(show)
    counts = {code: (len(found) if not code else sum(1 for e in found if code in e.groups)) for code, _l in FILTERS}
    chosen = [e for e in found if not show or show in e.groups][:limit]
    today = now.astimezone(tz).date()
    days: list[dict] = []
    for e in chosen:
        local = clock.parse(e.at).astimezone(tz)
        if not days or days[-1]["date"] != local.date():
            days.append({"date": local.date(), "heading": day_heading(local.date(), today), "entries": []})
        days[-1]["entries"].append({"entry": e, "time": f"{local.hour:02d}:{local.minute:02d}"})
    return {"days": days, "show": show, "count": len(chosen),
            "filters": [{"code": code, "label": str(label), "count": counts[code], "current": code == show}
                        for code, label in FILTERS],
            "empty": str(EMPTY[show])}
