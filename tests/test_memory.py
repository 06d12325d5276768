"""Bounded memory (issue 13 §2): a fixed pool of worker threads and connections, and reads that
stop when their client has gone."""

from __future__ import annotations

import logging
import threading
import time

import anyio
import pytest

from billing import accounts, settings as settings_module
from billing.db import ClientGone, Store, scalar, stop_reads_when, write
from billing.web import admin
from tests.conftest import PASSWORD, START, login, make_settings

# About 12 s of SQLite work: far longer than any test here waits for it.
LONG_READ = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000) SELECT count(*) FROM c"


@pytest.fixture
def env():
    return {"DB_THREADS": 3}


def staff_cookie(client, db) -> str:
    accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=accounts.hash_password(PASSWORD))
    assert login(client, "ops@example.com").status_code == 303
    return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


async def get(app, path: str, cookie: str, gone_after: float | None = None) -> int:
    """One GET straight to the ASGI app; the client hangs up after `gone_after` seconds."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"cookie", cookie.encode())],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "app": app}
    started = time.monotonic()
    sent_body = False
    status = []

    async def receive():
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": b"", "more_body": False}
        # Like uvicorn: once the peer has gone, the disconnect is there without waiting.
        if gone_after is not None and time.monotonic() - started >= gone_after:
            return {"type": "http.disconnect"}
        while gone_after is None or time.monotonic() - started < gone_after:
            await anyio.sleep(0.01)
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


def test_concurrent_slow_requests_never_use_more_than_db_threads_threads_or_connections(app, client, db):
    cookie = staff_cookie(client, db)
    store = app.state.store
    threads, busy, most = set(), [0], [0]
    lock = threading.Lock()

    def slow_page(conn, query, at, tz):
        with lock:
            threads.add(threading.current_thread())
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        time.sleep(0.2)
        with lock:
            busy[0] -= 1
        return original(conn, query, at, tz)

    before = store.connections()
    peak_before = store.peak
    original = admin.customer_search.page
    admin.customer_search.page = slow_page
    try:
        async def fire():
            results = []

            async def one():
                results.append(await get(app, "/admin/", cookie))

            async with anyio.create_task_group() as group:
                for _ in range(12):
                    group.start_soon(one)
            return results

        started = time.monotonic()
        statuses = client.portal.call(fire)
        elapsed = time.monotonic() - started
    finally:
        admin.customer_search.page = original

    assert statuses == [200] * 12
    assert most[0] == 3  # DB_THREADS, not the 12 that asked at once (anyio's default would allow 40)
    assert elapsed >= 0.2 * 12 / 3 * 0.9  # they queued for the three threads
    # Every connection opened meanwhile belongs to one of those three threads.
    assert store.peak - max(peak_before, before) <= 3
    assert store.connections() <= before + 3


def test_a_thread_that_ended_hands_its_connection_to_the_next(tmp_path):
    store = Store(tmp_path / "pool.db")
    try:
        for _ in range(50):  # anyio retires a worker idle for 10 s; a new one starts later
            worker = threading.Thread(target=lambda: scalar(store.db(), "SELECT 1"))
            worker.start()
            worker.join()
        assert store.opened == 1
        assert store.connections() == 1
    finally:
        store.close()


def test_a_thread_that_died_mid_write_leaves_nothing_behind(tmp_path):
    store = Store(tmp_path / "pool.db")
    try:
        with write(store.db()) as db:
            db.execute("CREATE TABLE t (x INTEGER)")

        def dies():
            store.db().conn.execute("BEGIN IMMEDIATE")
            store.db().conn.execute("INSERT INTO t VALUES (1)")

        worker = threading.Thread(target=dies)
        worker.start()
        worker.join()
        assert store.connections() == 2  # reclaimed (rolled back), not leaked
        assert scalar(store.db(), "SELECT count(*) FROM t") == 0
        with write(store.db()) as db:  # and the write lock is free again
            db.execute("INSERT INTO t VALUES (2)")
    finally:
        store.close()


def test_an_abandoned_console_request_stops_its_query(app, client, db, caplog):
    cookie = staff_cookie(client, db)
    store = app.state.store

    def long_page(conn, query, at, tz):
        scalar(conn, LONG_READ)
        raise AssertionError("the read should have been stopped")

    original = admin.customer_search.page
    admin.customer_search.page = long_page
    try:
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="billing.web"):
            status = client.portal.call(lambda: get(app, "/admin/", cookie, gone_after=0.3))
        elapsed = time.monotonic() - started
    finally:
        admin.customer_search.page = original

    assert status == 499
    assert elapsed < 3  # the query alone runs about 12 s
    assert store.reads_stopped == 1
    assert "stopped a read for GET /admin/: the client went away" in caplog.text
    # The thread and its connection serve the next request at once.
    assert client.get("/admin/").status_code == 200


def test_a_write_is_never_stopped_half_way(tmp_path):
    store = Store(tmp_path / "pool.db")
    gone = threading.Event()
    gone.set()
    try:
        db = store.db()
        with stop_reads_when(db, gone):
            with write(db):
                db.execute("CREATE TABLE t (x INTEGER)")
                db.execute("INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                           "WHERE x < 200000) SELECT x FROM c")
        with pytest.raises(ClientGone):  # outside a transaction, a read is stopped
            with stop_reads_when(db, gone):
                scalar(db, "SELECT sum(a.x) FROM t a, t b")
        assert scalar(db, "SELECT count(*) FROM t") == 200000
    finally:
        store.close()


@pytest.mark.parametrize("key, value, message", [
    ("DB_THREADS", "1", "DB_THREADS must be at least 2"),
    ("DB_THREADS", "65", "DB_THREADS must be at most 64"),
    ("DB_THREADS", "eight", "DB_THREADS must be a whole number, not 'eight'"),
    ("DB_CACHE_MB", "0", "DB_CACHE_MB must be at least 1"),
    ("DB_CACHE_MB", "4096", "DB_CACHE_MB must be at most 1024"),
    ("DB_MMAP_MB", "-1", "DB_MMAP_MB must be at least 0"),
])
def test_pool_settings_are_checked(tmp_path, key, value, message):
    with pytest.raises(settings_module.ConfigError, match=message):
        make_settings(tmp_path, **{key: value})


def test_pool_settings_reach_the_connections(tmp_path):
    settings = make_settings(tmp_path, DB_THREADS=5, DB_CACHE_MB=8, DB_MMAP_MB=0)
    assert settings.db_threads == 5
    store = Store(settings.database_path, settings=settings)
    try:
        assert scalar(store.db(), "PRAGMA cache_size") == -8 * 1024
        assert scalar(store.db(), "PRAGMA mmap_size") == 0
    finally:
        store.close()
