"""Delivering webhook messages: POST, signed per attempt, retried with back-off, logged.

`WebhookSender` runs in the app's event loop (started by the lifespan, woken after a commit
that queued a message). Each endpoint gets its own worker, which claims that endpoint's due
messages from the outbox (billing/notify/outbox.py) and posts at most `PER_ENDPOINT` at once;
all workers together post at most `OVERALL` at once. So an endpoint that answers slowly or
not at all (10 s, then the attempt counts as failed) holds only its own slots: the others'
messages keep going at their own pace, and one endpoint's backlog cannot starve another.

Every attempt is signed anew (Standard Webhooks: `webhook-id`, `webhook-timestamp`,
`webhook-signature`, with the previous secret too for a day after a rotation), redirects are
not followed, 2xx means delivered. A failure waits 5 s, 30 s, 2 min, 10 min, 30 min, 1 h,
then every 2 h, for 3 days; after that the message has failed, and an endpoint that has
delivered nothing for those 3 days is disabled and staff are emailed.

Outcomes are written per batch, not per message: the host deduplicates on `webhook-id`
(the contract is at least once), and a commit per message would cap the pace at the disk's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio.to_thread
import httpx
from standardwebhooks.webhooks import Webhook

from billing import clock as clock_module
from billing import events, mail
from billing.db import Store, rows, write
from billing.notify import webhooks
from billing.notify.outbox import Outbox, backoff
from billing.settings import Settings

log = logging.getLogger("billing.webhooks")

TIMEOUT_SECONDS = 10.0
RESPONSE_KEPT = 1024
LEASE = timedelta(minutes=5)
BATCH = 50  # per claim: at PER_ENDPOINT at once and 10 s each, well inside the lease
PER_ENDPOINT = 8
OVERALL = 64
SCHEDULE = (timedelta(seconds=5), timedelta(seconds=30), timedelta(minutes=2), timedelta(minutes=10),
            timedelta(minutes=30), timedelta(hours=1))
THEN_EVERY = timedelta(hours=2)
OUTBOX = Outbox("webhook_messages", LEASE, "webhook_messages_due")
USER_AGENT = "PayTR-Billing-Webhooks/1"


def retry_delay(attempts: int) -> timedelta:
    return backoff(SCHEDULE, THEN_EVERY, attempts)


@dataclass
class Attempt:
    message: dict
    at: datetime
    status_code: int | None
    duration_ms: int
    response: str | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


def signed_headers(endpoint: dict, message: dict, body: str, now: datetime, sent_at: datetime) -> dict:
    """The Standard Webhooks headers for one attempt, signed with every secret in force at `now`
    (the app's clock: rotation windows) and stamped `sent_at` (real time: the host checks it)."""
    signatures = " ".join(Webhook(secret).sign(message["public_id"], sent_at, body)
                          for secret in webhooks.signing_secrets(endpoint, now))
    return {"webhook-id": message["public_id"], "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signatures, "content-type": "application/json", "user-agent": USER_AGENT}


async def _check_destination(url: str, production: bool) -> None:
    """In production, where the URL points now (DNS may have changed since it was added)."""
    if not production:
        return
    host, port = webhooks.check_url(url, production=True)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host.strip("[]"), port, type=0, proto=6)
    except OSError as exc:
        raise webhooks.WebhookError(f"{host} cannot be resolved ({exc}).") from None
    webhooks.check_addresses(host, [info[4][0] for info in infos])


async def attempt(client: httpx.AsyncClient, endpoint: dict, message: dict, now: datetime, production: bool) -> Attempt:
    """One POST; never raises for the endpoint's trouble, it is the attempt's outcome."""
    started = time.perf_counter()
    status_code = response = error = None
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            await _check_destination(endpoint["url"], production)
            body = message["body"]
            headers = signed_headers(endpoint, message, body, now, datetime.now(UTC))
            async with client.stream("POST", endpoint["url"], content=body.encode(), headers=headers) as answer:
                status_code = answer.status_code
                kept = bytearray()
                async for chunk in answer.aiter_bytes():
                    kept += chunk
                    if len(kept) >= RESPONSE_KEPT:
                        break
                response = bytes(kept[:RESPONSE_KEPT]).decode("utf-8", "replace")
        if status_code is not None and not 200 <= status_code < 300:
            error = f"answered {status_code}" + (" (redirects are not followed)" if 300 <= status_code < 400 else "")
    except TimeoutError:
        error = f"no answer within {TIMEOUT_SECONDS:.0f} s"
    except webhooks.WebhookError as exc:
        error = str(exc)
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return Attempt(message, now, status_code, round((time.perf_counter() - started) * 1000), response, error)


def claim(db, now: datetime, endpoint_id: int, limit: int = BATCH) -> list[dict]:
    claimed = OUTBOX.claim(db, now, limit, "endpoint_id = ?", [endpoint_id])
    if not claimed:
        return []
    marks = ",".join("?" * len(claimed))
    found = {r["id"]: r for r in rows(db, f"SELECT id, public_id, body FROM webhook_events WHERE id IN ({marks})",
                                      [m["event_id"] for m in claimed])}
    return [{**m, "public_id": found[m["event_id"]]["public_id"], "body": found[m["event_id"]]["body"]}
            for m in claimed]


def record(db, now: datetime, settings: Settings, endpoint: dict, attempts: list[Attempt]) -> None:
    """The batch's outcomes, its log lines and the endpoint's health, in one transaction."""
    with write(db):
        db.conn.executemany(
            """INSERT INTO webhook_attempts (message_id, endpoint_id, attempted_at, status_code, duration_ms,
                   response, error) VALUES (?, ?, ?, ?, ?, ?, ?)""",
            [(a.message["id"], endpoint["id"], clock_module.iso(a.at), a.status_code, a.duration_ms, a.response,
              a.error) for a in attempts])
        gave_up = []
        for a in attempts:
            if a.delivered:
                OUTBOX.sent(db, now, a.message["id"])
                continue
            retry_at = now + retry_delay(a.message["attempts"])
            final = retry_at > clock_module.parse(a.message["expires_at"])
            OUTBOX.failed(db, a.message["id"], a.error or "failed", next_at=now if final else retry_at, final=final)
            if final:
                gave_up.append(a)
        delivered = any(a.delivered for a in attempts)
        last = attempts[-1]
        db.conn.execute(
            """UPDATE webhook_endpoints SET last_attempt_at = ?, last_status = ?,
                   last_delivered_at = CASE WHEN ? THEN ? ELSE last_delivered_at END,
                   failing_since = CASE WHEN ? THEN NULL ELSE coalesce(failing_since, ?) END
               WHERE id = ?""",
            [clock_module.iso(now), last.status_code, delivered, clock_module.iso(now), delivered,
             clock_module.iso(now), endpoint["id"]])
        if gave_up:
            _gave_up(db, now, settings, endpoint, gave_up)


def _gave_up(db, now: datetime, settings: Settings, endpoint: dict, gave_up: list[Attempt]) -> None:
    current = webhooks.get(db, endpoint["id"])
    for a in gave_up:
        log.error("webhook %s to %s failed for good after %s attempts: %s", a.message["public_id"],
                  endpoint["url"], a.message["attempts"], a.error)
    since = current.get("failing_since")
    if not current["enabled"] or since is None or now - clock_module.parse(since) < webhooks.RETRY_FOR:
        return  # the endpoint delivers other messages: only these failed
    reason = f"nothing delivered since {since}: {gave_up[-1].error}"
    db.conn.execute("UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?, updated_at = ? WHERE id = ?",
                    [reason, clock_module.iso(now), endpoint["id"]])
    events.record(db, now, "webhook.endpoint_disabled", f"Webhook endpoint {endpoint['url']} disabled: {reason}",
                  endpoint=endpoint["id"])
    mail.alert_staff(db, now, settings, dedupe_key=f"webhook-disabled:{endpoint['id']}:{since}",
                     title=f"Webhook endpoint disabled: {endpoint['url']}",
                     body=f"For 3 days every delivery to {endpoint['url']} failed (the last: {gave_up[-1].error}), "
                          f"so it was disabled and no more events are queued for it. Fix the host's endpoint, "
                          f"then enable it again in the admin console (Webhooks): what is still waiting "
                          f"goes out, and failed messages can be sent again one by one.")


def due_endpoints(db, now: datetime, busy: set[int]) -> tuple[list[dict], datetime | None]:
    """Enabled endpoints with a message due now (and not already being worked on), and when the
    next message of an idle endpoint comes due."""
    ready, soonest = [], None
    for endpoint in rows(db, "SELECT * FROM webhook_endpoints WHERE enabled = 1 ORDER BY id"):
        if endpoint["id"] in busy:
            continue
        due = OUTBOX.next_due(db, "endpoint_id = ?", [endpoint["id"]])
        if due is None:
            continue
        if due <= now:
            ready.append(endpoint)
        elif soonest is None or due < soonest:
            soonest = due
    return ready, soonest


class WebhookSender:
    """Drains the webhook outbox in the background of the web process (see the module's doc)."""

    IDLE_SECONDS = 60.0

    def __init__(self, store: Store, settings: Settings, client: httpx.AsyncClient | None = None):
        self.store = store
        self.settings = settings
        self.client = client
        self.owns_client = client is None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        self.workers: dict[int, asyncio.Task] = {}
        self.stopping = False

    def start(self, clock) -> None:
        self.clock = clock
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        self.overall = asyncio.Semaphore(OVERALL)
        self.stopping = False
        if self.client is None:
            self.client = httpx.AsyncClient(
                follow_redirects=False, timeout=httpx.Timeout(TIMEOUT_SECONDS),
                limits=httpx.Limits(max_connections=OVERALL, max_keepalive_connections=OVERALL))
        self.store.wake_webhooks = self.wake
        self.task = asyncio.create_task(self._run(), name="webhook-sender")

    def wake(self) -> None:
        """Thread-safe: called by whichever thread committed the message."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.event.set)

    async def _thread(self, fn, *args):
        store = self.store
        return await anyio.to_thread.run_sync(lambda: fn(store.db(), *args))

    async def _run(self) -> None:
        while not self.stopping:
            self.event.clear()
            soonest = None
            try:
                ready, soonest = await self._thread(due_endpoints, self.clock.now(), set(self.workers))
                for endpoint in ready:
                    self.workers[endpoint["id"]] = asyncio.create_task(self._work(endpoint["id"]),
                                                                       name=f"webhooks-{endpoint['id']}")
            except Exception:  # never let the sender die; the next wake-up tries again
                log.exception("webhook sender failed; will try again")
            if self.stopping:
                break
            timeout = self.IDLE_SECONDS
            if soonest is not None:
                timeout = max(0.05, min(timeout, (soonest - self.clock.now()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), timeout)

    async def _work(self, endpoint_id: int) -> None:
        """One endpoint's worker: claim its due messages, post them, record, until none is due."""
        try:
            limit = asyncio.Semaphore(PER_ENDPOINT)
            while not self.stopping:
                now = self.clock.now()
                endpoint = await self._thread(webhooks.get, endpoint_id)
                if endpoint is None or not endpoint["enabled"]:
                    return
                batch = await self._thread(claim, now, endpoint_id)
                if not batch:
                    return
                production = self.settings.is_production

                async def one(message: dict) -> Attempt:
                    async with limit, self.overall:
                        return await attempt(self.client, endpoint, message, self.clock.now(), production)

                results = await asyncio.gather(*(one(m) for m in batch))
                await self._thread(record, self.clock.now(), self.settings, endpoint, list(results))
        except Exception:
            log.exception("webhook worker for endpoint %s failed; its messages come back after the lease",
                          endpoint_id)
        finally:
            self.workers.pop(endpoint_id, None)
            if not self.stopping:
                self.event.set()  # what it left (a back-off, a new message) is the loop's to plan

    async def stop(self) -> None:
        """Stop posting; attempts in flight are abandoned and their messages come back after the lease."""
        self.store.wake_webhooks = lambda: None
        self.stopping = True
        if self.task is not None:
            self.event.set()
            await self.task
            self.task = None
        workers = list(self.workers.values())
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        if self.owns_client and self.client is not None:
            await self.client.aclose()
            self.client = None


def deliver_due_once(store: Store, settings: Settings, now: datetime, client: httpx.AsyncClient | None = None) -> dict:
    """Every due message, once, from a script (`main.py webhook send`): not in the app's loop."""

    async def run() -> dict:
        own = client or httpx.AsyncClient(follow_redirects=False, timeout=httpx.Timeout(TIMEOUT_SECONDS))
        counts = {"delivered": 0, "failed": 0}
        overall = asyncio.Semaphore(OVERALL)
        try:
            db = store.db()
            for endpoint in rows(db, "SELECT * FROM webhook_endpoints WHERE enabled = 1 ORDER BY id"):
                while batch := claim(db, now, endpoint["id"]):
                    async def one(message: dict) -> Attempt:
                        async with overall:
                            return await attempt(own, endpoint, message, now, settings.is_production)

                    results = list(await asyncio.gather(*(one(m) for m in batch)))
                    record(db, now, settings, endpoint, results)
                    counts["delivered"] += sum(a.delivered for a in results)
                    counts["failed"] += sum(not a.delivered for a in results)
        finally:
            if client is None:
                await own.aclose()
        return counts

    return asyncio.run(run())
