"""/metrics and /readyz as Prometheus, a load balancer and an operator see them."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from billing import clock as clock_module
from billing.app import create_app
from billing.db import write
from billing.settings import ConfigError
from conftest import START, make_settings, register
from test_checkout_http import callback_body, checkout_oid, pay, subscribe

TOKEN = "m" * 8 + "-metrics-token-for-tests-0123456789"


def from_address(app, address: str, **kwargs) -> TestClient:
    """Another client on the running app, connecting from `address` (not entered: one lifespan)."""
    return TestClient(app, base_url="http://testserver", client=(address, 50000), **kwargs)


def scrape(app) -> str:
    response = from_address(app, "127.0.0.1").get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text


def value(text: str, name: str, **labels) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


# --- who may scrape ------------------------------------------------------------------------------


def test_loopback_scrapes_and_the_answer_carries_no_session(client, app):
    response = from_address(app, "127.0.0.1").get("/metrics")
    assert response.status_code == 200
    assert "billing_http_requests_total" in response.text and "billing_sqlite_wal_bytes" in response.text
    # Answered ahead of the web middleware: no session cookie, no page security headers, no CSRF.
    assert "set-cookie" not in response.headers and "content-security-policy" not in response.headers
    assert from_address(app, "::1").get("/metrics").status_code == 200


def test_anyone_else_gets_the_same_404_as_an_unknown_page(client, app):
    outsider = from_address(app, "203.0.113.9")
    response = outsider.get("/metrics")
    assert response.status_code == 404 and "billing_" not in response.text
    assert outsider.get("/metrics", headers={"Authorization": "Bearer guess"}).status_code == 404


@pytest.mark.parametrize("env", [{"METRICS_TOKEN": TOKEN}])
def test_the_token_opens_it_from_anywhere_and_only_the_exact_token(client, app):
    outsider = from_address(app, "203.0.113.9")
    assert outsider.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert outsider.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}x"}).status_code == 404
    assert outsider.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 404


@pytest.mark.parametrize("env", [{"METRICS_ALLOW": "10.0.0.0/8"}])
def test_metrics_allow_replaces_loopback(client, app):
    assert from_address(app, "10.1.2.3").get("/metrics").status_code == 200
    assert from_address(app, "127.0.0.1").get("/metrics").status_code == 404


def test_a_local_reverse_proxy_does_not_open_metrics_to_the_internet(client, app):
    """Caddy or nginx on this host connect from 127.0.0.1 for everyone: a forwarded request
    is the internet's, whatever the peer, and stays out."""
    proxied = from_address(app, "127.0.0.1", headers={"X-Forwarded-For": "198.51.100.7"})
    assert proxied.get("/metrics").status_code == 404


@pytest.mark.parametrize("env", [{"TRUSTED_PROXIES": "127.0.0.1", "METRICS_ALLOW": "192.0.2.0/24"}])
def test_behind_a_trusted_proxy_the_forwarded_client_is_checked(client, app):
    assert from_address(app, "127.0.0.1", headers={"X-Forwarded-For": "192.0.2.10"}).get("/metrics").status_code == 200
    assert from_address(app, "127.0.0.1", headers={"X-Forwarded-For": "198.51.100.7"}).get("/metrics").status_code == 404


def test_bad_metrics_settings_are_refused_at_start(tmp_path):
    with pytest.raises(ConfigError, match="METRICS_ALLOW"):
        make_settings(tmp_path, METRICS_ALLOW="127.0.0.1,office")
    with pytest.raises(ConfigError, match="METRICS_TOKEN"):
        make_settings(tmp_path, METRICS_TOKEN="short")
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        make_settings(tmp_path, LOG_FORMAT="xml")


# --- what it counts ----------------------------------------------------------------------------------


def test_requests_are_counted_by_route_template_never_by_raw_url(client, app):
    before = scrape(app)
    assert client.get("/auth/reset/SECRET-RESET-TOKEN-abc").status_code == 410  # an unknown link
    client.get("/no/such/page/for-anyone")
    after = scrape(app)
    labels = {"route": "/auth/reset/{token}", "method": "GET", "status": "410"}
    assert value(after, "billing_http_requests_total", **labels) == value(before, "billing_http_requests_total", **labels) + 1
    assert value(after, "billing_http_requests_total", route="unmatched", method="GET", status="404") \
        == value(before, "billing_http_requests_total", route="unmatched", method="GET", status="404") + 1
    assert value(after, "billing_http_request_duration_seconds_count", route="/auth/reset/{token}", method="GET") >= 1
    assert "SECRET-RESET-TOKEN" not in after and "for-anyone" not in after


def test_callbacks_by_outcome_and_group_commit_batches(client, app, settings, monkeypatch):
    from billing.ops import metrics

    monkeypatch.setattr(metrics, "CACHE_SECONDS", 0.0)  # the database figures as they are now
    before = scrape(app)
    owner = client
    register(owner)
    pay(owner, app, checkout_oid(subscribe(owner)))
    assert client.post("/billing/callback", data={**callback_body(settings, "PB1TX"), "hash": "forged"}).status_code == 400
    after = scrape(app)
    for outcome in ("applied", "refused"):
        assert value(after, "billing_paytr_callbacks_total", outcome=outcome) \
            == value(before, "billing_paytr_callbacks_total", outcome=outcome) + 1, outcome
    assert value(after, "billing_callback_batch_size_count") >= value(before, "billing_callback_batch_size_count") + 1
    assert value(after, "billing_http_requests_total", route="/billing/callback", method="POST", status="400") >= 1
    # The checkout asked PayTR's API (the emulator) for an iframe token: counted by endpoint and outcome.
    assert value(after, "billing_paytr_api_calls_total", endpoint="get_token", outcome="ok") \
        >= value(before, "billing_paytr_api_calls_total", endpoint="get_token", outcome="ok") + 1
    assert value(after, "billing_paytr_api_duration_seconds_count", endpoint="get_token") >= 1
    # ...and the subscription it activated, by status and plan.
    assert value(after, "billing_subscriptions", status="active", plan="starter") == 1


def test_a_refused_paytr_call_is_counted_as_refused(client, app):
    from billing.paytr.client import PaytrRefused

    before = scrape(app)
    with pytest.raises(PaytrRefused):
        client.portal.call(app.state.paytr.refund, "PB1TNOSUCHORDER", 100, "r-1")
    after = scrape(app)
    assert value(after, "billing_paytr_api_calls_total", endpoint="refund", outcome="refused") \
        == value(before, "billing_paytr_api_calls_total", endpoint="refund", outcome="refused") + 1


def queue_email(db, due_at):
    with write(db):
        db.conn.execute("""INSERT INTO outbox (dedupe_key, template, to_addr, context, next_attempt_at, created_at)
                           VALUES ('stuck-1', 'verify', 'ayse@example.com', '{}', ?, ?)""",
                        [clock_module.iso(due_at), clock_module.iso(due_at)])


@pytest.fixture
def dead_sender(app):
    """The mail sender never starts: what a crashed sender leaves behind."""
    app.state.sender.start = lambda clock: None


def test_a_stuck_outbox_shows_in_metrics_and_fails_readiness(dead_sender, client, app, db, settings):
    queue_email(db, START - timedelta(minutes=20))
    text = scrape(app)
    assert value(text, "billing_outbox_messages", kind="email", status="pending") == 1
    assert value(text, "billing_outbox_messages", kind="webhook", status="pending") == 0
    assert value(text, "billing_outbox_oldest_due_seconds", kind="email") == 20 * 60
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["failing"] == ["outbox"]
    assert ready.json()["checks"]["outbox"] == "stuck: email waiting 20 min (limit 15 min)"


def test_an_email_due_a_moment_ago_is_not_stuck(dead_sender, client, app, db):
    queue_email(db, START - timedelta(minutes=2))
    assert client.get("/readyz").status_code == 200


def test_database_figures_are_cached_for_a_few_seconds(dead_sender, client, app, db, monkeypatch):
    scrape(app)
    queue_email(db, START)
    assert value(scrape(app), "billing_outbox_messages", kind="email", status="pending") == 0  # cached
    from billing.ops import metrics

    monkeypatch.setattr(metrics, "CACHE_SECONDS", 0.0)
    assert value(scrape(app), "billing_outbox_messages", kind="email", status="pending") == 1


# --- readiness --------------------------------------------------------------------------------------


def test_ready_names_every_check_and_healthz_stays_liveness(client):
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "migrations": "ok", "scheduler": "off",
                                                       "outbox": "ok"}}
    assert "set-cookie" not in ready.headers
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}


def test_readiness_probe_keeps_nothing_it_wrote(client, db):
    client.get("/readyz")
    assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = '_readyz_probe'").fetchone()[0] == 0


def test_a_database_nobody_can_write_fails_readiness(client, settings):
    holder = sqlite3.connect(settings.database_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock and never lets go
    try:
        ready = client.get("/readyz")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert ready.status_code == 503
    assert ready.json()["failing"] == ["database"]
    assert "locked" in ready.json()["checks"]["database"]


def test_pending_migrations_fail_readiness(client, app, db):
    with write(db):
        db.conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm022_revenue'")
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["failing"] == ["migrations"]
    assert ready.json()["checks"]["migrations"] == "pending: m022_revenue"


@pytest.mark.parametrize("env", [{"BILLING_SCHEDULER": "1", "TICK_SECONDS": "60"}])
def test_the_scheduler_must_have_ticked_within_three_intervals(client, app):
    from conftest import wait_for

    wait_for(lambda: app.state.ticks.last_success is not None, message="the start-up tick")
    text = scrape(app)
    assert value(text, "billing_tick_last_success_timestamp_seconds") == pytest.approx(time.time(), abs=30)
    assert value(text, "billing_tick_duration_seconds_count") >= 1
    assert value(text, "billing_tick_interval_seconds") == 60
    assert client.get("/readyz").json()["checks"]["scheduler"] == "ok"
    app.state.ticks.last_success = time.time() - 181  # three intervals and a second
    app.state.readiness_cache = None
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["failing"] == ["scheduler"]
    assert ready.json()["checks"]["scheduler"].startswith("no good tick for 18")


def test_readiness_takes_the_write_lock_at_most_once_a_second(client, app, monkeypatch):
    from billing.ops import metrics

    calls = []
    real = metrics.database_writable
    monkeypatch.setattr(metrics, "database_writable", lambda db: calls.append(1) or real(db))
    for _ in range(20):
        assert client.get("/readyz").status_code == 200
    assert len(calls) == 1


def test_metrics_scrape_is_fast_while_callbacks_stream(client, app, settings):
    """A scrape's cost on a small database, with callbacks arriving at the same time."""
    stop = threading.Event()
    payer = from_address(app, "127.0.0.1")

    def storm():
        while not stop.is_set():
            payer.post("/billing/callback", data=callback_body(settings, "PB1TSTORM"))

    thread = threading.Thread(target=storm)
    thread.start()
    try:
        scraper = from_address(app, "127.0.0.1")
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            assert scraper.get("/metrics").status_code == 200
            timings.append(time.perf_counter() - started)
    finally:
        stop.set()
        thread.join()
    timings.sort()
    assert timings[len(timings) // 2] < 0.05, timings


def test_each_app_has_its_own_database_figures(tmp_path, clock):
    """Two apps in one process (tests do this) must not show each other's outbox."""
    first = create_app(make_settings(tmp_path / "a"), clock=clock)
    second = create_app(make_settings(tmp_path / "b"), clock=clock)
    assert first.state.metrics_registry is not second.state.metrics_registry
    assert first.state.ticks is not second.state.ticks
