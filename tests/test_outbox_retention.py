"""Retention (issue 13 §1): sent emails and finished webhook events lose their bodies after
MAIL_BODY_RETENTION_DAYS and keep what an audit needs; pages say so; the console's counts and
the named lookups read indexes, never a whole table."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from billing import clock, mail
from billing.db import one, rows, scalar, write
from billing.notify import webhooks
from billing.ops import data_requests
from billing.settings import ConfigError
from conftest import START, make_settings, post, register, visible, wait_for
from test_staff_actions import act, admin, audit_rows, company_id  # noqa: F401 (admin: a fixture)

AUDIT_FIELDS = ("id", "dedupe_key", "company_id", "template", "to_addr", "subject", "status", "attempts",
                "created_at", "sent_at", "locale")
EN = {"Accept-Language": "en-GB,en;q=0.9"}


class Recorder:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def send(self, msg, row):
        pass


def queue(db, key, at=START, to="a@example.com"):
    with write(db):
        mail.enqueue(db, at, None, template="staff_alert", to=to, dedupe_key=key,
                     context={"title": f"Title {key}", "body": "Body"})


def send_all(db, settings, at):
    return mail.deliver_due(db, at, settings, Recorder())


def by_key(db):
    return {r["dedupe_key"]: r for r in rows(db, "SELECT * FROM outbox ORDER BY id")}


# --- the setting --------------------------------------------------------------------------------


def test_retention_defaults_to_90_days_and_refuses_less_than_one(tmp_path):
    assert make_settings(tmp_path).mail_body_retention_days == 90
    assert make_settings(tmp_path, MAIL_BODY_RETENTION_DAYS="30").mail_body_retention_days == 30
    with pytest.raises(ConfigError, match="MAIL_BODY_RETENTION_DAYS must be at least 1"):
        make_settings(tmp_path, MAIL_BODY_RETENTION_DAYS="0")


# --- pruning emails -----------------------------------------------------------------------------


def test_only_sent_emails_older_than_the_retention_lose_their_bodies(db, settings):
    queue(db, "old")
    queue(db, "failed")
    send_all(db, settings, START)  # both go... then make "failed" a given-up email, as the sender would
    with write(db):
        db.conn.execute("UPDATE outbox SET status = 'failed', body_text = NULL, body_html = NULL, sent_at = NULL "
                        "WHERE dedupe_key = 'failed'")
    queue(db, "recent", at=START + timedelta(days=80))
    send_all(db, settings, START + timedelta(days=80))
    queue(db, "pending", at=START)  # never sent: a mail server that was down for months
    before = by_key(db)
    assert before["old"]["body_html"] and before["old"]["context"] != "{}"

    later = START + timedelta(days=91)
    assert mail.prune_bodies(db, later, 90) == 1
    after = by_key(db)
    old = after["old"]
    assert {k: old[k] for k in AUDIT_FIELDS} == {k: before["old"][k] for k in AUDIT_FIELDS}
    assert old["subject"] == "Staff alert: Title old" and old["status"] == "sent"
    assert (old["body_text"], old["body_html"], old["context"]) == (None, None, "{}")
    assert old["pruned_at"] == clock.iso(later)
    for untouched in ("recent", "failed", "pending"):
        assert after[untouched] == before[untouched], untouched
    # The Message-ID (id and dedupe key) is still what it was, so a bounce can be matched to the row.
    assert mail.build_message({**old, "body_text": "", "body_html": ""}, settings)["Message-ID"].startswith(
        f"<{old['id']}.")
    # A pruned row is never rendered again from its (now empty) context: its subject is what was sent.
    assert mail.rendered(old, settings)["subject"] == "Staff alert: Title old"
    assert mail.prune_bodies(db, later, 90) == 0  # done once


def test_pruning_goes_in_small_transactions(db, settings):
    for n in range(5):
        queue(db, f"k{n}")
    send_all(db, settings, START)
    later = START + timedelta(days=100)
    assert mail.prune_bodies(db, later, 90, batch=2, max_batches=1) == 2
    assert scalar(db, "SELECT count(*) FROM outbox WHERE pruned_at IS NOT NULL") == 2
    assert mail.prune_bodies(db, later, 90, batch=2, max_batches=None) == 3
    assert scalar(db, "SELECT count(*) FROM outbox WHERE body_html IS NOT NULL") == 0


def test_the_tick_prunes_with_the_configured_retention(db, tmp_path):
    settings = make_settings(tmp_path, MAIL_BODY_RETENTION_DAYS="7")
    queue(db, "week-old")
    send_all(db, settings, START)
    assert mail.prune_expired(db, START + timedelta(days=6), settings) == 0
    assert mail.prune_expired(db, START + timedelta(days=8), settings) == 1
    assert by_key(db)["week-old"]["pruned_at"]


# --- pruning webhook payloads -------------------------------------------------------------------


def webhook_rows(db, at):
    """An endpoint, a delivered event and one still being retried, each with an attempt (as the
    deliverer writes them)."""
    with write(db):
        endpoint = db.conn.execute(
            "INSERT INTO webhook_endpoints (url, secret, created_at, updated_at) VALUES (?, 'whsec_x', ?, ?)",
            ["https://host.example/hook", at, at]).lastrowid
        ids = {}
        for name, status in (("delivered", "sent"), ("retrying", "pending")):
            event = db.conn.execute(
                "INSERT INTO webhook_events (public_id, type, body, created_at) VALUES (?, 'customer.updated', ?, ?)",
                [f"evt_{name}", json.dumps({"id": f"evt_{name}", "data": {"email": "a@example.com"}}), at]).lastrowid
            message = db.conn.execute(
                "INSERT INTO webhook_messages (event_id, endpoint_id, status, next_attempt_at, expires_at, created_at, "
                "sent_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [event, endpoint, status, at, at, at, at if status == "sent" else None]).lastrowid
            db.conn.execute("INSERT INTO webhook_attempts (message_id, endpoint_id, attempted_at, status_code, "
                            "duration_ms, response) VALUES (?, ?, ?, ?, 12, 'ok thanks')",
                            [message, endpoint, at, 200 if status == "sent" else 500])
            ids[name] = (event, message)
    return ids


def test_finished_webhook_events_lose_their_payload_and_keep_the_audit_trail(db):
    ids = webhook_rows(db, "2026-01-01T00:00:00Z")
    now = START  # START is long after 2026-01-01 + 90 days
    done = webhooks.prune_payloads(db, now, 90)
    assert done == {"events": 1, "attempts": 2}
    delivered = one(db, "SELECT * FROM webhook_events WHERE id = ?", [ids["delivered"][0]])
    assert (delivered["public_id"], delivered["type"], delivered["body"]) == ("evt_delivered", "customer.updated", "{}")
    assert delivered["pruned_at"]
    retrying = one(db, "SELECT * FROM webhook_events WHERE id = ?", [ids["retrying"][0]])
    assert retrying["pruned_at"] is None and "a@example.com" in retrying["body"]  # still to be sent
    attempts = rows(db, "SELECT status_code, duration_ms, response, attempted_at FROM webhook_attempts ORDER BY id")
    assert [(a["status_code"], a["duration_ms"], a["response"]) for a in attempts] == [(200, 12, None), (500, 12, None)]
    # An event whose payload is gone is never sent again with an empty body.
    with pytest.raises(webhooks.PayloadPruned):
        webhooks.send_again(db, now, ids["delivered"][1])
    assert one(db, "SELECT status FROM webhook_messages WHERE id = ?", [ids["delivered"][1]])["status"] == "sent"
    assert webhooks.prune_payloads(db, now, 90) == {"events": 0, "attempts": 0}


# --- pages ---------------------------------------------------------------------------------------


def welcome_sent_and_pruned(client, db, settings):
    register(client)  # the app's own sender sends the welcome email
    wait_for(lambda: scalar(db, "SELECT status FROM outbox WHERE template = 'welcome'") == "sent",
             message="the welcome email sent")
    [welcome] = rows(db, "SELECT * FROM outbox WHERE template = 'welcome'")
    assert welcome["status"] == "sent" and welcome["body_text"]
    return welcome


def test_the_customer_reads_their_email_until_its_body_is_pruned_in_both_languages(client, db, settings):
    welcome = welcome_sent_and_pruned(client, db, settings)
    timeline = client.get("/billing/timeline")
    assert f'href="/billing/emails/{welcome["id"]}"' in timeline.text
    page = client.get(f"/billing/emails/{welcome['id']}", headers=EN)
    assert page.status_code == 200 and welcome["subject"] in visible(page)
    assert welcome["body_text"].split("\n")[0].strip() in visible(page)  # the text body, as sent

    mail.prune_bodies(db, START + timedelta(days=91), 90)
    timeline = visible(client.get("/billing/timeline", headers=EN))
    assert welcome["subject"] in timeline  # still listed, with the subject it was sent with
    english = visible(client.get(f"/billing/emails/{welcome['id']}", headers=EN))
    assert "The content of this email was removed" in english
    assert "kept for 90 days after it is sent" in english and welcome["subject"] in english
    post(client, "/language", {"lang": "tr", "next": "/billing/"}, token_from="/billing/")
    turkish = visible(client.get(f"/billing/emails/{welcome['id']}"))
    assert "Bu e-postanın içeriği silindi" in turkish and "90 gün saklanır" in turkish, turkish
    assert client.get("/billing/emails/999999").status_code == 404


def test_another_members_email_shows_who_and_when_but_not_its_body(client, db, settings):
    welcome = welcome_sent_and_pruned(client, db, settings)
    with write(db):
        db.conn.execute("UPDATE outbox SET to_addr = 'colleague@example.com' WHERE id = ?", [welcome["id"]])
    page = visible(client.get(f"/billing/emails/{welcome['id']}", headers=EN))
    assert "Only colleague@example.com can read this email here." in page
    assert welcome["body_text"].split("\n")[0].strip() not in page


def test_send_again_of_a_pruned_email_is_refused_with_a_reason(client, app, db, settings, admin):
    welcome = welcome_sent_and_pruned(client, db, settings)
    mail.prune_bodies(db, START + timedelta(days=91), 90)
    count = scalar(db, "SELECT count(*) FROM outbox")
    answer = act(admin, db, f"/emails/{welcome['id']}/resend", {"reason": "Müşteri bulamadı"})
    assert answer.status_code == 422
    assert "content was removed under the email retention rule, so it cannot be sent again" in visible(answer)
    assert scalar(db, "SELECT count(*) FROM outbox") == count and audit_rows(db, "email.resend") == []
    timeline = visible(admin.get(f"/admin/companies/{company_id(db)}"))
    assert welcome["subject"] in timeline  # the staff timeline still lists it


def test_kvkk_erase_still_works_on_pruned_rows(client, db, settings):
    welcome = welcome_sent_and_pruned(client, db, settings)
    mail.prune_bodies(db, START + timedelta(days=91), 90)
    with write(db):  # a customer who left: erasing is allowed once the subscription is over
        db.conn.execute("UPDATE subscriptions SET status = 'expired' WHERE company_id = ?", [welcome["company_id"]])
    staff = {"id": None, "email": "ops@example.com", "name": "Ops"}
    done = data_requests.erase(db, START + timedelta(days=92), staff, welcome["company_id"], reason="KVKK talebi")
    assert done["emails"] >= 1
    row = one(db, "SELECT * FROM outbox WHERE id = ?", [welcome["id"]])
    assert (row["to_addr"], row["subject"], row["status"]) == ("", None, "sent") and row["pruned_at"]


# --- indexes: what the console and the senders read ---------------------------------------------

QUERIES = {
    "outbox pending count": ("SELECT count(*) FROM outbox WHERE status = 'pending'", [], "outbox"),
    "outbox failed count": ("SELECT count(*) FROM outbox WHERE status = 'failed'", [], "outbox"),
    "outbox failed list": ("SELECT id FROM outbox WHERE status = 'failed' ORDER BY id DESC LIMIT 50", [], "outbox"),
    "metrics webhook counts (failed)": ("SELECT count(*) AS n FROM webhook_messages WHERE status = ?", ["failed"],
                                        "webhook_messages"),
    "metrics webhook counts (pending)": ("SELECT count(*) AS n FROM webhook_messages WHERE status = ?", ["pending"],
                                         "webhook_messages"),
    "refunds on the staff customer page": (
        "SELECT r.*, p.merchant_oid FROM refunds r JOIN payments p ON p.id = r.payment_id WHERE r.company_id = ? "
        "ORDER BY r.id DESC", [1], "refunds"),
    "staff alert addresses": (
        "SELECT email FROM users WHERE role = 'staff' AND deactivated_at IS NULL ORDER BY id", [], "users"),
    "staff list": ("SELECT u.id FROM users u WHERE u.role = 'staff' "
                   "ORDER BY u.deactivated_at IS NOT NULL, u.name COLLATE NOCASE, u.id", [], "users"),
    "audit filter's staff": ("SELECT id, name, email FROM users WHERE role = 'staff' ORDER BY email", [], "users"),
    "last admin": ("SELECT count(*) FROM users WHERE role = 'staff' AND coalesce(staff_role, 'admin') = 'admin' "
                   "AND deactivated_at IS NULL", [], "users"),
    "emails to prune": ("SELECT id FROM outbox WHERE status = 'sent' AND pruned_at IS NULL AND sent_at < ? "
                        "ORDER BY sent_at LIMIT ?", ["2026-01-01", 2000], "outbox"),
    "webhook events to prune": (
        "SELECT e.id FROM webhook_events e WHERE e.pruned_at IS NULL AND e.created_at < ? AND NOT EXISTS "
        "(SELECT 1 FROM webhook_messages m WHERE m.event_id = e.id AND m.status = 'pending') "
        "ORDER BY e.created_at LIMIT ?", ["2026-01-01", 2000], "webhook_events"),
    "webhook answers to prune": ("SELECT id FROM webhook_attempts WHERE response IS NOT NULL AND attempted_at < ? "
                                 "ORDER BY attempted_at LIMIT ?", ["2026-01-01", 2000], "webhook_attempts"),
    "sender's claim": ("SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= ? AND "
                       "(claimed_until IS NULL OR claimed_until <= ?) ORDER BY next_attempt_at, id LIMIT ?",
                       ["x", "x", 50], "outbox"),
    "sender's next due": ("SELECT min(CASE WHEN claimed_until > next_attempt_at THEN claimed_until "
                          "ELSE next_attempt_at END) FROM outbox WHERE status = 'pending'", [], "outbox"),
    "customer's emails": ("SELECT * FROM outbox WHERE company_id = ? ORDER BY id DESC LIMIT ?", [1, 50], "outbox"),
}


@pytest.mark.parametrize("name", list(QUERIES))
def test_each_console_and_sender_query_reads_an_index(db, name):
    sql, params, table = QUERIES[name]
    plan = [r[3] for r in db.conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()]
    alias = re.search(rf"\bFROM {table} (\w+)", sql)
    names = {table, alias.group(1)} if alias and alias.group(1).upper() not in ("WHERE", "ORDER") else {table}
    scans = [step for step in plan for n in names if re.fullmatch(rf"SCAN {n}", step)]
    assert scans == [], f"{name}: {plan}"
    assert any("INDEX" in step or "PRIMARY KEY" in step for step in plan), f"{name}: {plan}"


def test_the_console_reads_the_outbox_counts_from_partial_indexes(db):
    """The staff home's counts: the sent emails (nearly all of the outbox) are never read."""
    for status, index in (("pending", "outbox_due"), ("failed", "outbox_failed")):
        plan = [r[3] for r in db.conn.execute(
            f"EXPLAIN QUERY PLAN SELECT count(*) FROM outbox WHERE status = '{status}'").fetchall()]
        assert plan == [f"SCAN outbox USING INDEX {index}"] or plan == [f"SCAN outbox USING COVERING INDEX {index}"]
