"""One outbox mechanism for both channels (email and webhooks): rows written in the change's
transaction, claimed with a lease, sent, and their outcome recorded one by one.

A channel's table has `status` ('pending', 'sent', 'failed'), `attempts`, `next_attempt_at`,
`claimed_until`, `last_error` and `sent_at`. `claim` leases due rows to one sender (two senders
never send a row at once; a sender that dies gives its rows back when the lease runs out) and
counts the attempt; `sent` and `failed` record what happened; `next_due` tells a sender when
to wake. The channel decides what "send" means and how long to back off.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlite_utils import Database

from billing import clock
from billing.db import one, rows, write


@dataclass(frozen=True)
class Outbox:
    table: str
    lease: timedelta
    # The partial index of pending rows, named in every query of them: without statistics SQLite
    # chose webhook_messages (endpoint_id, id) for `next_due`, reading all 1.3 million of an
    # endpoint's messages (225 ms, on every sender wake-up and every scrape) to find none pending.
    pending_index: str

    def claim(self, db: Database, now: datetime, limit: int, where: str = "", params: list | tuple = ()) -> list[dict]:
        """Lease up to `limit` due rows (`where`: the channel's own narrowing, an endpoint say)."""
        narrowing = f"AND {where}" if where else ""
        with write(db):
            claimed = rows(
                db,
                f"""UPDATE {self.table} SET claimed_until = ?, attempts = attempts + 1
                    WHERE id IN (
                        SELECT id FROM {self.table} INDEXED BY {self.pending_index}
                        WHERE status = 'pending' AND next_attempt_at <= ? {narrowing}
                          AND (claimed_until IS NULL OR claimed_until <= ?)
                        ORDER BY next_attempt_at, id LIMIT ?)
                    RETURNING *""",
                [clock.iso(now + self.lease), clock.iso(now), *params, clock.iso(now), limit],
            )
        return sorted(claimed, key=lambda r: r["id"])

    def sent(self, db: Database, now: datetime, row_id: int, **columns) -> None:
        """Call inside a write: the row went out; `columns` keep what the channel made of it."""
        extra = "".join(f", {name} = ?" for name in columns)
        db.conn.execute(
            f"UPDATE {self.table} SET status = 'sent', sent_at = ?, claimed_until = NULL, last_error = NULL{extra} "
            "WHERE id = ?", [clock.iso(now), *columns.values(), row_id])

    def failed(self, db: Database, row_id: int, error: str, *, next_at: datetime, final: bool = False) -> None:
        """Call inside a write: try again at `next_at`, or (final) give up on this row."""
        db.conn.execute(
            f"UPDATE {self.table} SET status = ?, next_attempt_at = ?, claimed_until = NULL, last_error = ? "
            "WHERE id = ?", ["failed" if final else "pending", clock.iso(next_at), error[:500], row_id])

    def retry_now(self, db: Database, now: datetime, where: str = "", params: list | tuple = ()) -> int:
        """Make every pending row due now (its back-off is cut short)."""
        narrowing = f"AND {where}" if where else ""
        with write(db):
            return db.conn.execute(
                f"UPDATE {self.table} INDEXED BY {self.pending_index} SET next_attempt_at = ? "
                "WHERE status = 'pending' AND next_attempt_at > ? "
                f"{narrowing}", [clock.iso(now), clock.iso(now), *params]).rowcount

    def next_due(self, db: Database, where: str = "", params: list | tuple = ()) -> datetime | None:
        """When the next pending row may be sent: its back-off over and no one else's lease on it."""
        narrowing = f"AND {where}" if where else ""
        row = one(db, f"""SELECT min(CASE WHEN claimed_until > next_attempt_at THEN claimed_until
                                         ELSE next_attempt_at END) AS at
                          FROM {self.table} INDEXED BY {self.pending_index}
                          WHERE status = 'pending' {narrowing}""", params)
        return clock.parse(row["at"]) if row and row["at"] else None

    def leased(self, db: Database, now: datetime) -> int:
        """Pending rows another sender is working on right now (their lease has not run out)."""
        return one(db, f"SELECT count(*) AS n FROM {self.table} INDEXED BY {self.pending_index} "
                       "WHERE status = 'pending' AND claimed_until > ?",
                   [clock.iso(now)])["n"]


def backoff(schedule: tuple[timedelta, ...], then: timedelta, attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed try: the schedule's step, then `then` for ever."""
    return schedule[attempts - 1] if 0 < attempts <= len(schedule) else then
