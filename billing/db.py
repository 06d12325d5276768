"""SQLite connections and the write-transaction helper.

Each thread uses one connection at a time (sqlite3 connections must not be shared
by threads running at once), leased from a pool: when a thread ends, its connection
goes back to the pool for the next thread instead of staying open with its page
cache (see `Store`). Writes that change money or subscription state go
through `write()`, which takes the write lock up front with BEGIN IMMEDIATE, so
a transaction never fails half-way on a lock upgrade.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlite_utils import Database

BUSY_TIMEOUT_MS = 10_000


def make_private(directory: str | Path) -> None:
    """The data directory readable by this user only: itself 0700, what is in it 0600 (0700 for
    directories), two levels deep (`mail/*.eml`).

    It holds the database, the secret key, captured mail and the emulator's saved cards.
    Modes are only ever tightened (group and other bits dropped), so an operator's stricter
    choice stays. Symlinks are left alone (chmod would follow them out of here), and so is a
    shared sticky directory such as /tmp, should BILLING_DATA_DIR point at one.
    """
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if directory.stat().st_mode & stat.S_ISVTX:
        return
    _tighten(directory)
    with os.scandir(directory) as entries:
        for entry in entries:
            _tighten(entry.path)
            if entry.is_dir(follow_symlinks=False):
                with os.scandir(entry.path) as inner:
                    for item in inner:
                        _tighten(item.path)


def _tighten(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):  # the mail sender renames its files as it goes
        mode = os.lstat(path).st_mode
        if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & 0o077:
            os.chmod(path, stat.S_IMODE(mode) & ~0o077)


def create_private(path: str | Path) -> None:
    """Create the file as 0600 if it is missing. SQLite gives its -wal and -shm files the
    database file's mode, so creating the database this way keeps all three private.

    An existing file is not opened: closing any descriptor of a file drops every POSIX lock this
    process holds on it, SQLite's included, so a second Store made beside open connections (a
    test's, a backup's) would let another process delete the WAL under them and corrupt the file."""
    if os.path.exists(path):
        return
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))


# Per connection; the app passes its DB_CACHE_MB / DB_MMAP_MB settings (docs/scaling.md, "Memory").
CACHE_MB = 16  # private memory: each connection's page cache, allocated as used, kept until closed
MMAP_MB = 0  # off: mapped file pages are shared OS cache, yet RSS counts them once per connection

# A long read is checked for a client that went away every this many SQLite VM steps
# (about a millisecond of work): often enough to stop promptly, rarely enough to cost nothing.
PROGRESS_STEPS = 20_000


def connect(path: str | Path, autocheckpoint: bool = True, cache_mb: int = CACHE_MB,
            mmap_mb: int = MMAP_MB) -> Database:
    conn = sqlite3.connect(
        str(path),
        isolation_level=None,  # we issue BEGIN ourselves; no implicit transactions
        timeout=BUSY_TIMEOUT_MS / 1000,
        check_same_thread=False,  # used by one thread at a time; closed by the store
    )
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit we acknowledge to PayTR must survive a power cut.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # Keep hot pages in memory: a callback touches rows scattered across large tables. The cache
    # is private to this connection, so the pool's size times this is the most it can take.
    conn.execute(f"PRAGMA cache_size=-{int(cache_mb) * 1024}")
    # Reads straight from the OS page cache. The mapped pages are the kernel's shared file
    # cache (counted once in memory, though RSS counts them again for every connection that
    # touched them); 0 turns it off.
    conn.execute(f"PRAGMA mmap_size={int(mmap_mb) * 1024 * 1024}")
    conn.execute("PRAGMA temp_store=MEMORY")
    from billing.i18n import search_fold  # staff search: Turkish letters compared without case

    conn.create_function("fold", 1, search_fold, deterministic=True)
    if not autocheckpoint:
        # A background Checkpointer does it, so no commit pays for a checkpoint.
        conn.execute("PRAGMA wal_autocheckpoint=0")
    db = Database(conn, execute_plugins=False)
    db.after_commit = []  # callables run once the current write has committed
    db.before_commit = []  # callables run just before the outermost COMMIT, inside the transaction
    db.staged = []  # what this transaction's changes announce (see `staged`), dropped with a rollback
    return db


class Store:
    """Leases connections to one database file, one per thread at a time.

    A thread keeps its connection while it lives (the callback writer, the checkpointer and the
    event loop's own thread for their whole life; anyio's worker threads until they have been idle
    for 10 s). When a thread has ended its connection is reclaimed, reset and handed to the next
    thread that asks, so the number of open connections, and with them their private page
    caches, is bounded by the number of threads alive at once (the app bounds those: DB_THREADS).
    Connections beyond `max_idle` spare ones are closed.
    """

    def __init__(self, path: str | Path, autocheckpoint: bool = True, settings=None, max_idle: int | None = None):
        self.path = Path(path)
        # What code far from a request needs to describe a change (webhook snapshots name URLs
        # and grace days); None: loaded from the environment when first needed.
        self.settings = settings
        self.autocheckpoint = autocheckpoint
        self.cache_mb = getattr(settings, "db_cache_mb", CACHE_MB)
        self.mmap_mb = getattr(settings, "db_mmap_mb", MMAP_MB)
        # Spares kept warm for the next worker thread: as many as the pool may need at once.
        self.max_idle = max_idle if max_idle is not None else getattr(settings, "db_threads", 4)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        create_private(self.path)
        for suffix in ("", "-wal", "-shm"):  # made by an older version, or copied in
            _tighten(f"{self.path}{suffix}")
        self._local = threading.local()
        self._leased: dict[Database, threading.Thread] = {}  # connection -> the thread using it
        self._idle: list[Database] = []
        self._lock = threading.Lock()
        self.opened = 0  # connections ever opened (tests and the memory benchmark read these)
        self.peak = 0  # most connections open at once
        self.reads_stopped = 0  # reads stopped because the client had gone (see stop_reads_when)
        # Set by the app to wake the mail sender once an email row is committed.
        self.wake_mailer: Callable[[], None] = lambda: None
        # Set by the app to wake the webhook sender once a webhook message is committed.
        self.wake_webhooks: Callable[[], None] = lambda: None

    def db(self) -> Database:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._lease(threading.current_thread())
            self._local.db = db
        return db

    def _lease(self, thread: threading.Thread) -> Database:
        with self._lock:
            self._reclaim()
            db = self._idle.pop() if self._idle else None
            if db is not None:
                self._leased[db] = thread
                return db
        db = connect(self.path, self.autocheckpoint, self.cache_mb, self.mmap_mb)
        db.store = self
        with self._lock:
            self._leased[db] = thread
            self.opened += 1
            self.peak = max(self.peak, len(self._leased) + len(self._idle))
        return db

    def _reclaim(self) -> None:
        """Connections of threads that have ended go back to the pool (caller holds the lock)."""
        for db, thread in list(self._leased.items()):
            if thread.is_alive():
                continue
            del self._leased[db]
            try:
                if db.conn.in_transaction:  # the thread died mid-write: nothing of it may stay
                    db.conn.execute("ROLLBACK")
                db.conn.set_progress_handler(None, 0)
            except sqlite3.Error:
                db.close()
                continue
            db.after_commit, db.before_commit, db.staged = [], [], []
            if len(self._idle) < self.max_idle:
                self._idle.append(db)
            else:
                with contextlib.suppress(sqlite3.Error):
                    db.close()

    def connections(self) -> int:
        """How many connections are open now (in use by a live thread, or spare)."""
        with self._lock:
            self._reclaim()
            return len(self._leased) + len(self._idle)

    def close(self) -> None:
        with self._lock:
            for db in [*self._leased, *self._idle]:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            self._leased.clear()
            self._idle.clear()
        self._local = threading.local()


class ClientGone(Exception):
    """A read was stopped because the client it was for had gone away."""


@contextlib.contextmanager
def stop_reads_when(db: Database, gone: threading.Event) -> Iterator[None]:
    """While this is open, a query on `db` stops (ClientGone) once `gone` is set.

    Only reads are stopped: a write's transaction runs to its COMMIT (stopping it would be safe,
    it rolls back, but work the client asked for should not depend on whether they waited)."""
    conn = db.conn

    def check() -> int:
        return 1 if gone.is_set() and not conn.in_transaction else 0

    conn.set_progress_handler(check, PROGRESS_STEPS)
    try:
        yield
    except sqlite3.OperationalError as exc:
        if gone.is_set() and "interrupted" in str(exc):
            store = getattr(db, "store", None)
            if store is not None:
                with store._lock:
                    store.reads_stopped += 1
            raise ClientGone() from exc
        raise
    finally:
        conn.set_progress_handler(None, 0)


@contextlib.contextmanager
def write(db: Database) -> Iterator[Database]:
    """One BEGIN IMMEDIATE transaction; nested calls become savepoints.

    Hooks queued in `db.after_commit` (waking the mail sender, say) run only
    after the outermost COMMIT, so a rolled-back change triggers nothing. Hooks in
    `db.before_commit` run just before it, inside the transaction, when the data is final
    (webhook events snapshot it there). What a rolled-back savepoint staged is dropped with it.
    """
    conn = db.conn
    if conn.in_transaction:
        name = f"sp_{secrets.token_hex(6)}"
        items = staged(db)
        mark = len(items)
        conn.execute(f"SAVEPOINT {name}")
        try:
            yield db
        except BaseException:
            conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
            conn.execute(f"RELEASE SAVEPOINT {name}")
            del items[mark:]
            raise
        conn.execute(f"RELEASE SAVEPOINT {name}")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
        run_before_commit(db)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        rolled_back(db)
        raise
    conn.execute("COMMIT")
    run_after_commit(db)


def staged(db: Database) -> list:
    """Items the current transaction's changes leave for its before-commit hooks."""
    if not hasattr(db, "staged"):
        db.staged = []
    return db.staged


def before_commit(db: Database, hook: Callable[[Database], None]) -> None:
    """Run `hook(db)` just before the current transaction's outermost COMMIT, inside it."""
    if not hasattr(db, "before_commit"):
        db.before_commit = []
    if hook not in db.before_commit:
        db.before_commit.append(hook)


def run_before_commit(db: Database) -> None:
    hooks = getattr(db, "before_commit", None)
    while hooks:
        hooks.pop(0)(db)
    staged(db).clear()


def rolled_back(db: Database) -> None:
    """The transaction was rolled back: nothing it queued may run."""
    _after_commit(db).clear()
    if hasattr(db, "before_commit"):
        db.before_commit.clear()
    staged(db).clear()


def _after_commit(db: Database) -> list:
    if not hasattr(db, "after_commit"):
        db.after_commit = []
    return db.after_commit


def on_commit(db: Database, hook: Callable[[], None]) -> None:
    """Run `hook` after the current transaction commits (now, if none is open)."""
    hooks = _after_commit(db)
    if hook not in hooks:
        hooks.append(hook)
    if not db.conn.in_transaction:
        run_after_commit(db)


def run_after_commit(db: Database) -> None:
    hooks = _after_commit(db)
    while hooks:
        hooks.pop(0)()


# Reads go straight to the sqlite3 connection: these helpers are on the callback's hot path.


def one(db: Database, sql: str, params: Any = ()) -> dict | None:
    cursor = db.conn.execute(sql, params)
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([c[0] for c in cursor.description], row))


def rows(db: Database, sql: str, params: Any = ()) -> list[dict]:
    cursor = db.conn.execute(sql, params)
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def scalar(db: Database, sql: str, params: Any = ()) -> Any:
    row = db.conn.execute(sql, params).fetchone()
    return None if row is None else row[0]
