"""Shared fixtures: settings on tmp_path, the app, a client (always inside `with`),
a clock tests can move, a real SMTP sink, and small builders."""

from __future__ import annotations

import html
import re
import socket
import threading
import time
from datetime import datetime

import pytest
from starlette.testclient import TestClient

from billing import accounts, mail, migrations, settings as settings_module
from billing.app import create_app
from billing.clock import FixedClock, parse
from billing.db import Store, rows, write

START = parse("2026-11-27T09:00:00Z")
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def no_leftover_running_loop(request):
    """Playwright's sync API keeps its event loop marked as running on the worker's main thread for
    the whole session, so after a browser test any `asyncio.run` (the CLI's doctor, a benchmark)
    fails with "cannot be called from a running event loop" on that worker. Outside the browser
    tests, hide that idle loop for the test and put it back after."""
    import asyncio.events

    if "/browser/" in str(request.node.fspath):
        yield
        return
    loop = asyncio.events._get_running_loop()
    asyncio.events._set_running_loop(None)
    try:
        yield
    finally:
        asyncio.events._set_running_loop(loop)


def run_async(fn, *args):
    """`anyio.run(fn, *args)` on a thread of its own: a worker that ran browser tests keeps
    Playwright's event loop on its main thread, where a second loop may not start."""
    from concurrent.futures import ThreadPoolExecutor

    import anyio

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, fn, *args).result()


def make_settings(tmp_path, **env):
    # Saved cards off unless a test turns them on: most tests are about the iframe checkout.
    base = {"BILLING_DATA_DIR": str(tmp_path / "data"), "BASE_URL": "http://testserver", "BILLING_SCHEDULER": "0",
            "PAYTR_RECURRING": "0"}
    base.update({k: str(v) for k, v in env.items()})
    return settings_module.load(base, env_file=None)


@pytest.fixture
def env():
    """Extra environment for the settings fixture; override in a test module."""
    return {}


@pytest.fixture
def settings(tmp_path, env):
    return make_settings(tmp_path, **env)


@pytest.fixture
def clock():
    return FixedClock(START)


@pytest.fixture
def app(settings, clock):
    return create_app(settings, clock=clock)


@pytest.fixture
def client(app):
    with TestClient(app, base_url="http://testserver") as c:
        app.state.test_client = c  # second_browser() shares its event loop
        yield c


@pytest.fixture
def db(settings):
    """A connection to the database the app uses, migrated; no app or mail sender running
    unless the test also asks for `client`."""
    store = Store(settings.database_path, settings=settings)
    connection = store.db()
    with write(connection):
        migrations.apply(connection)
    yield connection
    store.close()


@pytest.fixture(scope="session")
def password_hash():
    return accounts.hash_password(PASSWORD)


def second_browser(app) -> TestClient:
    """Another browser (its own cookies) on the app the `client` fixture already started.

    Deliberately not entered with `with`: the app's lifespan is already running,
    and a second lifespan would close the shared database on exit. It runs its requests on the
    running client's event loop (its portal), as a server runs every request on one loop: alone it
    would open a loop per request and close it after the response, cancelling what the request left
    running (the emulator's callback for a charge staff started was lost that way, now and then).
    """
    browser = TestClient(app, base_url="http://testserver")
    running = getattr(app.state, "test_client", None)
    if running is not None and running.portal is not None:
        browser.portal = running.portal
    return browser


# --- helpers used by many tests ----------------------------------------------------


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf(client, path="/auth/login") -> str:
    match = CSRF_RE.search(client.get(path).text)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def post(client, path, data=None, *, token_from="/auth/login", **kwargs):
    """POST a form the way a browser would: with the page's CSRF token."""
    body = {"csrf_token": csrf(client, token_from), **(data or {})}
    return client.post(path, data=body, follow_redirects=kwargs.pop("follow_redirects", False), **kwargs)


def register(client, email="ayse@example.com", password=PASSWORD, company="Yılmaz Yazılım A.Ş.",
             name="Ayşe Yılmaz", **extra):
    return post(client, "/auth/register", {"company_name": company, "name": name, "email": email,
                                           "password": password, **extra})


def login(client, email="ayse@example.com", password=PASSWORD, **extra):
    return post(client, "/auth/login", {"email": email, "password": password, **extra})


def visible(response) -> str:
    """A page's words as a reader sees them: no tags, entities decoded, whitespace collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", response.text)))


def outbox(db, **where) -> list[dict]:
    """Outbox rows as they will be sent: rendered from their stored context."""
    sql = "SELECT * FROM outbox"
    if where:
        sql += " WHERE " + " AND ".join(f"{k} = ?" for k in where)
    return [mail.rendered(row, EMAIL_SETTINGS) for row in rows(db, sql + " ORDER BY id", list(where.values()))]


EMAIL_SETTINGS = settings_module.Settings(base_url="http://testserver")


def make_company(db, settings, now: datetime, password_hash: str, **overrides) -> dict:
    """A registered company with its owner, straight through the domain function."""
    n = overrides.pop("n", None) or int(time.monotonic_ns() % 10**9)
    values = {"company_name": f"Firma {n}", "name": f"Kişi {n}", "email": f"owner{n}@example.com",
              "password_hash": password_hash, **overrides}
    return accounts.register(db, now, settings, **values)


def wait_for(predicate, timeout=10.0, interval=0.05, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message() if callable(message) else message}")


# --- a real SMTP server -------------------------------------------------------------------


class SmtpSink:
    """aiosmtpd on a free port, keeping every message it receives (and, in `envelopes`, the
    MAIL FROM options and RCPT TO addresses it came with). `smtputf8`: advertise SMTPUTF8,
    as a server that takes addresses like ayşe@örnek.com.tr does; aiosmtpd's default is off."""

    def __init__(self, smtputf8: bool = False):
        from aiosmtpd.controller import Controller

        self.messages: list = []
        self.envelopes: list[dict] = []
        self.port = free_port()
        self.lock = threading.Lock()
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                from email import message_from_bytes, policy

                with sink.lock:
                    sink.messages.append(message_from_bytes(envelope.original_content, policy=policy.default))
                    sink.envelopes.append({"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
                                           "mail_options": list(envelope.mail_options)})
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=smtputf8)

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()

    def received(self, to=None):
        with self.lock:
            return [m for m in self.messages if to is None or m["To"] == to]


@pytest.fixture
def smtp():
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def smtp_utf8():
    """A real SMTP sink that offers SMTPUTF8."""
    sink = SmtpSink(smtputf8=True).start()
    yield sink
    sink.stop()
