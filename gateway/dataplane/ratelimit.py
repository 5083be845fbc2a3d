"""Per-client rate limiting: one token bucket per client, in the gateway's process.

A client (an API key, or a client IP when auth is off) may send `burst` requests at once and
`rps` per second on average: its bucket holds up to `burst` tokens, refills at `rps` tokens a
second, and each request takes one. An empty bucket answers `TooManyRequests` saying how many
whole seconds until the next token. The gateway is one asyncio process, so the buckets need no
lock and the limit is exact (not per worker). The clock is injectable so tests never sleep.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from servers.errors import TooManyRequests

__all__ = ["Clock", "RateLimiter"]

Clock = Callable[[], float]

# Above this many buckets, full ones are dropped (a full bucket is the same as no bucket), so
# memory follows the clients active within the last `burst / rps` seconds, not all ever seen.
# The threshold then doubles past what is left, so pruning stays amortised O(1) per request.
_PRUNE_ABOVE = 10_000


class RateLimiter:
    """Token buckets keyed by client, refilled at `rps` tokens/s up to `burst`."""

    def __init__(self, rps: float, burst: int, clock: Clock = time.monotonic) -> None:
        if rps <= 0 or burst < 1:
            raise ValueError("a rate limit needs rps > 0 and burst >= 1")
        self.rps = rps
        self.burst = burst
        self._clock = clock
        # client -> (tokens left, when that was computed)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._prune_above = _PRUNE_ABOVE

    def acquire(self, client: str) -> None:
        """Take one token from `client`'s bucket; `TooManyRequests` when it is empty."""
        now = self._clock()
        tokens = self._tokens(client, now)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            if len(self._buckets) > self._prune_above:
                self._prune(now)
            return
        self._buckets[client] = (tokens, now)
        retry_after = max(1, math.ceil((1.0 - tokens) / self.rps))
        raise TooManyRequests(
            f"rate limit exceeded ({self.rps:g} requests/s, bursts of {self.burst}); "
            f"retry after {retry_after} s",
            retry_after_s=retry_after,
        )

    def _tokens(self, client: str, now: float) -> float:
        bucket = self._buckets.get(client)
        if bucket is None:
            return float(self.burst)
        tokens, stamp = bucket
        return min(float(self.burst), tokens + max(0.0, now - stamp) * self.rps)

    def _prune(self, now: float) -> None:
        full = [c for c in self._buckets if self._tokens(c, now) >= self.burst]
        for client in full:
            del self._buckets[client]
        self._prune_above = max(_PRUNE_ABOVE, 2 * len(self._buckets))

    def __len__(self) -> int:
        """How many clients have a bucket now."""
        return len(self._buckets)
