"""Customer data requests (KVKK art. 11, GDPR art. 15 and 17): export everything about one
customer, or erase their personal data while keeping what tax law requires.

What stays after an erasure, and why:
- invoices and credit notes, with the buyer details they were issued with: legal documents that
  must be kept for ten years (VUK 253) and are immutable here (triggers refuse any change);
- payments and refunds (amounts, dates, PayTR's order ids), without the payer's email and IP:
  they are what the invoices account for, and what PayTR's reports match against;
- PayTR's raw callbacks (append-only; they carry no personal data) and the staff audit log
  (append-only: it records who acted on the customer and why, this erasure included);
- the company row, renamed "Erased customer #ID", so the documents above keep their owner.

What goes: the people (users, and with them their sessions, reset and invite tokens, recovery
codes, known browsers, email changes), their login attempts, open invitations and portal links;
the company's billing details, external id, usage and saved-card tokens (the cards are deleted
at PayTR first, by the caller: no transaction waits on the network); the bodies, contexts and
addresses of its emails (what was sent when stays as metadata); personal fields of its events
and webhook events, and the answers its webhook deliveries got.

Invariants: nothing is erased while money could still move (a pending payment, a subscription
that is trialing, active or past due: cancel first); the erasure is one transaction with its
event and its audit row; an export writes nothing but its audit row.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlite_utils import Database

from billing import audit, clock, events
from billing.db import one, rows, scalar, write
from billing.i18n import gettext as _

# The subscription states in which money can still move: an erasure waits for a cancellation.
LIVE_STATUSES = ("trialing", "active", "past_due")
# Fields of an event's or a webhook body's data that name or locate a person.
PERSONAL_KEYS = frozenset({"email", "to", "old_email", "new_email", "name", "ip", "user_agent", "card",
                           "removed_by", "phone", "address", "tax_id", "legal_name", "company", "owner",
                           "billing_details", "members", "external_id"})
# Secrets: never exported (a card token is PayTR's key to charge the card; a hash is a password).
USER_SECRETS = ("password_hash", "totp_secret", "totp_last_step")
COMPANY_SECRETS = ("paytr_utoken", "paytr_ctoken")


class DataRequestError(Exception):
    """A request refused: nothing was exported or changed. The message says why and what to do."""


def tombstone(company_id: int) -> str:
    return f"Erased customer #{company_id}"


def is_erased(company: dict) -> bool:
    return company["name"] == tombstone(company["id"])


def _company(db: Database, company_id) -> dict:
    try:
        company_id = int(company_id)
    except (TypeError, ValueError):
        raise LookupError(company_id) from None
    company = one(db, "SELECT * FROM companies WHERE id = ?", [company_id])
    if company is None:
        raise LookupError(company_id)
    return company


def _decoded(row: dict, *fields: str) -> dict:
    for field in fields:
        if isinstance(row.get(field), str):
            try:
                row[field] = json.loads(row[field])
            except ValueError:
                pass
    return row


def collect(db: Database, company_id: int) -> dict:
    """Everything stored about the customer, as JSON-ready data (secrets left out)."""
    company = _company(db, company_id)
    cid = company["id"]
    users = rows(db, "SELECT * FROM users WHERE company_id = ? ORDER BY id", [cid])
    user_ids = [u["id"] for u in users]
    marks = ", ".join("?" * len(user_ids)) or "NULL"
    invoices = rows(db, "SELECT * FROM invoices WHERE company_id = ? ORDER BY id", [cid])
    lines = rows(db, f"""SELECT * FROM invoice_lines WHERE invoice_id IN
                         (SELECT id FROM invoices WHERE company_id = ?) ORDER BY id""", [cid])
    for invoice in invoices:
        invoice["lines"] = [line for line in lines if line["invoice_id"] == invoice["id"]]
    return {
        "company": {k: v for k, v in company.items() if k not in COMPANY_SECRETS},
        "users": [{k: v for k, v in u.items() if k not in USER_SECRETS} | {"two_factor": bool(u["totp_enabled_at"])}
                  for u in users],
        "sessions": rows(db, f"""SELECT user_id, created_at, last_seen_at, expires_at, ip, user_agent FROM sessions
                                 WHERE user_id IN ({marks}) ORDER BY created_at""", user_ids),
        "known_browsers": rows(db, f"""SELECT user_id, first_seen, last_seen, ip, user_agent FROM known_browsers
                                       WHERE user_id IN ({marks}) ORDER BY id""", user_ids),
        "login_attempts": rows(db, f"""SELECT email, ip, succeeded, kind, created_at FROM login_attempts
                                       WHERE email IN (SELECT email FROM users WHERE id IN ({marks}))
                                       ORDER BY id""", user_ids),
        "invites": rows(db, """SELECT email, role, created_at, expires_at, accepted_at, revoked_at FROM invites
                               WHERE company_id = ? ORDER BY id""", [cid]),
        "subscription": one(db, "SELECT * FROM subscriptions WHERE company_id = ?", [cid]),
        "payments": [{k: v for k, v in p.items() if k != "paytr_token"}
                     for p in rows(db, "SELECT * FROM payments WHERE company_id = ? ORDER BY id", [cid])],
        "invoices": invoices,
        "credit_notes": rows(db, "SELECT * FROM credit_notes WHERE company_id = ? ORDER BY id", [cid]),
        "refunds": rows(db, "SELECT * FROM refunds WHERE company_id = ? ORDER BY id", [cid]),
        "saved_cards": rows(db, "SELECT first_seen_at FROM paytr_cards WHERE company_id = ? ORDER BY first_seen_at",
                            [cid]),
        "events": [_decoded(e, "data") for e in
                   rows(db, "SELECT id, created_at, actor, kind, message, data FROM events WHERE company_id = ? "
                            "ORDER BY id", [cid])],
        # What was sent when, to whom and about what; the bodies are the app's own text.
        "emails": rows(db, """SELECT id, template, to_addr, subject, locale, status, attempts, created_at, sent_at,
                                     last_error FROM outbox WHERE company_id = ? ORDER BY id""", [cid]),
        "webhook_events": [_decoded(e, "body") for e in rows(
            db, """SELECT e.public_id, e.type, e.sequence, e.created_at, e.body,
                          (SELECT json_group_array(json_object('endpoint_id', m.endpoint_id, 'status', m.status,
                                   'attempts', m.attempts, 'sent_at', m.sent_at))
                           FROM webhook_messages m WHERE m.event_id = e.id) AS deliveries
                   FROM webhook_events e WHERE e.company_id = ? ORDER BY e.id""", [cid])],
        "audit_log": [_decoded(a, "before", "after") for a in rows(
            db, """SELECT id, created_at, staff_email, action, target, before, after, reason FROM audit_log
                   WHERE company_id = ? ORDER BY id""", [cid])],
        "portal_sessions": rows(db, """SELECT created_by, created_at, expires_at, used_at, flow FROM portal_sessions
                                       WHERE company_id = ? ORDER BY id""", [cid]),
    }


def export(db: Database, now: datetime, staff: dict, company_id, *, reason: str, ip: str | None = None) -> dict:
    """The customer's data as one JSON-ready document; the export itself is audited (who took a
    copy of whose data, and why). Allowed in any state: a customer may ask for their data anytime."""
    reason = audit.check_reason(reason)
    with write(db):
        data = collect(db, company_id)
        counts = {key: len(value) for key, value in data.items() if isinstance(value, list)}
        audit.record(db, now, staff, "customer.export", reason=reason, company_id=data["company"]["id"],
                     target=f"company:{data['company']['id']}", after={"counts": counts}, ip=ip)
    return {"format": "paytr-billing.customer-export/1", "exported_at": clock.iso(now),
            "exported_by": staff.get("email") or "system", "reason": reason, **data}


def export_json(document: dict) -> str:
    return json.dumps(document, ensure_ascii=False, indent=2, sort_keys=False, default=str)


def refusal(db: Database, company: dict) -> str | None:
    """Why this customer cannot be erased now, or None."""
    if is_erased(company):
        return _("This customer's personal data was already erased.")
    sub = one(db, "SELECT status FROM subscriptions WHERE company_id = ?", [company["id"]])
    if sub and sub["status"] in LIVE_STATUSES:
        return _("The subscription is still running: cancel it first, then erase the customer's data.")
    if scalar(db, "SELECT count(*) FROM payments WHERE company_id = ? AND status IN ('pending', 'superseded')",
              [company["id"]]):
        return _("A payment is still pending at PayTR: wait until it is decided, then erase the customer's data.")
    if scalar(db, "SELECT count(*) FROM refunds WHERE company_id = ? AND status IN ('pending', 'unknown')",
              [company["id"]]):
        return _("A refund's outcome is not known yet: wait until it is, then erase the customer's data.")
    return None


def check(db: Database, company_id) -> dict:
    """The company, if it may be erased now; raises DataRequestError (or LookupError) otherwise."""
    company = _company(db, company_id)
    reason = refusal(db, company)
    if reason:
        raise DataRequestError(reason)
    return company


def _scrubbed(data, erased: str):
    if isinstance(data, dict):
        return {k: (erased if k in PERSONAL_KEYS and v not in (None, "") else _scrubbed(v, erased))
                for k, v in data.items()}
    if isinstance(data, list):
        return [_scrubbed(v, erased) for v in data]
    return data


def erase(db: Database, now: datetime, staff: dict, company_id, *, reason: str, ip: str | None = None,
          cards_deleted_at_paytr: int = 0) -> dict:
    """Erase the customer's personal data (see the module's docstring for what stays). The
    caller has already deleted the saved cards at PayTR (`cards_deleted_at_paytr`, for the record).
    Returns what was done, counted."""
    reason = audit.check_reason(reason)
    erased = "erased"
    with write(db):
        company = check(db, company_id)  # again, inside the write: nothing moved since the form
        cid = company["id"]
        people = rows(db, "SELECT id, email FROM users WHERE company_id = ?", [cid])
        emails = [p["email"] for p in people]
        marks = ", ".join("?" * len(emails)) or "NULL"
        done = {"users": len(people)}
        done["login_attempts"] = db.conn.execute(f"DELETE FROM login_attempts WHERE email IN ({marks})",
                                                 emails).rowcount
        # Sessions, tokens, recovery codes, browsers and email changes go with their user (ON DELETE CASCADE);
        # payments keep their amounts with user_id set NULL.
        db.conn.execute("DELETE FROM users WHERE company_id = ?", [cid])
        db.conn.execute("DELETE FROM invites WHERE company_id = ?", [cid])
        db.conn.execute("DELETE FROM portal_sessions WHERE company_id = ?", [cid])
        db.conn.execute("DELETE FROM paytr_cards WHERE company_id = ?", [cid])
        db.conn.execute(
            """UPDATE companies SET name = ?, billing_legal_name = NULL, billing_tax_office = NULL,
                   billing_tax_id = NULL, billing_address = NULL, billing_phone = NULL, external_id = NULL,
                   usage_workspaces = NULL, usage_storage_bytes = NULL, usage_reported_at = NULL,
                   paytr_utoken = NULL, paytr_ctoken = NULL, paytr_card_label = NULL, card_ip = NULL,
                   card_saved_by = NULL, card_expires = NULL WHERE id = ?""", [tombstone(cid), cid])
        done["payments"] = db.conn.execute(
            "UPDATE payments SET email = '', user_ip = NULL, paytr_token = NULL WHERE company_id = ?", [cid]).rowcount
        # Emails: what was sent when stays; to whom and what it said goes. Unsent ones are not sent.
        done["emails"] = db.conn.execute(
            """UPDATE outbox SET to_addr = '', context = '{}', subject = NULL, body_text = NULL, body_html = NULL,
                   status = CASE WHEN status = 'pending' THEN 'failed' ELSE status END,
                   last_error = CASE WHEN status = 'pending' THEN 'not sent: the customer''s data was erased'
                                     ELSE last_error END,
                   claimed_until = NULL WHERE company_id = ?""", [cid]).rowcount
        done["events"] = 0
        for event in rows(db, "SELECT id, kind, data FROM events WHERE company_id = ?", [cid]):
            data = _scrubbed(json.loads(event["data"] or "{}"), erased)
            db.conn.execute("UPDATE events SET message = ?, data = ? WHERE id = ?",
                            [event["kind"], json.dumps(data, sort_keys=True), event["id"]])
            done["events"] += 1
        # Webhook events: the host already has what was delivered; we keep the type and order only.
        done["webhook_events"] = 0
        for event in rows(db, "SELECT id, body FROM webhook_events WHERE company_id = ?", [cid]):
            body = _scrubbed(json.loads(event["body"] or "{}"), erased)
            db.conn.execute("UPDATE webhook_events SET body = ? WHERE id = ?", [json.dumps(body), event["id"]])
            done["webhook_events"] += 1
        db.conn.execute(
            """UPDATE webhook_messages SET status = 'failed', last_error = 'not sent: the customer''s data was erased',
                   claimed_until = NULL WHERE status = 'pending' AND event_id IN
                   (SELECT id FROM webhook_events WHERE company_id = ?)""", [cid])
        db.conn.execute("""UPDATE webhook_attempts SET response = NULL WHERE message_id IN
                           (SELECT m.id FROM webhook_messages m JOIN webhook_events e ON e.id = m.event_id
                            WHERE e.company_id = ?)""", [cid])
        done["cards_deleted_at_paytr"] = cards_deleted_at_paytr
        events.record(db, now, "company.erased", tombstone(cid), company_id=cid, actor=events.user_actor(staff)
                      if staff.get("id") else staff.get("email") or "system", **{"counts": done})
        audit.record(db, now, staff, "customer.erase", reason=reason, company_id=cid, target=f"company:{cid}",
                     before={"users": len(people)}, after=done, ip=ip)
    return done


async def delete_cards_at_paytr(paytr, utoken: str | None) -> int:
    """Delete every card PayTR keeps for this customer (its list, not ours: a card saved since the
    last list goes too). Raises PaytrError when PayTR cannot be reached or refuses: then nothing
    is erased, so no card stays chargeable at PayTR behind an erased customer."""
    if not utoken:
        return 0
    listed = await paytr.list_cards(utoken)
    for card in listed:
        await paytr.delete_card(utoken, str(card.get("ctoken")))
    return len(listed)
