"""Per-client limits on requests that name no live API key.

A client (its address) that keeps sending unknown or revoked keys spends the
server's CPU on hashing and fills its log; past a burst it is answered ``429``
with ``Retry-After`` and its keys are not checked at all until its budget
refills (a token bucket per address: ``burst`` failures at once, ``rate`` more
a second). A header the server has already accepted is still let through, so
a real caller behind the same address (a NAT, a proxy) keeps working while a
guesser is held off. Pure: time comes in as ``now``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["FailureThrottle"]


@dataclass
class _Bucket:
    tokens: float
    at: float


class FailureThrottle:
    """Token buckets of failed authentications, by client address."""

    def __init__(self, *, burst: int = 20, rate: float = 1.0, max_clients: int = 10_000) -> None:
        if burst < 1 or rate <= 0:
            raise ValueError("burst must be >= 1 and rate > 0")
        self.burst = burst
        self.rate = rate
        self.max_clients = max_clients
        self._buckets: dict[str, _Bucket] = {}
        self.refused = 0  # requests answered 429 without a key check

    def _refill(self, bucket: _Bucket, now: float) -> None:
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now

    def retry_after(self, client: str, now: float) -> int | None:
        """Whole seconds until ``client`` may try a key again, or None when it may now."""
        bucket = self._buckets.get(client)
        if bucket is None:
            return None
        self._refill(bucket, now)
        if bucket.tokens >= 1:
            if bucket.tokens >= self.burst:
                del self._buckets[client]  # full again: forget it
            return None
        return max(1, math.ceil((1 - bucket.tokens) / self.rate))

    def failed(self, client: str, now: float) -> None:
        """``client`` sent a key that named nothing: spend one token."""
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._forget_full(now)
            bucket = self._buckets[client] = _Bucket(float(self.burst), now)
        self._refill(bucket, now)
        bucket.tokens = max(0.0, bucket.tokens - 1)

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled; if none has, the oldest (memory stays bounded)."""
        for client, bucket in list(self._buckets.items()):
            self._refill(bucket, now)
            if bucket.tokens >= self.burst:
                del self._buckets[client]
        if len(self._buckets) >= self.max_clients:
            del self._buckets[next(iter(self._buckets))]
