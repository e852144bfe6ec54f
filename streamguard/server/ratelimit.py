"""Per-client request rate: a token bucket per client IP.

Why: every request costs the event loop something (GET /streams serialises every
stream; a WHIP offer gathers ICE candidates), and one client looping on them would
starve the pipeline that shares the loop. A bucket holds `burst` requests and refills
at `rate` per second; an empty one answers 429 with Retry-After saying when the next
request is allowed. Buckets that have refilled are dropped, so a spray of source
addresses cannot grow the table without bound. Behind a reverse proxy every client
shares the proxy's address: rate-limit there instead (`http.rate_per_client: 0`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

MAX_CLIENTS = 10_000  # buckets kept before the full ones are swept out


class TokenBuckets:
    """One bucket per key; `take(key)` is 0.0 when allowed, else the seconds until it would be."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when counted)

    def take(self, key: str) -> float:
        now = self.clock()
        tokens, then = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
        if len(self._buckets) >= MAX_CLIENTS and key not in self._buckets:
            self._sweep(now)
        self._buckets[key] = (tokens - 1.0, now)
        return 0.0

    def _sweep(self, now: float) -> None:
        """Forget buckets that are full again (they behave exactly like a new one)."""
        self._buckets = {k: (t, w) for k, (t, w) in self._buckets.items() if t + (now - w) * self.rate < self.burst}

    def retry_after(self, wait: float) -> str:
        """A Retry-After header value: whole seconds, at least 1."""
        return str(max(1, math.ceil(wait)))
