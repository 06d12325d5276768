"""What the reliability tests share: the app and the PayTR emulator as real processes,
orders seeded straight into the database, a concurrent sender, and database read-outs.

The servers are `python main.py` children, exactly as an operator runs them. Each logs
into a file under the test's tmp_path; assertion messages carry the tail of that log.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx

from billing import accounts, clock, migrations, payments
from billing import settings as settings_module
from billing.db import Store, write
from billing.paytr import protocol
from billing.settings import Settings
from conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
FORM = "application/x-www-form-urlencoded"
CUSTOMER_IP = "85.34.78.112"


# --- servers as processes ---------------------------------------------------------------

_ports_given: set[int] = set()


def fresh_port() -> int:
    """A free port never handed out before in this run, so two servers of one test never share one."""
    while True:
        port = free_port()
        if port not in _ports_given:
            _ports_given.add(port)
            return port


class ServerProcess:
    """A `python main.py ...` child on a fixed port: start, kill -9, restart, stop."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, health_path: str,
                 log_path: Path):
        self.name = name
        self.argv = argv
        self.env = env
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.health_path = health_path
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.kills = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        assert not self.running, f"{self.name} is already running"
        self.starts += 1
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            log.write(f"\n--- {self.name}: start #{self.starts} ---\n".encode())
            log.flush()
            self.process = subprocess.Popen([sys.executable, *self.argv], cwd=ROOT, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    code = self.process.wait()
                    raise AssertionError(f"{self.name} exited with {code} while starting\n{self.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.url + self.health_path).status_code == 200:
                        return self
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"{self.name} did not answer {self.health_path} within {timeout:g}s\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash or an OOM kill."""
        assert self.running, f"{self.name} is not running\n{self.tail()}"
        self.process.kill()
        self.process.wait(timeout=15)
        self.kills += 1

    def stop(self) -> None:
        """A graceful stop (SIGTERM), forced after 20 s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        else:
            self.process.wait()

    def tail(self, chars: int = 6000) -> str:
        try:
            text = self.log_path.read_bytes()[-chars:].decode("utf-8", "replace")
        except FileNotFoundError:
            text = "(no log)"
        return f"--- last {chars} characters of {self.log_path} ---\n{text}"


class AppServer(ServerProcess):
    """The app: `python main.py --port N` on its own data directory, scheduler off."""

    def __init__(self, tmp_path: Path, **env):
        port = fresh_port()
        self.data_dir = tmp_path / "data"
        url = f"http://127.0.0.1:{port}"
        full_env = {**os.environ, "BILLING_ENV": "development", "BILLING_DATA_DIR": str(self.data_dir),
                    "BASE_URL": url, "BILLING_SCHEDULER": "0", **{k: str(v) for k, v in env.items()}}
        super().__init__("app", ["main.py", "--port", str(port)], full_env, port, "/healthz", tmp_path / "app.log")
        # The settings the server reads (key, salt, BASE_URL, mail, test mode), for seeding and signing;
        # like the server, they take a developer's .env into account, under the environment.
        self.settings: Settings = settings_module.load(self.env, env_file=ROOT / ".env")

    def configure(self, **env) -> None:
        """Change the environment before the (next) start, e.g. once the emulator's port is known."""
        self.env.update({k: str(v) for k, v in env.items()})
        self.settings = settings_module.load(self.env, env_file=ROOT / ".env")

    @property
    def callback_url(self) -> str:
        return self.url + "/billing/callback"

    @property
    def database_path(self) -> Path:
        return self.settings.database_path

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run `python main.py <args>` with the server's environment (an operator's command)."""
        return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout)


class EmulatorServer(ServerProcess):
    """The standalone PayTR emulator delivering callbacks to `notification_url`, retrying fast."""

    def __init__(self, tmp_path: Path, notification_url: str, retry_base: float = 0.2, retry_max: float = 1.0):
        port = fresh_port()
        # Its own data dir: development start-up writes a secret key there, and two processes
        # creating the same file at once would race.
        env = {**os.environ, "BILLING_ENV": "development", "BILLING_DATA_DIR": str(tmp_path / "emulator-data")}
        argv = ["main.py", "paytr-emulator", "--port", str(port), "--notification-url", notification_url,
                "--retry-base", str(retry_base), "--retry-max", str(retry_max)]
        super().__init__("paytr-emulator", argv, env, port, "/_faults", tmp_path / "emulator.log")

    def attempts(self, client: httpx.Client, merchant_oid: str) -> list[Attempt]:
        """Every callback attempt for an order, read from its page (the emulator has no JSON for it)."""
        page = client.get(f"{self.url}/transactions/{merchant_oid}")
        assert page.status_code == 200, f"{merchant_oid}: {page.status_code}\n{self.tail()}"
        return [Attempt(int(delivery), html.unescape(answer), html.unescape(body), delivered == "yes")
                for delivery, answer, body, delivered in _ATTEMPT_ROW.findall(page.text)]


@dataclass(frozen=True)
class Attempt:
    delivery: int  # which copy of the callback (the duplicate_callbacks fault makes several)
    answer: str  # "HTTP 200", "ConnectError: ...", ...
    body: str
    delivered: bool  # the app answered exactly OK


# One row of the attempts table on the emulator's transaction page.
# Cells may carry a data-label (the table stacks on a phone); the test reads the values.
_ATTEMPT_ROW = re.compile(r"<td[^>]*>#(\d+)</td><td[^>]*>(.*?)</td>\s*<td[^>]*><code>(.*?)</code></td><td[^>]*>(yes|no)</td>",
                          re.S)


# --- seeding ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Order:
    user: dict  # the company's owner
    payment: dict  # the pending payment row
    request: dict  # the get-token form, paytr_token included

    @property
    def oid(self) -> str:
        return self.payment["merchant_oid"]

    @property
    def company_id(self) -> int:
        return self.user["company_id"]


def seed_orders(settings: Settings, count: int, password_hash: str, *, tag: str = "c",
                plan: str = "starter") -> list[Order]:
    """`count` companies on a trial, each with one pending checkout, through the domain functions."""
    store = Store(settings.database_path)
    try:
        db = store.db()
        with write(db):
            migrations.apply(db)
        now = clock.utcnow()
        orders = []
        for i in range(count):
            user = accounts.register(db, now, settings, company_name=f"Firma {tag}{i} A.Ş.", name=f"Kişi {tag}{i}",
                                     email=f"owner-{tag}{i}@example.com", password_hash=password_hash)
            checkout = payments.start_checkout(db, now, settings, user=user, plan_code=plan, ip=CUSTOMER_IP)
            orders.append(Order(user=user, payment=checkout.payment, request=checkout.request))
        return orders
    finally:
        store.close()


# --- callbacks as PayTR sends them --------------------------------------------------------


def _keys(settings: Settings) -> dict:
    return {"key": str(settings.paytr_merchant_key), "salt": str(settings.paytr_merchant_salt)}


def success_form(settings: Settings, payment: dict) -> dict:
    return protocol.callback_form(
        merchant_oid=payment["merchant_oid"], status="success", total_amount=payment["amount"], **_keys(settings),
        payment_amount=payment["amount"], currency=protocol.paytr_currency(payment["currency"]),
        test_mode=str(payment["test_mode"]), payment_type="card", installment_count="0")


def failed_form(settings: Settings, payment: dict) -> dict:
    return protocol.callback_form(
        merchant_oid=payment["merchant_oid"], status="failed", total_amount=0, **_keys(settings),
        failed_reason_code="0", failed_reason_msg="Kartın bakiyesi yetersiz (insufficient funds)",
        test_mode=str(payment["test_mode"]), payment_type="card")


def encode(form: dict) -> bytes:
    return urlencode(form).encode("ascii")


# --- sending many requests at once ----------------------------------------------------------


@dataclass(frozen=True)
class Shot:
    """One request to send; `label` says what kind it is, for failure messages."""

    body: bytes
    method: str = "POST"
    content_type: str | None = FORM
    label: str = ""


@dataclass(frozen=True)
class Answer:
    shot: Shot
    status: int | None  # None: no HTTP answer at all (connection error)
    body: bytes
    error: str = ""

    def __repr__(self) -> str:
        return (f"Answer({self.shot.label or self.shot.method}: status={self.status}, body={self.body[:80]!r}, "
                f"error={self.error!r}, sent={self.shot.body[:120]!r})")


def fire(url: str, shots: Iterable[Shot], concurrency: int = 50, timeout: float = 60.0) -> list[Answer]:
    """Send every shot, at most `concurrency` in flight; answers in the order of `shots`.

    The event loop runs on a thread of its own: the browser tests' Playwright (sync API)
    keeps a loop marked as running on the main thread for the whole session.
    """
    shots = list(shots)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fire") as pool:
        return pool.submit(lambda: asyncio.run(_fire(url, shots, concurrency, timeout))).result()


async def _fire(url: str, shots: list[Shot], concurrency: int, timeout: float) -> list[Answer]:
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

        async def send(shot: Shot) -> Answer:
            headers = {"content-type": shot.content_type} if shot.content_type else {}
            async with gate:
                try:
                    response = await client.request(shot.method, url, content=shot.body, headers=headers)
                except httpx.HTTPError as exc:
                    return Answer(shot, None, b"", f"{type(exc).__name__}: {exc}")
                return Answer(shot, response.status_code, response.content)

        return await asyncio.gather(*(send(shot) for shot in shots))


# --- reading the database ---------------------------------------------------------------------


@contextlib.contextmanager
def reader(path: Path, readonly: bool = False) -> Iterator[sqlite3.Connection]:
    """A plain connection for looking (the server may be writing at the same time).

    `readonly` leaves a crashed server's WAL exactly as it was: a read-write connection that
    closes last checkpoints the WAL and deletes it, doing the restarted server's recovery for it.
    """
    if readonly:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=10,
                               isolation_level=None)
    else:
        conn = sqlite3.connect(str(path), timeout=10, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def query(path: Path, sql: str, params=()) -> list[dict]:
    with reader(path) as conn:
        return [dict(row) for row in conn.execute(sql, params).fetchall()]


def scalar(path: Path, sql: str, params=(), readonly: bool = False):
    with reader(path, readonly) as conn:
        row = conn.execute(sql, params).fetchone()
        return None if row is None else row[0]


def dump(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table (and the schema itself), read in one snapshot."""
    with reader(path) as conn:
        conn.execute("BEGIN")
        try:
            schema = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
            result = {"sqlite_master": [tuple(row) for row in schema]}
            for kind, name, _, sql in schema:
                if kind != "table":
                    continue
                if "WITHOUT ROWID" in (sql or "").upper():
                    rows = sorted((tuple(r) for r in conn.execute(f'SELECT * FROM "{name}"')), key=repr)
                else:
                    rows = [tuple(r) for r in conn.execute(f'SELECT * FROM "{name}" ORDER BY rowid')]
                result[name] = rows
        finally:
            conn.execute("COMMIT")
    return result


def dump_difference(before: dict, after: dict, limit: int = 5) -> str:
    """A short account of how two dumps differ, for an assertion message."""
    lines = []
    for table in sorted(set(before) | set(after)):
        old, new = before.get(table), after.get(table)
        if old == new:
            continue
        if old is None or new is None:
            lines.append(f"{table}: {'appeared' if old is None else 'disappeared'}")
            continue
        gone = [row for row in old if row not in new]
        added = [row for row in new if row not in old]
        lines.append(f"{table}: {len(old)} -> {len(new)} rows; removed/changed {gone[:limit]}; "
                     f"added/changed {added[:limit]}")
    return "\n".join(lines)


def wait_until(predicate, timeout: float, message: str, interval: float = 0.1, details=lambda: ""):
    """Poll `predicate` until it returns something truthy; AssertionError (with details) after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message}\n{details()}")
        time.sleep(interval)
