"""Webhooks: the billing app tells the host product what changed (Standard Webhooks).

Endpoints are managed by staff (`add`, `set_events`, `set_enabled`, `rotate`, `delete`).
Events come from the audit trail: `events.record()` stages every event of a transaction,
and `flush` (a before-commit hook of `db.write`) turns them into webhook events just before
the COMMIT, when the data is final, so each body is a snapshot of the state the transaction
leaves. An event is one `webhook_events` row (its body written once) and one outbox message
per endpoint that wants its type; billing/notify/delivery.py sends them after the commit.

With no enabled endpoint a transaction pays one indexed read of a tiny table, and only
if it recorded an event about a customer.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import secrets
import socket
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlite_utils import Database

from billing import clock, entitlements, snapshots
from billing.db import on_commit, one, rows, scalar, staged, write
from billing.i18n import gettext as _, lazy_gettext
from billing.settings import Settings

log = logging.getLogger("billing.webhooks")

TYPES = (
    "customer.created",
    "subscription.trial_started",
    "subscription.trial_will_end",
    "subscription.activated",
    "subscription.renewed",
    "subscription.plan_changed",
    "subscription.updated",
    "subscription.past_due",
    "subscription.canceled",
    "subscription.expired",
    "payment.succeeded",
    "payment.failed",
    "invoice.issued",
    "refund.succeeded",
    "entitlements.updated",
)
# Shown beside each type on the admin page, in the reader's language.
TYPE_DESCRIPTIONS = {
    "customer.created": lazy_gettext("A customer signed up (on the site or through the API)."),
    "subscription.trial_started": lazy_gettext("A trial began (at sign-up, or staff reopened an ended trial)."),
    "subscription.trial_will_end": lazy_gettext("The trial ends in 3 days."),
    "subscription.activated": lazy_gettext(
        "The first payment made the subscription active (after a trial, or again after it ended)."),
    "subscription.renewed": lazy_gettext("A new period was paid."),
    "subscription.plan_changed": lazy_gettext("The plan changed (an upgrade now, or a downgrade at renewal)."),
    "subscription.updated": lazy_gettext(
        "A cancellation or plan change was scheduled or undone, or the trial extended."),
    "subscription.past_due": lazy_gettext("A renewal was not paid; the grace period runs."),
    "subscription.canceled": lazy_gettext("The subscription ended (canceled, or unpaid after the grace period)."),
    "subscription.expired": lazy_gettext("The trial ended without a payment."),
    "payment.succeeded": lazy_gettext("A payment went through."),
    "payment.failed": lazy_gettext("A payment was declined."),
    "invoice.issued": lazy_gettext("An invoice was issued for a payment."),
    "refund.succeeded": lazy_gettext("Money was refunded."),
    "entitlements.updated": lazy_gettext(
        "Plan, status, access or limits changed: what the product should allow now."),
}
ROTATION_OVERLAP = timedelta(hours=24)
TRIAL_WILL_END = timedelta(days=3)
URL_MAX = 2000
SECRET_BYTES = 32


class WebhookError(ValueError):
    """Bad input from staff: the message says what to fix."""


# --- endpoints ------------------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def parse_types(value: str | Iterable[str] | None) -> list[str] | None:
    """'a,b' or ['a', 'b'] -> the types, checked; empty or None -> None (every type)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    chosen = [item.strip() for item in items if item and item.strip()]
    unknown = [item for item in chosen if item not in TYPES]
    if unknown:
        raise WebhookError(_("Unknown event type %(unknown)s; the types are: %(types)s.", unknown=", ".join(unknown),
                             types=", ".join(TYPES)))
    if not chosen or set(chosen) == set(TYPES):
        return None
    return [t for t in TYPES if t in chosen]


def wants(endpoint: dict, event_type: str) -> bool:
    types = endpoint.get("event_types")
    return types is None or event_type in json.loads(types)


def _forbidden(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified or ip.is_multicast
            or ip.is_reserved or not ip.is_global)


def check_url(url: str, *, production: bool) -> tuple[str, int]:
    """The URL's shape; -> (host, port) to resolve. In production only https is allowed."""
    if not isinstance(url, str) or not url.strip():
        raise WebhookError(_("Enter the endpoint's URL."))
    url = url.strip()
    if len(url) > URL_MAX:
        raise WebhookError(_("Keep the URL under %(max)d characters.", max=URL_MAX))
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookError(_("That is not a valid URL.")) from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise WebhookError(_("The URL must start with https:// and name a host."))
    if production and parts.scheme != "https":
        raise WebhookError(_("In production an endpoint must use https://."))
    if parts.username is not None or parts.password is not None:
        raise WebhookError(_("Leave credentials out of the URL; check the signature instead."))
    if parts.fragment:
        raise WebhookError(_("A URL with a #fragment cannot be posted to."))
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def check_addresses(host: str, addresses: Iterable[str]) -> None:
    addresses = list(addresses)
    if not addresses:
        raise WebhookError(_("%(host)s does not resolve to any address.", host=host))
    bad = sorted({a for a in addresses if _forbidden(a)})
    if bad:
        raise WebhookError(_("%(host)s resolves to %(addresses)s, a loopback, private or link-local address; in "
                             "production an endpoint must be on the public internet.", host=host,
                             addresses=", ".join(bad)))


def resolve(host: str, port: int) -> list[str]:
    try:
        return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookError(_("%(host)s cannot be resolved (%(error)s).", host=host, error=exc)) from None


def check_destination(url: str, *, production: bool, resolver: Callable[[str, int], list[str]] = resolve) -> str:
    """ValueError unless the app may post to `url`; -> the URL, trimmed. In production the host
    must resolve to public addresses only (checked again at every delivery: DNS changes)."""
    host, port = check_url(url, production=production)
    if production:
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            check_addresses(host, resolver(host, port))
        else:
            check_addresses(host, [str(literal)])
    return url.strip()


def add(db: Database, now: datetime, settings: Settings, url: str, events: str | Iterable[str] | None = None, *,
        actor: str = "system", resolver: Callable[[str, int], list[str]] = resolve) -> tuple[dict, str]:
    """A new endpoint, enabled. -> (its row, its signing secret: shown once, to give the host)."""
    from billing import events as audit

    url = check_destination(url, production=settings.is_production, resolver=resolver)
    types = parse_types(events)
    secret = new_secret()
    with write(db):
        endpoint_id = db.conn.execute(
            """INSERT INTO webhook_endpoints (url, event_types, secret, enabled, created_at, updated_at)
               VALUES (?, ?, ?, 1, ?, ?)""",
            [url, json.dumps(types) if types else None, secret, clock.iso(now), clock.iso(now)]).lastrowid
        audit.record(db, now, "webhook.endpoint_added", f"Webhook endpoint {url} added", actor=actor,
                     endpoint=endpoint_id, types=types or "all")
    return get(db, endpoint_id), secret


def get(db: Database, endpoint_id: int) -> dict | None:
    return one(db, "SELECT * FROM webhook_endpoints WHERE id = ?", [endpoint_id])


def _existing(db: Database, endpoint_id: int) -> dict:
    endpoint = get(db, endpoint_id)
    if endpoint is None:
        raise LookupError(endpoint_id)
    return endpoint


def set_events(db: Database, now: datetime, endpoint_id: int, events: str | Iterable[str] | None, *,
               actor: str = "system") -> dict:
    from billing import events as audit

    types = parse_types(events)
    with write(db):
        endpoint = _existing(db, endpoint_id)
        db.conn.execute("UPDATE webhook_endpoints SET event_types = ?, updated_at = ? WHERE id = ?",
                        [json.dumps(types) if types else None, clock.iso(now), endpoint_id])
        audit.record(db, now, "webhook.endpoint_changed", f"Webhook endpoint {endpoint['url']} now receives "
                     f"{', '.join(types) if types else 'every event'}", actor=actor, endpoint=endpoint_id)
    return get(db, endpoint_id)


def set_enabled(db: Database, now: datetime, endpoint_id: int, enabled: bool, *, actor: str = "system",
                reason: str | None = None) -> dict:
    """Disabled: nothing is sent and new events are not queued for it. Enabled again: what was
    still waiting goes out, and a failure streak starts over."""
    from billing import events as audit

    with write(db):
        endpoint = _existing(db, endpoint_id)
        db.conn.execute("UPDATE webhook_endpoints SET enabled = ?, disabled_reason = ?, failing_since = NULL, "
                        "updated_at = ? WHERE id = ?",
                        [int(enabled), None if enabled else (reason or f"disabled by {actor}"), clock.iso(now),
                         endpoint_id])
        if enabled:
            # What waited out a long back-off while the endpoint was off goes now, with a fresh 3 days.
            db.conn.execute("UPDATE webhook_messages SET next_attempt_at = ?, expires_at = max(expires_at, ?) "
                            "WHERE endpoint_id = ? AND status = 'pending'",
                            [clock.iso(now), clock.iso(now + RETRY_FOR), endpoint_id])
        audit.record(db, now, "webhook.endpoint_enabled" if enabled else "webhook.endpoint_disabled",
                     f"Webhook endpoint {endpoint['url']} {'enabled' if enabled else 'disabled'}"
                     + ("" if enabled or not reason else f": {reason}"), actor=actor, endpoint=endpoint_id)
        if enabled:
            _wake(db)
    return get(db, endpoint_id)


def rotate(db: Database, now: datetime, endpoint_id: int, *, actor: str = "system") -> tuple[dict, str]:
    """A new secret; the old one keeps signing beside it for 24 h, so the host can switch."""
    from billing import events as audit

    secret = new_secret()
    with write(db):
        endpoint = _existing(db, endpoint_id)
        db.conn.execute("UPDATE webhook_endpoints SET secret = ?, previous_secret = ?, previous_secret_until = ?, "
                        "updated_at = ? WHERE id = ?",
                        [secret, endpoint["secret"], clock.iso(now + ROTATION_OVERLAP), clock.iso(now), endpoint_id])
        audit.record(db, now, "webhook.secret_rotated", f"Signing secret of {endpoint['url']} rotated; the old one "
                     f"signs too until {clock.iso(now + ROTATION_OVERLAP)}", actor=actor, endpoint=endpoint_id)
    return get(db, endpoint_id), secret


def signing_secrets(endpoint: dict, now: datetime) -> list[str]:
    """The secrets each attempt is signed with: the current one, and the previous one for a day."""
    found = [endpoint["secret"]]
    until = endpoint.get("previous_secret_until")
    if endpoint.get("previous_secret") and until and now < clock.parse(until):
        found.append(endpoint["previous_secret"])
    return found


def delete(db: Database, now: datetime, endpoint_id: int, *, actor: str = "system") -> None:
    """The endpoint, its queued messages and its delivery log go; the events stay (other endpoints)."""
    from billing import events as audit

    with write(db):
        endpoint = _existing(db, endpoint_id)
        db.conn.execute("DELETE FROM webhook_endpoints WHERE id = ?", [endpoint_id])
        audit.record(db, now, "webhook.endpoint_deleted", f"Webhook endpoint {endpoint['url']} deleted",
                     actor=actor, endpoint=endpoint_id)


class PayloadPruned(Exception):
    """The event's payload was dropped under the retention rule: there is nothing left to send."""


def send_again(db: Database, now: datetime, message_id: int, *, actor: str = "system") -> dict:
    """Queue a message again, now, with a fresh 3 days of retries (even one that was delivered).
    PayloadPruned when its event's body is gone (MAIL_BODY_RETENTION_DAYS): an empty body is never sent."""
    with write(db):
        message = one(db, "SELECT * FROM webhook_messages WHERE id = ?", [message_id])
        if message is None:
            raise LookupError(message_id)
        if scalar(db, "SELECT pruned_at FROM webhook_events WHERE id = ?", [message["event_id"]]):
            raise PayloadPruned(message_id)
        db.conn.execute("UPDATE webhook_messages SET status = 'pending', next_attempt_at = ?, expires_at = ?, "
                        "claimed_until = NULL WHERE id = ?", [clock.iso(now), clock.iso(now + RETRY_FOR), message_id])
        _wake(db)
    log.info("webhook message %s queued again by %s", message_id, actor)
    return one(db, "SELECT * FROM webhook_messages WHERE id = ?", [message_id])


PRUNE_BATCH = 2000  # rows per transaction, as for emails (billing/mail.py prune_bodies)


def prune_payloads(db: Database, now: datetime, retention_days: int, *, batch: int = PRUNE_BATCH,
                   max_batches: int | None = 1) -> dict:
    """The webhook side of MAIL_BODY_RETENTION_DAYS. An event older than the retention whose messages are
    all finished (delivered or given up; none pending) loses its body, which becomes '{}' and `pruned_at` is
    set: its public id, type, company, sequence and times stay, and so does every message's status and every
    attempt's time, status code and duration. Attempts older than the retention lose the answer's text.
    -> {"events": n, "attempts": n} pruned, in transactions of at most `batch` rows each."""
    cutoff = clock.iso(now - timedelta(days=retention_days))
    done = {"events": 0, "attempts": 0}
    statements = {
        "events": ("""UPDATE webhook_events SET body = '{}', pruned_at = ? WHERE id IN (
                          SELECT e.id FROM webhook_events e WHERE e.pruned_at IS NULL AND e.created_at < ?
                            AND NOT EXISTS (SELECT 1 FROM webhook_messages m WHERE m.event_id = e.id
                                            AND m.status = 'pending')
                          ORDER BY e.created_at LIMIT ?)""", [clock.iso(now), cutoff, batch]),
        "attempts": ("""UPDATE webhook_attempts SET response = NULL WHERE id IN (
                            SELECT id FROM webhook_attempts WHERE response IS NOT NULL AND attempted_at < ?
                            ORDER BY attempted_at LIMIT ?)""", [cutoff, batch]),
    }
    for kind, (sql, params) in statements.items():
        batches = 0
        while max_batches is None or batches < max_batches:
            batches += 1
            with write(db):
                count = db.conn.execute(sql, params).rowcount
            done[kind] += count
            if count < batch:
                break
    if any(done.values()):
        log.info("pruned webhook payloads older than %s: %s", cutoff, done)
    return done


def get_message(db: Database, message_id: int) -> dict | None:
    return one(db, "SELECT * FROM webhook_messages WHERE id = ?", [message_id])


def listing(db: Database) -> list[dict]:
    """Every endpoint with what staff look at first: how it is doing."""
    return rows(db, """SELECT e.*,
                           (SELECT count(*) FROM webhook_messages m INDEXED BY webhook_messages_due
                            WHERE m.endpoint_id = e.id AND m.status = 'pending') AS pending,
                           (SELECT count(*) FROM webhook_messages m INDEXED BY webhook_messages_failed
                            WHERE m.endpoint_id = e.id
                              AND m.status = 'failed') AS failed
                       FROM webhook_endpoints e ORDER BY e.id""")


def deliveries(db: Database, endpoint_id: int, *, before: int | None = None, limit: int = 50) -> list[dict]:
    """The endpoint's messages, newest first, each with its event and its attempts."""
    found = rows(db, f"""SELECT m.*, ev.public_id, ev.type, ev.sequence, ev.company_id
                         FROM webhook_messages m JOIN webhook_events ev ON ev.id = m.event_id
                         WHERE m.endpoint_id = ? {'AND m.id < ?' if before else ''}
                         ORDER BY m.id DESC LIMIT ?""",
                 [endpoint_id, *([before] if before else []), limit])
    if found:
        marks = ",".join("?" * len(found))
        attempts: dict[int, list[dict]] = {}
        for attempt in rows(db, f"SELECT * FROM webhook_attempts WHERE message_id IN ({marks}) ORDER BY id DESC",
                            [m["id"] for m in found]):
            attempts.setdefault(attempt["message_id"], []).append(attempt)
        for message in found:
            message["attempt_log"] = attempts.get(message["id"], [])
    return found


# --- events: staged by events.record, written before the COMMIT ---------------------------


def emit(db: Database, now: datetime, event_type: str, company_id: int, *, dedupe_key: str | None = None) -> None:
    """Announce an event that has no audit entry of its own (a trial about to end), in the
    caller's transaction; `dedupe_key` makes a repeat a no-op."""
    from billing.db import before_commit
    from billing import events as audit

    if db.conn.in_transaction:
        staged(db).append(("webhook", event_type, company_id, {"dedupe_key": dedupe_key}, now))
        before_commit(db, audit._webhooks)


def _subscription_types(kind: str, data: dict) -> list[str]:
    status, previous = kind.split(".", 1)[1], data.get("previous")
    if status == "active":
        if previous in ("trialing", "expired", "canceled"):
            return ["subscription.activated"]
        found = ["subscription.renewed"] if "current_period_end" in data else []
        if data.get("previous_plan"):
            found.append("subscription.plan_changed")
        return found
    if status == "trialing":
        return ["subscription.updated"] if previous == "trialing" else ["subscription.trial_started"]
    if status in ("past_due", "canceled", "expired"):
        return [f"subscription.{status}"]
    if status in ("cancel_scheduled", "resumed", "downgrade_scheduled", "downgrade_undone"):
        return ["subscription.updated"]
    return []


def _translate(kind: str, data: dict) -> list[tuple[str, tuple | None]]:
    """An audit event -> the webhook events it means: (type, what its data is)."""
    if kind == "company.registered":
        return [("customer.created", None), ("subscription.trial_started", None)]
    if kind.startswith("subscription."):
        return [(t, None) for t in _subscription_types(kind, data)]
    if kind == "payment.succeeded":
        found = [("payment.succeeded", ("payment", data.get("merchant_oid")))]
        if data.get("invoice"):
            found.append(("invoice.issued", ("invoice", data["invoice"])))
        return found
    if kind == "payment.failed":
        return [("payment.failed", ("payment", data.get("merchant_oid")))]
    if kind == "refund.succeeded":
        return [("refund.succeeded", ("refund", data.get("reference_no")))]
    return []


def _object(db: Database, settings: Settings, ref: tuple) -> dict | None:
    what, key = ref
    if what == "payment":
        row = one(db, "SELECT * FROM payments WHERE merchant_oid = ?", [key])
        return snapshots.payment(db, row) if row else None
    if what == "invoice":
        row = one(db, "SELECT * FROM invoices WHERE number = ?", [key])
        return snapshots.invoice(settings, row) if row else None
    row = one(db, "SELECT * FROM refunds WHERE reference_no = ?", [key])
    return snapshots.refund(row) if row else None


_env_settings: Settings | None = None


def _settings(db: Database) -> Settings:
    store = getattr(db, "store", None)
    if store is not None and getattr(store, "settings", None) is not None:
        return store.settings
    global _env_settings
    if _env_settings is None:  # a script's own Store: the settings this process was started with
        from billing import settings as settings_module

        _env_settings = settings_module.load()
    return _env_settings


def _entitlements_key(customer: dict) -> str | None:
    granted = customer.get("entitlements")
    if granted is None:
        return None
    return json.dumps({k: granted[k] for k in ("plan", "status", "access", "limits")}, sort_keys=True)


def flush(db: Database) -> None:
    """Before the COMMIT: the transaction's staged events become webhook events and messages.

    A bug here must not cost a payment its commit: it is logged and the events are lost
    (their changes are in the audit trail), in a savepoint so nothing half-written stays."""
    items = list(staged(db))
    staged(db).clear()
    if not items:
        return
    endpoints = rows(db, "SELECT id, event_types FROM webhook_endpoints WHERE enabled = 1")
    if not endpoints:
        return
    try:
        with write(db):
            _write_events(db, items, endpoints)
    except Exception:
        log.exception("webhook events of this change could not be written; the change itself is kept")


def _write_events(db: Database, items: list[tuple], endpoints: list[dict]) -> None:
    settings = _settings(db)
    now = items[-1][4]
    planned: dict[int, list[tuple[str, tuple | None, str | None]]] = {}
    for source, kind, company_id, data, _ in items:
        if source == "webhook":
            found = [(kind, None, data.get("dedupe_key"))]
        else:
            found = [(event_type, ref, None) for event_type, ref in _translate(kind, data)]
        if found:
            planned.setdefault(company_id, []).extend(found)
    written = 0
    for company_id, planned_events in planned.items():
        customer = snapshots.customer_by_id(db, now, settings, company_id)
        if customer is None:
            continue
        state = one(db, "SELECT sequence, entitlements FROM webhook_customers WHERE company_id = ?", [company_id])
        sequence = state["sequence"] if state else 0
        key = _entitlements_key(customer)
        if key is not None and key != (state or {}).get("entitlements"):
            planned_events.append(("entitlements.updated", None, None))
        for event_type, ref, dedupe_key in planned_events:
            # Customer events (entitlements.updated included) carry the whole customer, so a host
            # keeps one record per customer and replaces it when the sequence is newer.
            if ref is not None:
                data = _object(db, settings, ref)
                if data is None:
                    continue
            else:
                data = customer
            queued = _write_event(db, now, endpoints, event_type, company_id, sequence + 1, data, dedupe_key)
            if queued is not None:  # None: a repeat of an event already announced, no number used
                sequence += 1
                written += queued
        db.conn.execute("""INSERT INTO webhook_customers (company_id, sequence, entitlements) VALUES (?, ?, ?)
                           ON CONFLICT (company_id) DO UPDATE SET sequence = excluded.sequence,
                               entitlements = excluded.entitlements""", [company_id, sequence, key])
    if written:
        _wake(db)


def _write_event(db: Database, now: datetime, endpoints: list[dict], event_type: str, company_id: int,
                 sequence: int, data: dict, dedupe_key: str | None) -> int | None:
    """-> how many endpoints it was queued for; None if its dedupe key was used already."""
    public_id = "evt_" + secrets.token_hex(12)
    body = json.dumps({"id": public_id, "type": event_type, "created_at": clock.iso(now), "data": data,
                       "sequence": sequence}, ensure_ascii=False, separators=(",", ":"))
    cursor = db.conn.execute(
        """INSERT INTO webhook_events (public_id, type, company_id, sequence, body, dedupe_key, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING""",
        [public_id, event_type, company_id, sequence, body, dedupe_key, clock.iso(now)])
    if not cursor.rowcount:
        return None
    event_id = cursor.lastrowid
    wanted = [e["id"] for e in endpoints if wants(e, event_type)]
    db.conn.executemany(
        """INSERT INTO webhook_messages (event_id, endpoint_id, next_attempt_at, expires_at, created_at)
           VALUES (?, ?, ?, ?, ?)""",
        [(event_id, endpoint_id, clock.iso(now), clock.iso(now + RETRY_FOR), clock.iso(now))
         for endpoint_id in wanted])
    return len(wanted)


def _wake(db: Database) -> None:
    store = getattr(db, "store", None)
    if store is not None:
        on_commit(db, store.wake_webhooks)


RETRY_FOR = timedelta(days=3)
