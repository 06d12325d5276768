"""Group commit for PayTR callbacks, and WAL checkpoints off the request path.

Every callback must be durably committed (synchronous=FULL) before we answer
`OK`. One fsync per callback would cap throughput at the disk's sync rate, so
callbacks are committed in batches: whatever arrived while the previous commit
was being fsynced (and whatever the event loop has already received) is applied
together and committed once. Each waiting request learns its outcome only after
its batch's COMMIT returned.

The pipeline lives on the event loop: applying a batch is short CPU work done
right there (no thread hand-off, no GIL ping-pong), while BEGIN and COMMIT, the
calls that may wait on a lock or the disk, run on one dedicated thread. The
connection is only ever used by one of the two at a time.

The checkpointer moves WAL pages into the database file in the background, so
no callback pays for a checkpoint while PayTR waits for its answer.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from billing import payments
from billing.db import BUSY_TIMEOUT_MS, Store, connect, rolled_back, run_after_commit, run_before_commit, write
from billing.ops import metrics
from billing.paytr.protocol import Callback
from billing.settings import Settings

log = logging.getLogger("billing.callbacks")

BATCH_MAX = 256
GATHER_YIELDS = 32


@dataclass
class _Job:
    callback: Callback
    remote_addr: str
    future: asyncio.Future


class CallbackWriter:
    def __init__(self, store: Store, settings: Settings, clock):
        self.store = store
        self.settings = settings
        self.clock = clock
        self.pending: list[_Job] = []
        self.draining = False
        self.last_active = 0.0
        self.executor: ThreadPoolExecutor | None = None
        self.db = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="callback-commit")
        # Its own connection; BEGIN/COMMIT run on the executor, the statements on the loop.
        self.db = connect(self.store.path, autocheckpoint=self.store.autocheckpoint)
        self.db.store = self.store

    async def stop(self) -> None:
        while self.draining or self.pending:
            await asyncio.sleep(0.01)
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None
        if self.db is not None:
            self.db.close()
            self.db = None

    async def apply(self, callback: Callback, remote_addr: str = "") -> str:
        """Apply a verified callback; returns its outcome once it is committed."""
        future = asyncio.get_running_loop().create_future()
        self.pending.append(_Job(callback, remote_addr, future))
        if not self.draining:
            self.draining = True
            self._task = asyncio.get_running_loop().create_task(self._drain())  # keep a reference
        return await future

    def recently_active(self, seconds: float = 0.5) -> bool:
        return time.monotonic() - self.last_active < seconds

    async def _drain(self) -> None:
        try:
            while self.pending:
                await self._gather()
                batch, self.pending = self.pending[:BATCH_MAX], self.pending[BATCH_MAX:]
                self.last_active = time.monotonic()
                await self._commit(batch)
        finally:
            self.draining = False

    async def _gather(self) -> None:
        """Let requests the event loop has already received join this batch: yield while
        more keep arriving. One bigger commit beats two that wait on each other."""
        for _ in range(GATHER_YIELDS):
            waiting = len(self.pending)
            await asyncio.sleep(0)
            if len(self.pending) == waiting:
                return

    async def _on_thread(self, sql: str) -> None:
        await asyncio.get_running_loop().run_in_executor(self.executor, self.db.conn.execute, sql)

    async def _begin(self) -> None:
        """BEGIN IMMEDIATE right here when the write lock is free (almost always);
        otherwise wait for it on the thread, never on the event loop."""
        conn = self.db.conn
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            await self._on_thread("BEGIN IMMEDIATE")
        else:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    async def _commit(self, batch: list[_Job]) -> None:
        """One transaction, one fsync, for the batch. If a callback raises, the batch is
        rolled back and each is applied alone, so one bad callback cannot sink the others."""
        db, now = self.db, self.clock.now()
        started = time.perf_counter()
        metrics.BATCH_SIZE.observe(len(batch))
        try:
            await self._begin()
            try:
                results = [(job, payments.apply_callback_in(db, now, self.settings, job.callback, job.remote_addr),
                            None) for job in batch]
                run_before_commit(db)
                await self._on_thread("COMMIT")
            except BaseException:
                if db.conn.in_transaction:
                    db.conn.execute("ROLLBACK")
                rolled_back(db)
                raise
        except Exception:
            log.warning("a batch of %d callbacks failed; applying them one by one", len(batch), exc_info=True)
            results = []
            for job in batch:
                try:
                    outcome = await asyncio.get_running_loop().run_in_executor(
                        self.executor, self._apply_alone, job, now)
                    results.append((job, outcome, None))
                except Exception as exc:  # not committed: this request answers an error, PayTR retries
                    log.exception("applying callback %s failed", job.callback.merchant_oid)
                    results.append((job, None, exc))
        run_after_commit(db)  # wake the mail sender for what this batch queued
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
        for job, outcome, error in results:
            metrics.CALLBACKS.labels(outcome if error is None else "error").inc()
            if job.future.done():  # the request went away (client disconnected)
                continue
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(outcome)

    def _apply_alone(self, job: _Job, now) -> str:
        with write(self.db):
            return payments.apply_callback_in(self.db, now, self.settings, job.callback, job.remote_addr)


class Checkpointer:
    """Runs PASSIVE WAL checkpoints every `interval` seconds on its own connection."""

    def __init__(self, store: Store, interval: float = 1.0):
        self.store = store
        self.interval = interval
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="wal-checkpointer", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
            self.thread = None

    def _run(self) -> None:
        db = self.store.db()
        while not self.stopping.wait(self.interval):
            try:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception:  # a busy database is fine; try again next interval
                log.debug("checkpoint skipped", exc_info=True)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception:
            log.debug("final checkpoint skipped", exc_info=True)
