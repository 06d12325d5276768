"""Webhooks as a host engineer sees them: a real endpoint on a real port verifying every request
with the `standardwebhooks` package, the subscription's life arriving as typed events with full
snapshots and an increasing sequence, retries, a slow endpoint, rotation, production URL rules,
the staff pages and the command line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn

from billing import accounts
from billing.app import create_app
from billing.clock import iso, parse
from billing.db import one, rows, scalar, write
from billing.notify import delivery, webhooks
from conftest import START, login, make_company, outbox, post, register, wait_for
from test_lifecycle import DAY, TRIAL_END, pay_iframe, tick
from webhook_receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def add_endpoint(db, settings, receiver: Receiver, events=None) -> dict:
    endpoint, secret = webhooks.add(db, START, settings, receiver.url, events)
    receiver.secrets.append(secret)
    return endpoint


def stored(db) -> list[dict]:
    return rows(db, "SELECT type, sequence, company_id FROM webhook_events ORDER BY id")


def wait_delivered(db, count: int, receiver: Receiver):
    wait_for(lambda: len(receiver.events()) >= count, message=f"{count} webhooks delivered")
    return receiver.events()


# --- what the host receives ------------------------------------------------------------------


def test_a_subscriptions_life_reaches_the_host_signed_in_sequence_with_snapshots(client, app, clock, db, settings,
                                                                                   receiver):
    add_endpoint(db, settings, receiver)
    register(client)
    wait_delivered(db, 3, receiver)
    assert receiver.types() == ["customer.created", "subscription.trial_started", "entitlements.updated"]
    created = receiver.events()[0]
    assert created["id"].startswith("evt_") and created["created_at"] == "2026-11-27T09:00:00Z"
    assert created["data"]["id"] == "cus_1" and created["data"]["email"] == "ayse@example.com"
    assert created["data"]["subscription"]["status"] == "trialing"
    assert created["data"]["entitlements"]["access"] is True

    tick(client, app, clock, TRIAL_END - 7 * DAY)
    tick(client, app, clock, TRIAL_END - 3 * DAY)
    tick(client, app, clock, TRIAL_END - 1 * DAY)  # the 1-day reminder does not tell the host again
    wait_delivered(db, 4, receiver)

    pay_iframe(client, app)  # paid during the trial: the period starts when the trial ends
    wait_delivered(db, 8, receiver)
    end = one(db, "SELECT current_period_end FROM subscriptions")["current_period_end"]
    tick(client, app, clock, parse(end))  # no card saved: past due
    wait_delivered(db, 10, receiver)
    login(client)  # a month later the session has run out
    pay_iframe(client, app, token_from="/billing/renew")
    wait_delivered(db, 14, receiver)
    post(client, "/billing/cancel", token_from="/billing/cancel")
    wait_delivered(db, 15, receiver)
    new_end = one(db, "SELECT current_period_end FROM subscriptions")["current_period_end"]
    tick(client, app, clock, parse(new_end))
    wait_delivered(db, 17, receiver)

    received = sorted(receiver.events(), key=lambda e: e["sequence"])
    assert [e["type"] for e in received] == [
        "customer.created", "subscription.trial_started", "entitlements.updated",
        "subscription.trial_will_end",
        "subscription.activated", "payment.succeeded", "invoice.issued", "entitlements.updated",
        "subscription.past_due", "entitlements.updated",
        "subscription.renewed", "payment.succeeded", "invoice.issued", "entitlements.updated",
        "subscription.updated",  # set to cancel at period end: entitlements unchanged until it ends
        "subscription.canceled", "entitlements.updated",
    ]
    assert [e["sequence"] for e in received] == list(range(1, len(received) + 1))
    assert len({e["id"] for e in received}) == len(received)  # each delivered once
    by_type = {}
    for e in received:
        by_type.setdefault(e["type"], []).append(e["data"])
    activated = by_type["subscription.activated"][0]
    assert activated["subscription"]["status"] == "active" and activated["entitlements"]["plan"] == "starter"
    payment = by_type["payment.succeeded"][0]
    assert payment["status"] == "succeeded" and payment["amount"] == 2900 and payment["currency"]
    assert payment["invoice"] == by_type["invoice.issued"][0]["number"]
    assert by_type["subscription.past_due"][0]["entitlements"]["access"] is True  # inside the grace period
    assert by_type["subscription.updated"][0]["subscription"]["cancel_at_period_end"] is True
    last = by_type["entitlements.updated"][-1]
    assert last["entitlements"]["status"] == "canceled" and last["entitlements"]["access"] is False


def test_every_request_carries_standard_webhooks_headers_and_json(client, db, settings, receiver):
    add_endpoint(db, settings, receiver)
    register(client)
    wait_delivered(db, 3, receiver)
    request = receiver.requests[0]
    assert request["headers"]["content-type"] == "application/json"
    assert request["headers"]["webhook-signature"].startswith("v1,")
    assert request["headers"]["webhook-id"].startswith("evt_")
    assert request["verified_with"] == receiver.secrets


def test_without_an_endpoint_nothing_is_written(client, db):
    register(client)
    assert stored(db) == [] and scalar(db, "SELECT count(*) FROM webhook_customers") == 0


def test_a_rolled_back_change_announces_nothing(db, settings, receiver, password_hash):
    add_endpoint(db, settings, receiver)
    with pytest.raises(RuntimeError), write(db):
        make_company(db, settings, START, password_hash)
        raise RuntimeError("the rest of the change failed")
    assert stored(db) == []
    with write(db):  # a savepoint rolled back inside a transaction that commits
        with pytest.raises(RuntimeError), write(db):
            make_company(db, settings, START, password_hash, n=1)
            raise RuntimeError
        make_company(db, settings, START, password_hash, n=2)
    assert [e["type"] for e in stored(db)] == ["customer.created", "subscription.trial_started",
                                              "entitlements.updated"]


def test_an_endpoint_gets_only_the_types_it_asked_for(client, db, settings, receiver):
    add_endpoint(db, settings, receiver, events="customer.created,entitlements.updated")
    register(client)
    wait_delivered(db, 2, receiver)
    assert receiver.types() == ["customer.created", "entitlements.updated"]
    assert [e["sequence"] for e in sorted(receiver.events(), key=lambda e: e["sequence"])] == [1, 3]


def test_unknown_event_types_are_refused(db, settings):
    with pytest.raises(webhooks.WebhookError, match="Unknown event type payment.exploded"):
        webhooks.add(db, START, settings, "http://127.0.0.1:9/x", "payment.exploded")
    assert rows(db, "SELECT * FROM webhook_endpoints") == []


# --- delivery: retries, a slow endpoint, giving up --------------------------------------------


class Served:
    """The app in a real uvicorn on a free port, in a thread (so the test keeps its clock)."""

    def __init__(self, app):
        from conftest import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        wait_for(lambda: self.server.started, message="uvicorn started")
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(15)


def test_receiver_down_for_a_while_then_up_gets_every_event_once_with_retries_logged(tmp_path, settings, clock,
                                                                                        db, password_hash):
    down = Receiver()  # its port: nothing listens there yet
    add_endpoint(db, settings, down)
    app = create_app(settings.replace(base_url="http://127.0.0.1"), clock=clock)
    with Served(app) as served, httpx.Client(base_url=served.url) as browser:
        register(browser)
        wait_for(lambda: scalar(db, "SELECT count(*) FROM webhook_attempts") >= 3, message="first attempts")
        failed = rows(db, "SELECT * FROM webhook_attempts")
        assert all(a["status_code"] is None and a["error"] for a in failed)
        assert {(m["status"], m["next_attempt_at"]) for m in rows(db, "SELECT * FROM webhook_messages")} == {
            ("pending", "2026-11-27T09:00:05Z")}  # the first back-off: 5 s
        up = Receiver(port=down.port, secrets=down.secrets).start()
        try:
            clock.advance(timedelta(seconds=4))
            app.state.webhook_sender.wake()
            assert up.events() == []  # the 5 s back-off is not over
            clock.advance(timedelta(seconds=1))
            app.state.webhook_sender.wake()
            wait_delivered(db, 3, up)
            assert up.types() == ["customer.created", "subscription.trial_started", "entitlements.updated"]
            assert len(up.requests) == 3  # once each
            attempts = rows(db, "SELECT message_id, status_code, error FROM webhook_attempts ORDER BY id")
            assert [a["status_code"] for a in attempts] == [None, None, None, 200, 200, 200]
            endpoint = one(db, "SELECT * FROM webhook_endpoints")
            assert endpoint["failing_since"] is None and endpoint["last_delivered_at"] == "2026-11-27T09:00:05Z"
        finally:
            up.stop()


def test_a_hung_endpoint_does_not_delay_the_others(client, db, settings, receiver):
    hung = Receiver().start()
    hung.hold = threading.Event()
    try:
        add_endpoint(db, settings, hung)
        add_endpoint(db, settings, receiver)
        register(client)
        wait_delivered(db, 3, receiver)
        assert hung.requests == [] and len(receiver.events()) == 3
    finally:
        hung.stop()


def test_a_redirect_is_not_followed_and_counts_as_a_failure(client, db, settings, receiver):
    receiver.status = 302
    add_endpoint(db, settings, receiver)
    register(client)
    wait_for(lambda: scalar(db, "SELECT count(*) FROM webhook_attempts") >= 3, message="attempts")
    attempt = rows(db, "SELECT * FROM webhook_attempts")[0]
    assert attempt["status_code"] == 302 and "redirects are not followed" in attempt["error"]
    assert '"received": "evt_' in attempt["response"]  # the answer's first KiB is kept


def test_three_days_of_failures_disable_the_endpoint_and_email_staff(client, app, clock, db, settings, receiver,
                                                                    password_hash):
    accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    receiver.status = 500
    endpoint = add_endpoint(db, settings, receiver)
    register(client)
    wait_for(lambda: scalar(db, "SELECT count(*) FROM webhook_attempts") >= 3, message="first attempts")
    assert webhooks.get(db, endpoint["id"])["failing_since"] == "2026-11-27T09:00:00Z"
    for wait in (5, 30, 120):  # the back-off steps, tried as they come due
        before = scalar(db, "SELECT count(*) FROM webhook_attempts")
        clock.advance(timedelta(seconds=wait))
        app.state.webhook_sender.wake()
        wait_for(lambda: scalar(db, "SELECT count(*) FROM webhook_attempts") >= before + 3, message="retries")
    assert webhooks.get(db, endpoint["id"])["enabled"] == 1
    clock.at = START + timedelta(days=3, seconds=1)
    app.state.webhook_sender.wake()
    wait_for(lambda: not webhooks.get(db, endpoint["id"])["enabled"], message="endpoint disabled")
    assert {m["status"] for m in rows(db, "SELECT status FROM webhook_messages")} == {"failed"}
    assert "nothing delivered since 2026-11-27T09:00:00Z" in webhooks.get(db, endpoint["id"])["disabled_reason"]
    [alert] = [m for m in outbox(db) if m["template"] == "staff_alert"]
    assert alert["to_addr"] == "ops@example.com" and receiver.url in alert["subject"]
    # New events are not queued for a disabled endpoint.
    make_company(db, settings, clock.now(), password_hash)
    assert scalar(db, "SELECT count(*) FROM webhook_messages") == 3


def test_one_message_failing_for_good_does_not_disable_a_working_endpoint(db, settings, receiver):
    endpoint = add_endpoint(db, settings, receiver)
    with write(db):
        db.conn.execute("UPDATE webhook_endpoints SET last_delivered_at = ?", [iso(START)])
    message = {"id": 1, "public_id": "evt_x", "attempts": 40, "expires_at": iso(START)}
    with write(db):
        event = db.conn.execute("INSERT INTO webhook_events (public_id, type, body, created_at) VALUES "
                                "('evt_x', 'customer.created', '{}', ?)", [iso(START)]).lastrowid
        db.conn.execute("INSERT INTO webhook_messages (id, event_id, endpoint_id, next_attempt_at, expires_at, "
                        "created_at) VALUES (1, ?, ?, ?, ?, ?)", [event, endpoint["id"], *[iso(START)] * 3])
    later = START + timedelta(hours=1)
    delivery.record(db, later, settings, endpoint, [delivery.Attempt(message, later, 400, 3, "bad", "answered 400")])
    assert one(db, "SELECT status FROM webhook_messages")["status"] == "failed"
    assert webhooks.get(db, endpoint["id"])["enabled"] == 1  # failing for an hour, not 3 days


def test_retry_schedule():
    assert [delivery.retry_delay(n).total_seconds() for n in range(1, 10)] == [
        5, 30, 120, 600, 1800, 3600, 7200, 7200, 7200]


# --- secrets ---------------------------------------------------------------------------------


def test_rotation_signs_with_both_secrets_for_a_day_then_only_the_new_one(client, app, clock, db, settings,
                                                                          receiver, password_hash):
    endpoint = add_endpoint(db, settings, receiver)
    [old] = receiver.secrets
    assert old.startswith("whsec_") and len(old) > 40
    _, new = webhooks.rotate(db, START, endpoint["id"])
    receiver.secrets.append(new)
    make_company(db, settings, START, password_hash)
    app.state.webhook_sender.wake()
    wait_delivered(db, 3, receiver)
    assert all(r["verified_with"] == [old, new] for r in receiver.requests)
    assert len(receiver.requests[0]["headers"]["webhook-signature"].split(" ")) == 2
    clock.at = START + timedelta(hours=24)
    make_company(db, settings, clock.now(), password_hash)
    app.state.webhook_sender.wake()
    wait_delivered(db, 6, receiver)
    assert all(r["verified_with"] == [new] for r in receiver.requests[3:])


# --- production URL rules ----------------------------------------------------------------------


def resolver_to(*addresses):
    return lambda host, port: list(addresses)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.10", "169.254.169.254",
                                     "::1", "fe80::1", "fd00::1", "0.0.0.0", "224.0.0.1", "::ffff:10.0.0.1",
                                     "100.64.0.1"])
def test_production_refuses_endpoints_on_local_or_private_addresses(db, settings, address):
    production = settings.replace(env="production")
    with pytest.raises(webhooks.WebhookError, match="loopback, private or link-local"):
        webhooks.add(db, START, production, "https://hooks.example.com/billing",
                     resolver=resolver_to("93.184.216.34", address))
    assert rows(db, "SELECT * FROM webhook_endpoints") == []


def test_production_wants_https_and_a_public_address(db, settings):
    production = settings.replace(env="production")
    with pytest.raises(webhooks.WebhookError, match="https"):
        webhooks.add(db, START, production, "http://hooks.example.com/billing", resolver=resolver_to("93.184.216.34"))
    with pytest.raises(webhooks.WebhookError, match="loopback"):
        webhooks.add(db, START, production, "https://127.0.0.1/billing")
    endpoint, _ = webhooks.add(db, START, production, "https://hooks.example.com/billing",
                               resolver=resolver_to("93.184.216.34", "2606:2800:220:1::1"))
    assert endpoint["url"] == "https://hooks.example.com/billing"
    # Outside production, local receivers are fine (development, tests).
    assert webhooks.add(db, START, settings, "http://localhost:9000/hooks")[0]["enabled"] == 1


@pytest.mark.parametrize("url, reason", [("", "Enter"), ("ftp://example.com/x", "https://"),
                                         ("https://user:pw@example.com/x", "credentials"),
                                         ("https://example.com:99999/x", "not a valid URL"),
                                         ("https://example.com/" + "a" * 2000, "under 2000")])
def test_bad_urls_are_refused_with_a_reason(db, settings, url, reason):
    with pytest.raises(webhooks.WebhookError, match=reason):
        webhooks.add(db, START, settings, url)


def test_each_delivery_checks_the_address_again_in_production(receiver):
    """DNS can change after the endpoint was added: the attempt is refused, not sent."""
    endpoint = {"url": receiver.url, "secret": webhooks.new_secret(), "previous_secret": None}
    message = {"id": 1, "public_id": "evt_1", "body": "{}", "attempts": 1}

    async def go():
        async with httpx.AsyncClient() as client:
            return await delivery.attempt(client, endpoint, message, START, production=True)

    def run(coroutine_function):
        # On a thread of its own: the browser tests' Playwright keeps an event loop in this one.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, coroutine_function()).result()

    result = run(go)
    assert not result.delivered and "https" in result.error and receiver.requests == []
    endpoint["url"] = "https://localhost:1/hooks"
    result = run(go)
    assert not result.delivered and "loopback" in result.error


# --- staff pages ----------------------------------------------------------------------------------


@pytest.fixture
def staff(client, db, password_hash):
    accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    login(client, email="ops@example.com")
    return client


def test_staff_manage_endpoints_in_the_admin_console(staff, db, receiver, password_hash):
    assert 'href="/admin/webhooks"' in staff.get("/admin/").text
    empty = staff.get("/admin/webhooks")
    assert "No endpoints yet" in empty.text
    assert 'name="csrf_token" value=""' not in empty.text  # every form can be sent
    bad = post(staff, "/admin/webhooks", {"url": "ftp://nope", "events": "customer.created"},
               token_from="/admin/webhooks")
    assert bad.status_code == 422 and "must start with https://" in bad.text and 'value="ftp://nope"' in bad.text
    added = post(staff, "/admin/webhooks", {"url": receiver.url, "events": ["customer.created", "payment.failed"]},
                 token_from="/admin/webhooks")
    assert added.status_code == 201
    secret = webhooks.get(db, 1)["secret"]
    assert secret in added.text and "not shown again" in added.text
    listing = staff.get("/admin/webhooks")
    assert receiver.url in listing.text and "customer.created, payment.failed" in listing.text
    assert secret not in listing.text and secret not in staff.get("/admin/webhooks/1").text

    receiver.secrets.append(secret)
    make_company(db, staff.app.state.settings, START, password_hash)
    staff.app.state.webhook_sender.wake()  # committed on the test's own connection: wake the app's sender
    wait_delivered(db, 1, receiver)
    page = staff.get("/admin/webhooks/1")
    assert 'name="csrf_token" value=""' not in page.text
    assert "customer.created" in page.text and "HTTP 200" in page.text and "Delivered" in page.text

    saved = post(staff, "/admin/webhooks/1/events", {}, token_from="/admin/webhooks/1", follow_redirects=True)
    assert "Every event" in saved.text
    assert webhooks.get(db, 1)["event_types"] is None

    post(staff, "/admin/webhooks/1/enabled", {"enabled": "0"}, token_from="/admin/webhooks/1")
    assert webhooks.get(db, 1)["enabled"] == 0
    post(staff, "/admin/webhooks/1/enabled", {"enabled": "1"}, token_from="/admin/webhooks/1")
    assert webhooks.get(db, 1)["enabled"] == 1

    rotated = post(staff, "/admin/webhooks/1/rotate", {}, token_from="/admin/webhooks/1")
    new = webhooks.get(db, 1)["secret"]
    assert new != secret and new in rotated.text and "keeps signing beside it for 24 hours" in rotated.text

    message_id = one(db, "SELECT id FROM webhook_messages")["id"]
    again = post(staff, f"/admin/webhooks/1/messages/{message_id}/send-again", {}, token_from="/admin/webhooks/1")
    assert again.status_code == 303
    receiver.secrets.append(new)
    wait_for(lambda: len(receiver.requests) == 2, message="sent again")
    assert [r["headers"]["webhook-id"] for r in receiver.requests][0] == receiver.requests[1]["headers"]["webhook-id"]

    refused = post(staff, "/admin/webhooks/1/delete", {}, token_from="/admin/webhooks/1")
    assert refused.status_code == 422 and webhooks.get(db, 1) is not None
    post(staff, "/admin/webhooks/1/delete", {"confirm": "yes"}, token_from="/admin/webhooks/1")
    assert webhooks.get(db, 1) is None and scalar(db, "SELECT count(*) FROM webhook_attempts") == 0
    assert staff.get("/admin/webhooks/1").status_code == 404


def test_the_delivery_log_is_paginated(staff, db, settings, receiver, password_hash):
    add_endpoint(db, settings, receiver, events="customer.created")
    for n in range(30):
        make_company(db, settings, START, password_hash, n=n + 1)
    staff.app.state.webhook_sender.wake()
    wait_delivered(db, 30, receiver)
    first = staff.get("/admin/webhooks/1")
    assert first.text.count("Send again") == 25 and "Older deliveries" in first.text
    older = int(first.text.split("?before=")[1].split('"')[0])
    second = staff.get(f"/admin/webhooks/1?before={older}")
    assert second.text.count("Send again") == 5 and "Older deliveries" not in second.text


def test_customers_cannot_reach_the_webhook_pages(client):
    register(client)
    assert client.get("/admin/webhooks", follow_redirects=False).status_code in (303, 403, 404)


# --- command line -----------------------------------------------------------------------------------


def cli(tmp_path, *args):
    env = {**os.environ, "BILLING_DATA_DIR": str(tmp_path / "data"), "BILLING_ENV": "development"}
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_webhook_add_prints_the_secret_alone_on_stdout(tmp_path):
    added = cli(tmp_path, "webhook", "add", "http://127.0.0.1:9000/hooks", "--events",
                "customer.created,entitlements.updated")
    assert added.returncode == 0, added.stderr
    assert added.stdout.count("\n") == 1 and added.stdout.startswith("whsec_")
    secret = added.stdout.strip()
    from standardwebhooks.webhooks import Webhook

    Webhook(secret)  # a secret the package takes as it is
    assert "customer.created, entitlements.updated" in added.stderr
    listed = cli(tmp_path, "webhook", "list")
    assert listed.returncode == 0
    assert "http://127.0.0.1:9000/hooks\tcustomer.created,entitlements.updated\tenabled" in listed.stdout
    assert secret not in listed.stdout
    bad = cli(tmp_path, "webhook", "add", "http://127.0.0.1:9000/hooks", "--events", "nope")
    assert bad.returncode == 2 and bad.stdout == "" and "Unknown event type nope" in bad.stderr
