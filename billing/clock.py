"""The only source of "now", and the one storage format for instants.

Instants are stored as UTC ISO-8601 strings with a `Z` (`2026-11-27T09:00:00Z`),
which sort correctly as text. Outside production a test clock can move the
app's "now" forward (like Stripe's test clocks); the offset lives in the
database so the CLI and the running server agree.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from billing.i18n import gettext as _, ngettext

def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@lru_cache(maxsize=4096)
def iso(dt: datetime) -> str:
    # Cached: one write formats the same few instants (its `now` above all) many times over.
    if dt.tzinfo is None:
        raise ValueError("naive datetime: every instant must carry UTC")
    if dt.tzinfo is not UTC:
        dt = dt.astimezone(UTC)
    # isoformat is several times faster than strftime, and this runs on every write
    return dt.replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def parse(value: str) -> datetime:
    """Parse a stored instant, or an operator's `--at` value (any ISO form with a zone)."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone; add Z for UTC")
    return dt.astimezone(UTC)


_DURATION = re.compile(r"\s*([0-9]{1,30})\s*([dhm])\s*")  # ASCII digits: \d would take '٨'
# A test clock moves weeks or months; ten years per step and a century in all keep far
# from datetime's year 9999, so adding the offset to "now" can never overflow.
MAX_STEP = timedelta(days=3660)
MAX_OFFSET = timedelta(days=36525)


def parse_duration(value: str) -> timedelta:
    """`8d`, `36h`, `90m` -> timedelta (the test clock's step), at most MAX_STEP."""
    match = _DURATION.fullmatch(str(value or "").lower())
    if not match:
        raise ValueError(_("%(value)s is not a duration like 8d, 36h or 90m.", value=repr(str(value)[:40])))
    minutes = int(match.group(1)) * {"d": 1440, "h": 60, "m": 1}[match.group(2)]
    if minutes > MAX_STEP // timedelta(minutes=1):  # compared as integers: timedelta itself would overflow
        raise ValueError(ngettext("%(value)s is too far: at most %(num)d day at a time.",
                                  "%(value)s is too far: at most %(num)d days at a time.", MAX_STEP.days,
                                  value=repr(str(value)[:40])))
    return timedelta(minutes=minutes)


class Clock:
    """Real UTC time, shifted by the test clock's offset when one is set."""

    CACHE_SECONDS = 1.0  # the CLI may move the test clock; the server sees it within a second

    def __init__(self, offset_loader=None):
        # offset_loader() -> timedelta; None in production (no test clock there).
        self._offset_loader = offset_loader
        self._cached: tuple[float, timedelta] | None = None

    def offset(self) -> timedelta:
        if self._offset_loader is None:
            return timedelta(0)
        now = time.monotonic()
        if self._cached is None or self._cached[0] < now:
            self._cached = (now + self.CACHE_SECONDS, self._offset_loader())
        return self._cached[1]

    def forget(self) -> None:
        """Read the offset again on the next call (after this process changed it)."""
        self._cached = None

    def now(self) -> datetime:
        return utcnow() + self.offset()

    def real_now(self) -> datetime:
        """Wall-clock time, for logins: the test clock simulates billing, not a browser's session."""
        return utcnow()


class FixedClock(Clock):
    """A clock that says what it is told; for tests and `jobs run --at`."""

    def __init__(self, at: datetime):
        super().__init__()
        self.at = at

    def now(self) -> datetime:
        return self.at

    def real_now(self) -> datetime:
        return self.at

    def advance(self, delta: timedelta) -> None:
        self.at += delta


# --- the test clock's offset, kept in the database so every process agrees ----------------

OFFSET_KEY = "test_clock_offset_seconds"


def load_offset(db) -> timedelta:
    row = db.conn.execute("SELECT value FROM app_state WHERE key = ?", [OFFSET_KEY]).fetchone()
    return timedelta(seconds=int(row[0])) if row else timedelta(0)


def save_offset(db, offset: timedelta) -> None:
    from billing.db import write

    seconds = int(offset.total_seconds())
    if seconds < 0:
        raise ValueError(_("The test clock only moves forward; reset it to go back to real time."))
    if offset > MAX_OFFSET:
        raise ValueError(ngettext("The test clock goes at most %(num)d year ahead; reset it first.",
                                  "The test clock goes at most %(num)d years ahead; reset it first.",
                                  MAX_OFFSET.days // 365))
    with write(db):
        if seconds:
            db.conn.execute("INSERT INTO app_state (key, value) VALUES (?, ?) "
                            "ON CONFLICT (key) DO UPDATE SET value = excluded.value", [OFFSET_KEY, str(seconds)])
        else:
            db.conn.execute("DELETE FROM app_state WHERE key = ?", [OFFSET_KEY])
