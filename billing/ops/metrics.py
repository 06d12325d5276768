"""Prometheus metrics (prometheus-client) and the readiness check.

Two kinds of figures:
- counted as things happen, in this process's registry (`REGISTRY`): requests, callbacks,
  group-commit batches, PayTR calls, ticks. A counter's `.inc()` is a lock and an add, cheap
  enough for every callback;
- read from the database when scraped (`DatabaseCollector`): outbox depth and wait, subscriptions
  by status and plan, the WAL's size, the last good tick. These use the partial indexes the
  senders use (outbox_due, outbox_failed, webhook_messages_due) and subscriptions_plan_status,
  and are kept for CACHE_SECONDS so that scrapes from several Prometheus servers, or a tight
  scrape interval, cost one set of queries.

`/metrics` and `/readyz` are answered by BillingApp before any web middleware, like PayTR's
callback: no session, no CSRF, no current user. `/metrics` is for METRICS_ALLOW addresses or a
`Authorization: Bearer METRICS_TOKEN`; anyone else gets the same 404 as an unknown page.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field

import anyio.to_thread
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import Receive, Scope, Send

from billing import mail, migrations
from billing.db import BUSY_TIMEOUT_MS, rows
from billing.notify import delivery

log = logging.getLogger("billing.ops")

METRICS_PATH = "/metrics"
READY_PATH = "/readyz"
CACHE_SECONDS = 5.0
READY_CACHE_SECONDS = 1.0  # /readyz takes the write lock for a moment: at most once a second, however often asked
TICK_GRACE = 3  # the scheduler is late after this many intervals without a good tick

# No `_created` series: they double the text for a timestamp Prometheus does not need.
disable_created_metrics()
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

REQUESTS = Counter("billing_http_requests", "HTTP requests answered, by route template, method and status.",
                   ["route", "method", "status"], registry=REGISTRY)
REQUEST_SECONDS = Histogram("billing_http_request_duration_seconds",
                            "Time to answer an HTTP request, by route template and method.", ["route", "method"],
                            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                            registry=REGISTRY)
CALLBACKS = Counter("billing_paytr_callbacks",
                    "PayTR payment callbacks, by outcome: applied, failed (a declined payment recorded), "
                    "anomaly, refused (bad hash or form), error (not committed; PayTR retries), too_large.",
                    ["outcome"], registry=REGISTRY)
BATCH_SIZE = Histogram("billing_callback_batch_size", "Callbacks committed together by one group commit.",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=REGISTRY)
COMMIT_SECONDS = Histogram("billing_callback_commit_seconds", "Time to BEGIN, apply and COMMIT one batch.",
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5), registry=REGISTRY)
PAYTR_CALLS = Counter("billing_paytr_api_calls", "Calls to PayTR's API, by endpoint and outcome "
                      "(ok, refused: PayTR said no, unavailable: no usable answer).", ["endpoint", "outcome"],
                      registry=REGISTRY)
PAYTR_SECONDS = Histogram("billing_paytr_api_duration_seconds", "Time PayTR took to answer, by endpoint.",
                          ["endpoint"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=REGISTRY)
TICK_SECONDS = Histogram("billing_tick_duration_seconds", "Time one scheduler tick took.",
                         buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=REGISTRY)
TICK_FAILURES = Counter("billing_tick_failures", "Scheduler ticks that raised.", registry=REGISTRY)
CHARGES_IN_FLIGHT = Gauge("billing_charge_lane_in_flight", "Renewal charges sent to PayTR and not answered yet.",
                          registry=REGISTRY)
CHARGES = Counter("billing_charge_lane_charges", "Renewal charges of saved cards, by outcome: accepted (PayTR "
                  "took it; the result comes by callback), refused, unavailable (no answer: the status query "
                  "settles it), error, released (claimed, not sent before shutdown; the next start sends it).",
                  ["outcome"], registry=REGISTRY)


@dataclass
class TickStatus:
    """The scheduler's last good tick, for /metrics and /readyz (one per app)."""

    started: float = field(default_factory=time.time)
    last_success: float | None = None

    def record(self, seconds: float, ok: bool) -> None:
        TICK_SECONDS.observe(seconds)
        if ok:
            self.last_success = time.time()
        else:
            TICK_FAILURES.inc()


# --- read at scrape time ----------------------------------------------------------------------


def outbox_figures(db, now) -> dict:
    """Pending and failed counts, and how long the oldest due message has waited past its time,
    for emails and webhooks. Webhooks count only enabled endpoints' waits: a disabled endpoint's
    messages wait for a person on purpose."""
    figures = {}
    for kind, table in (("email", "outbox"), ("webhook", "webhook_messages")):
        for status in ("pending", "failed"):
            # pending: the partial index the sender claims from; failed: outbox_failed (emails), or
            # a scan of webhook messages, which are few (one per event per endpoint, pruned).
            figures[(kind, status)] = rows(db, f"SELECT count(*) AS n FROM {table} WHERE status = ?", [status])[0]["n"]
    waits = {"email": mail.next_due(db)}
    webhook_due = None
    for endpoint in rows(db, "SELECT id FROM webhook_endpoints WHERE enabled = 1"):
        due = delivery.OUTBOX.next_due(db, "endpoint_id = ?", [endpoint["id"]])
        if due is not None and (webhook_due is None or due < webhook_due):
            webhook_due = due
    waits["webhook"] = webhook_due
    for kind, due in waits.items():
        figures[(kind, "oldest_due_seconds")] = max(0.0, (now - due).total_seconds()) if due else 0.0
    return figures


def wal_bytes(path) -> int:
    try:
        return os.stat(f"{path}-wal").st_size
    except FileNotFoundError:
        return 0


class DatabaseCollector:
    """The figures read from the database, cached for CACHE_SECONDS."""

    def __init__(self, app_state):
        self.state = app_state
        self.cached_at = 0.0
        self.cached: list = []
        self.reading = threading.Lock()

    def collect(self):
        # One scrape re-reads; scrapes meanwhile answer with the figures they have rather than
        # each reading again (or waiting), unless there are none yet.
        if time.monotonic() - self.cached_at > CACHE_SECONDS and self.reading.acquire(blocking=not self.cached):
            try:
                if time.monotonic() - self.cached_at > CACHE_SECONDS:
                    self.cached = list(self._read())
                    self.cached_at = time.monotonic()
            finally:
                self.reading.release()
        yield from self.cached
        # Cheap and live: a stat() and an attribute.
        wal = GaugeMetricFamily("billing_sqlite_wal_bytes", "Size of the SQLite write-ahead log file.")
        wal.add_metric([], wal_bytes(self.state.store.path))
        yield wal
        ticks: TickStatus = self.state.ticks
        last = GaugeMetricFamily("billing_tick_last_success_timestamp_seconds",
                                 "Unix time of the last scheduler tick that finished without error (0: none yet).")
        last.add_metric([], ticks.last_success or 0)
        yield last
        interval = GaugeMetricFamily("billing_tick_interval_seconds", "TICK_SECONDS (0: the scheduler is off).")
        interval.add_metric([], self.state.settings.tick_seconds if self.state.settings.scheduler else 0)
        yield interval

    def _read(self):
        db = self.state.store.db()
        now = self.state.clock.now()
        figures = outbox_figures(db, now)
        depth = GaugeMetricFamily("billing_outbox_messages", "Emails and webhook messages by status "
                                  "(pending: queued or retrying; failed: given up).", labels=["kind", "status"])
        wait = GaugeMetricFamily("billing_outbox_oldest_due_seconds",
                                 "How long the oldest due pending message has waited past its send time.",
                                 labels=["kind"])
        for (kind, status), value in figures.items():
            if status == "oldest_due_seconds":
                wait.add_metric([kind], value)
            else:
                depth.add_metric([kind, status], value)
        yield depth
        yield wait
        subs = GaugeMetricFamily("billing_subscriptions", "Subscriptions by status and plan.",
                                 labels=["status", "plan"])
        # Covered by subscriptions_plan_status (plan, status): the index alone, no table rows.
        for row in rows(db, "SELECT plan, status, count(*) AS n FROM subscriptions GROUP BY plan, status"):
            subs.add_metric([row["status"], row["plan"] or ""], row["n"])
        yield subs
        due = GaugeMetricFamily("billing_charge_lane_due", "Renewal charges waiting to be sent to PayTR "
                                "(the charge lane's queue).")
        due.add_metric([], rows(db, "SELECT count(*) AS n FROM payments WHERE method = 'recurring' "
                                    "AND status = 'pending' AND charge_requested_at IS NULL")[0]["n"])
        yield due


def scrape(app_state) -> bytes:
    """The exposition text: this process's counters, then the app's database figures."""
    return generate_latest(REGISTRY) + generate_latest(app_state.metrics_registry)


def app_registry(app_state) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(app_state))
    return registry


# --- who may scrape -------------------------------------------------------------------------


def allowed(scope: Scope, settings) -> bool:
    """A METRICS_ALLOW address, or the bearer token. Behind a trusted proxy the address that counts
    is the client's (X-Forwarded-For), never the proxy's loopback: otherwise a proxy on this host
    would open /metrics to the internet."""
    token = str(settings.metrics_token)
    if token:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                offered = value.decode("latin-1")
                if offered[:7].lower() == "bearer " and hmac.compare_digest(offered[7:].strip().encode(),
                                                                            token.encode()):
                    return True
    address = _client_address(scope, settings.trusted_proxies)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in settings.metrics_allow)


def _client_address(scope: Scope, trusted_proxies) -> str:
    from starlette.requests import Request

    from billing.web.security import client_ip

    peer = scope.get("client")
    forwarded = any(name == b"x-forwarded-for" for name, _ in scope.get("headers", ()))
    if forwarded and peer and _in(peer[0], trusted_proxies):
        return client_ip(Request(scope), trusted_proxies)
    if forwarded and peer and _in(peer[0], ("127.0.0.0/8", "::1/128")):
        # A local proxy we were not told to trust forwarded it: whose request it is, we cannot tell.
        return ""
    return peer[0] if peer else ""


def _in(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in networks)


# --- readiness ---------------------------------------------------------------------------------


def database_writable(db) -> None:
    """Take the write lock and write a row, then roll back: nothing is kept, but a read-only file,
    a full disk at the lock or a writer that never lets go shows here."""
    conn = db.conn
    conn.execute("PRAGMA busy_timeout=2000")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE _readyz_probe (at TEXT)")
            conn.execute("INSERT INTO _readyz_probe VALUES (datetime('now'))")
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def readiness(app_state) -> dict[str, str]:
    """Each check's verdict: "ok", or why not. Runs on a worker thread."""
    settings, db = app_state.settings, app_state.store.db()
    checks: dict[str, str] = {}
    try:
        database_writable(db)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"not writable: {type(exc).__name__}: {exc}"
    try:
        pending = [m.name for m in migrations.migrations.pending(db)]
        checks["migrations"] = "ok" if not pending else f"pending: {', '.join(pending)}"
    except Exception as exc:
        checks["migrations"] = f"unknown: {type(exc).__name__}"
    if settings.scheduler:
        ticks: TickStatus = app_state.ticks
        limit = TICK_GRACE * settings.tick_seconds
        since = time.time() - (ticks.last_success or ticks.started)
        checks["scheduler"] = "ok" if since <= limit else (
            f"no good tick for {int(since)} s (limit {limit} s)" if ticks.last_success
            else f"no good tick since start-up {int(since)} s ago (limit {limit} s)")
    else:
        checks["scheduler"] = "off"
    try:
        figures = outbox_figures(db, app_state.clock.now())
        limit = settings.ready_outbox_minutes * 60
        stuck = [f"{kind} waiting {int(figures[(kind, 'oldest_due_seconds')] // 60)} min"
                 for kind in ("email", "webhook") if figures[(kind, "oldest_due_seconds")] > limit]
        checks["outbox"] = "ok" if not stuck else f"stuck: {', '.join(stuck)} (limit {settings.ready_outbox_minutes} min)"
    except Exception as exc:
        checks["outbox"] = f"unknown: {type(exc).__name__}"
    return checks


def _ready(checks: dict[str, str]) -> bool:
    return all(v in ("ok", "off") for v in checks.values())


# --- the endpoints, ahead of the web middleware -------------------------------------------------


def dispatch(scope: Scope) -> bool:
    return scope["type"] == "http" and scope["path"] in (METRICS_PATH, READY_PATH)


async def _answer(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    state = scope["app"].state
    if scope["method"] not in ("GET", "HEAD"):
        await _answer(send, 405, b"method not allowed\n", b"text/plain; charset=utf-8")
        return
    if scope["path"] == METRICS_PATH:
        if not allowed(scope, state.settings):
            await _answer(send, 404, b"Not Found", b"text/plain; charset=utf-8")
            return
        body = await anyio.to_thread.run_sync(scrape, state)
        await _answer(send, 200, body, CONTENT_TYPE_LATEST.encode())
        return
    cached = state.readiness_cache
    if cached is None or time.monotonic() - cached[0] > READY_CACHE_SECONDS:
        cached = state.readiness_cache = (time.monotonic(), await anyio.to_thread.run_sync(readiness, state))
    checks = cached[1]
    ready = _ready(checks)
    failing = [name for name, verdict in checks.items() if verdict not in ("ok", "off")]
    if not ready:
        log.warning("not ready: %s", "; ".join(f"{n}: {checks[n]}" for n in failing))
    body = {"status": "ok" if ready else "fail", "checks": checks}
    if failing:
        body["failing"] = failing
    await _answer(send, 200 if ready else 503, (json.dumps(body) + "\n").encode(), b"application/json")


def setup(app_state) -> None:
    """What the endpoints need on the app's state."""
    app_state.ticks = TickStatus()
    app_state.metrics_registry = app_registry(app_state)
    app_state.readiness_cache = None

