"""A token bucket per API key, in this process's memory.

Each key may send `rate` requests a second on average and `burst` at once. Kept in memory
on purpose: a limit that costs a database write per request would be the bottleneck it is
meant to prevent. With several processes each one allows the figure on its own.
"""

from __future__ import annotations

import math
import threading
import time


class TokenBuckets:
    def __init__(self, rate: float, burst: int, monotonic=time.monotonic):
        self.rate = float(rate)
        self.burst = float(burst)
        self.monotonic = monotonic
        self._buckets: dict[int, tuple[float, float]] = {}  # key id -> (tokens, when counted)
        self._lock = threading.Lock()

    def take(self, key_id: int) -> float:
        """Spend a token for this key: 0.0 when allowed, else the seconds until one is free."""
        now = self.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(key_id, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens >= 1.0:
                self._buckets[key_id] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key_id] = (tokens, now)
            return (1.0 - tokens) / self.rate


def retry_after(wait: float) -> str:
    """Retry-After takes whole seconds; round up so a client that obeys it is let in."""
    return str(max(1, math.ceil(wait)))
