"""Webhook fan-out: how fast queued events reach a host, and whether a dead host slows the others.

    .venv/bin/python benchmarks/webhooks.py [--events 10000]

Queues `--events` webhook events (customers signing up: three events each, written the way
the app writes them, before each transaction's COMMIT), then runs the app's WebhookSender
against a receiver in its own process (uvicorn, verifying every signature with the
`standardwebhooks` package, as a host would) and prints how long delivery took (target:
10,000 within 60 s). Then the same again with a second endpoint that accepts connections
and never answers (each attempt runs into the 10 s timeout): the first endpoint's pace
should stay the same.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from billing import accounts, clock, migrations, settings as settings_module  # noqa: E402
from billing.db import Store, scalar, write  # noqa: E402
from billing.notify import webhooks  # noqa: E402
from billing.notify.delivery import PER_ENDPOINT, TIMEOUT_SECONDS, WebhookSender  # noqa: E402

NOW = clock.parse("2026-11-27T09:00:00Z")


# --- the host's endpoint, run in its own process ------------------------------------------------


async def receiver_app(scope, receive, send):
    """ASGI: verify the signature, answer 204 (or 400 for a bad signature)."""
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    global _verifier
    if "_verifier" not in globals():
        _verifier = Webhook(os.environ["WEBHOOK_SECRET"])
    try:
        _verifier.verify(body, headers)
        status = 204
    except WebhookVerificationError:
        status = 400
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_receiver(secret: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "benchmarks.webhooks:receiver_app", "--port", str(port), "--log-level",
         "warning", "--no-access-log"], cwd=ROOT, env={**os.environ, "WEBHOOK_SECRET": secret})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"http://127.0.0.1:{port}/hooks"
        time.sleep(0.1)
    raise RuntimeError("the receiver did not start")


def black_hole() -> tuple[socket.socket, str]:
    """Accepts connections (the kernel's backlog does) and never answers a byte."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1024)
    return s, f"http://127.0.0.1:{s.getsockname()[1]}/hooks"


# --- the run ----------------------------------------------------------------------------------------


def queue_events(db, settings, count: int) -> None:
    password_hash = accounts.hash_password("benchmark password 1")
    companies = -(-count // 3)
    for start in range(0, companies, 200):
        with write(db):
            for n in range(start, min(start + 200, companies)):
                accounts.register(db, NOW, settings, company_name=f"Firma {n}", name=f"Kişi {n}",
                                  email=f"owner{n}@example.com", password_hash=password_hash)


async def deliver(store, settings, endpoint_id: int, expected: int, timeout: float) -> float:
    """Seconds until `expected` messages to `endpoint_id` are delivered (the sender runs meanwhile)."""
    sender = WebhookSender(store, settings)
    started = time.perf_counter()
    sender.start(clock.FixedClock(NOW))
    db = store.db()
    try:
        while time.perf_counter() - started < timeout:
            done = scalar(db, "SELECT count(*) FROM webhook_messages WHERE endpoint_id = ? AND status = 'sent'",
                          [endpoint_id])
            if done >= expected:
                return time.perf_counter() - started
            await asyncio.sleep(0.05)
        raise RuntimeError(f"only {done} of {expected} delivered in {timeout:.0f} s")
    finally:
        await sender.stop()


def run(count: int, with_dead_endpoint: bool) -> dict:
    directory = Path(tempfile.mkdtemp(prefix="webhook-bench-"))
    processes = []
    try:
        settings = settings_module.load({"BILLING_DATA_DIR": str(directory), "BILLING_SCHEDULER": "0"}, env_file=None)
        store = Store(settings.database_path, settings=settings)
        db = store.db()
        with write(db):
            migrations.apply(db)
        fast, secret = webhooks.add(db, NOW, settings, "http://127.0.0.1:1/placeholder")
        process, url = start_receiver(secret)
        processes.append(process)
        with write(db):
            db.conn.execute("UPDATE webhook_endpoints SET url = ? WHERE id = ?", [url, fast["id"]])
        hole = None
        if with_dead_endpoint:
            hole, dead_url = black_hole()
            webhooks.add(db, NOW, settings, dead_url)
        queued = time.perf_counter()
        queue_events(db, settings, count)
        queue_seconds = time.perf_counter() - queued
        expected = scalar(db, "SELECT count(*) FROM webhook_messages WHERE endpoint_id = ?", [fast["id"]])
        seconds = asyncio.run(deliver(store, settings, fast["id"], expected, timeout=300))
        dead_attempts = scalar(db, "SELECT coalesce(sum(attempts), 0) FROM webhook_messages WHERE endpoint_id != ?",
                               [fast["id"]])
        failures = scalar(db, "SELECT count(*) FROM webhook_attempts WHERE endpoint_id = ? AND status_code != 204",
                          [fast["id"]])
        store.close()
        if hole is not None:
            hole.close()
        return {"events": expected, "queue_seconds": queue_seconds, "seconds": seconds, "failures": failures,
                "dead_attempts": dead_attempts}
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    alone = run(args.events, with_dead_endpoint=False)
    print(f"{alone['events']:,} events queued in {alone['queue_seconds']:.1f} s (3 per sign-up, in the sign-up's "
          f"transaction)")
    print(f"one endpoint: {alone['events']:,} delivered and verified in {alone['seconds']:.1f} s "
          f"({alone['events'] / alone['seconds']:,.0f}/s; target: 10,000 within 60 s); "
          f"{alone['failures']} rejected")
    beside = run(args.events, with_dead_endpoint=True)
    print(f"beside an endpoint that never answers: {beside['events']:,} delivered in {beside['seconds']:.1f} s "
          f"({beside['events'] / beside['seconds']:,.0f}/s, {beside['seconds'] / alone['seconds']:.2f}x the time "
          f"alone); meanwhile the dead endpoint had {beside['dead_attempts']} messages claimed, "
          f"{PER_ENDPOINT} in flight at a time, each waiting out the {TIMEOUT_SECONDS:.0f} s timeout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
