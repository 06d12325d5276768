"""The only source of "now", and the one storage format for instants.

Instants are stored as UTC ISO-8601 strings with a `Z` (`2026-11-27T09:00:00Z`),
which sort correctly as text.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(dt: datetime) -> str:
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


_DURATION = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")


def parse_duration(value: str) -> timedelta:
    """`8d`, `36h`, `90m` -> timedelta (the test clock's step)."""
    match = _DURATION.match(value.lower())
    if not match:
        raise ValueError(f"{value!r} is not a duration like 8d, 36h or 90m")
    amount, unit = int(match.group(1)), match.group(2)
    return {"d": timedelta(days=amount), "h": timedelta(hours=amount), "m": timedelta(minutes=amount)}[unit]


class Clock:
    """Real UTC time (the autopilot issue adds a test clock's offset)."""

    def now(self) -> datetime:
        return utcnow()


class FixedClock(Clock):
    """A clock that says what it is told; for tests and `jobs run --at`."""

    def __init__(self, at: datetime):
        super().__init__()
        self.at = at

    def now(self) -> datetime:
        return self.at

    def advance(self, delta: timedelta) -> None:
        self.at += delta

