"""Stopping the server (SIGTERM from systemd or docker) loses nothing PayTR was told.

Invariant: every callback the server committed was answered `OK`, and every `OK` is in the
database; a callback the server never read gets no answer, so PayTR retries it. The running tick
finishes before the process exits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from benchmarks.callbacks import callback_bodies, seed
from billing import jobs, settings as settings_module
from billing.app import create_app
from tests.conftest import free_port, make_settings, wait_for

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 16


class Storm:
    """Distinct success callbacks on keep-alive connections, each connection reconnecting after
    the server closed it (as PayTR would retry), until the server refuses connections."""

    def __init__(self, port: int, items: list[tuple[str, bytes]]):
        self.port = port
        self.items = iter(items)
        self.answers: dict[str, tuple[int, bytes, float]] = {}  # oid -> status, body, when
        self.unanswered: list[str] = []  # written, connection closed before any answer
        self.stop_sending = False

    def _request(self, body: bytes) -> bytes:
        return (f"POST /billing/callback HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode() + body

    async def _connection(self) -> None:
        while not self.stop_sending:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                return  # the server no longer listens: it is stopping
            try:
                while not self.stop_sending:
                    try:
                        oid, body = next(self.items)
                    except StopIteration:
                        return
                    writer.write(self._request(body))
                    try:
                        status_line = await reader.readline()
                        if not status_line:
                            raise ConnectionResetError
                        length, close = 0, False
                        while (line := await reader.readline()) not in (b"\r\n", b""):
                            name, _, value = line.partition(b":")
                            if name.strip().lower() == b"content-length":
                                length = int(value)
                            if name.strip().lower() == b"connection" and b"close" in value.lower():
                                close = True
                        answer = await reader.readexactly(length) if length else b""
                    except (ConnectionError, asyncio.IncompleteReadError):
                        self.unanswered.append(oid)
                        break  # reconnect, as PayTR would
                    self.answers[oid] = (int(status_line.split()[1]), answer, time.monotonic())
                    if close:
                        break
            finally:
                writer.close()

    async def run(self) -> None:
        await asyncio.gather(*(self._connection() for _ in range(CONNECTIONS)))


@pytest.mark.slow
def test_sigterm_during_a_callback_storm_answers_every_request_and_loses_nothing(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    env = {**os.environ, "BILLING_ENV": "development", "BILLING_DATA_DIR": str(data),
           "BASE_URL": f"http://127.0.0.1:{port}", "TICK_SECONDS": "1",
           "PAYTR_API_BASE": "http://127.0.0.1:9"}  # a PayTR nobody needs: the storm is callbacks only
    settings = settings_module.load(env, env_file=None)
    oids = seed(settings.database_path, 20_000)
    db = sqlite3.connect(settings.database_path)
    db.execute("UPDATE payments SET reconcile_at = '2099-01-01T00:00:00Z'")  # only callbacks decide them
    db.commit()
    db.close()
    items = list(zip(oids, callback_bodies(oids, str(settings.paytr_merchant_key), str(settings.paytr_merchant_salt))))

    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "main.py", "--port", str(port)], cwd=ROOT, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _listening(port), timeout=30, message="the server to listen")
        storm = Storm(port, items)
        failures: list[BaseException] = []

        def blow() -> None:
            # Its own thread and event loop: the test's thread may already run one (Playwright's).
            try:
                asyncio.run(asyncio.wait_for(storm.run(), timeout=90))
            except BaseException as exc:  # reported below, in the test
                failures.append(exc)

        blower = threading.Thread(target=blow)
        blower.start()
        try:
            wait_for(lambda: len(storm.answers) >= 500 or not blower.is_alive(), timeout=60,
                     message="the storm to get going")
        finally:
            signalled = {"at": time.monotonic()}
            server.send_signal(signal.SIGTERM)
            blower.join(timeout=120)
        assert not failures, failures
        code = server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    output = log.read_text()
    # uvicorn re-raises the signal after a clean shutdown, so the exit is "terminated by SIGTERM",
    # which systemd counts as a clean stop; the log says the lifespan's shutdown completed.
    assert code == -signal.SIGTERM, output[-2000:]
    assert "Application shutdown complete" in output and "Finished server process" in output, output[-2000:]

    statuses = {(status, body) for status, body, _at in storm.answers.values()}
    assert statuses == {(200, b"OK")}, statuses  # no 5xx, no half answers
    answered_after = [oid for oid, (_s, _b, at) in storm.answers.items() if at > signalled["at"]]
    print(f"answered {len(storm.answers)}, after SIGTERM {len(answered_after)}, unanswered {len(storm.unanswered)}")
    assert answered_after, "no request was in flight when SIGTERM came; the test proved nothing"
    assert len(storm.answers) < len(items), "the storm ended before the signal; the test proved nothing"

    db = sqlite3.connect(settings.database_path)
    committed = {row[0] for row in db.execute("SELECT merchant_oid FROM payments WHERE status = 'succeeded'")}
    invoiced = db.execute("SELECT count(*) FROM invoices").fetchone()[0]
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    ok = set(storm.answers)
    assert ok - committed == set(), "answered OK but not in the database"
    assert committed - ok == set(), "committed but never answered"
    assert not committed & set(storm.unanswered)  # what got no answer was not applied: PayTR's retry applies it
    assert invoiced == len(committed) and integrity == "ok"


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_shutdown_lets_the_running_tick_finish(tmp_path, monkeypatch):
    """The lifespan's shutdown waits for a tick that is under way (say, renewals being charged)."""
    started, finished = threading.Event(), threading.Event()

    async def slow_tick(context, *args, **kwargs):
        started.set()
        await asyncio.sleep(0.5)  # a tick waiting on PayTR
        finished.set()
        return {}

    monkeypatch.setattr(jobs, "tick", slow_tick)
    app = create_app(make_settings(tmp_path, BILLING_SCHEDULER="1", TICK_SECONDS="3600"))
    with TestClient(app, base_url="http://testserver"):
        assert started.wait(10), "the first tick runs at start-up"
        assert not finished.is_set()
    assert finished.is_set(), "shutdown returned while the tick was still running"


def test_shutdown_stops_a_tick_that_outlives_its_allowance(tmp_path, monkeypatch):
    from billing import app as app_module

    started, cancelled = threading.Event(), threading.Event()

    async def stuck_tick(context, *args, **kwargs):
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    monkeypatch.setattr(jobs, "tick", stuck_tick)
    monkeypatch.setattr(app_module, "TICK_STOP_SECONDS", 0.2)
    monkeypatch.setattr(app_module.Ticker.stop, "__defaults__", (0.2,))
    app = create_app(make_settings(tmp_path, BILLING_SCHEDULER="1", TICK_SECONDS="3600"))
    began = time.monotonic()
    with TestClient(app, base_url="http://testserver"):
        assert started.wait(10)
    assert cancelled.is_set() and time.monotonic() - began < 10
