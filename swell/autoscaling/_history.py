"""A deployment's recorded traffic: arrivals and mean concurrency per second, bounded.

The control loop records one sample a tick; ``swell advise --deployment`` reads
:meth:`TrafficHistory.as_dict` from the server and replays it in the simulator.
Memory is bounded: a ring of ``retention`` one-second buckets, stored as C
arrays (8 bytes a second: a day is 0.7 MB), grown only as traffic is recorded.

Pure: the time of each sample comes in as an argument.
"""

from __future__ import annotations

import math
from array import array
from typing import Any

__all__ = ["TrafficHistory"]

DEFAULT_RETENTION = 3 * 86400  # seconds: long enough to see a daily peak twice


class TrafficHistory:
    """Per-second buckets ``[t, t + 1)`` of arrivals (a count) and mean concurrency.

    ``record(now, arrivals, concurrency)`` adds ``arrivals`` requests and a
    concurrency sample to the bucket of ``now`` (unix seconds).  Several samples
    in one second add up (arrivals) and average (concurrency); seconds with no
    sample read as 0.  A sample older than the newest bucket is ignored, and
    buckets older than ``retention`` seconds are dropped.
    """

    __slots__ = ("_arrivals", "_concurrency", "_count", "_first", "_head", "_last", "_samples", "retention")

    interval = 1.0

    def __init__(self, retention: int = DEFAULT_RETENTION) -> None:
        if retention < 1:
            raise ValueError(f"retention must be ≥ 1 second (got {retention})")
        self.retention = int(retention)
        self._arrivals = array("l")
        self._concurrency = array("d")  # sum of samples in the bucket
        self._samples = array("l")  # how many samples the bucket's sum holds
        self._head = 0  # ring index of the oldest bucket
        self._count = 0  # buckets held
        self._first = 0  # second of the oldest bucket
        self._last = -1  # second of the newest bucket (-1: none yet)

    def __len__(self) -> int:
        return self._count

    @property
    def start(self) -> int | None:
        """Unix second of the oldest bucket held, or None when empty."""
        return self._first if self._count else None

    def _slot(self, second: int) -> int:
        return (self._head + (second - self._first)) % self.retention

    def _push_empty(self) -> None:
        """Append one zero bucket after the newest, dropping the oldest when full."""
        if self._count < self.retention:
            if len(self._arrivals) < self.retention:
                self._arrivals.append(0)
                self._concurrency.append(0.0)
                self._samples.append(0)
            else:
                i = self._slot(self._first + self._count)
                self._arrivals[i] = 0
                self._concurrency[i] = 0.0
                self._samples[i] = 0
            self._count += 1
            return
        i = self._head
        self._arrivals[i] = 0
        self._concurrency[i] = 0.0
        self._samples[i] = 0
        self._head = (self._head + 1) % self.retention
        self._first += 1

    def record(self, now: float, arrivals: int, concurrency: float) -> None:
        if arrivals < 0 or concurrency < 0 or not math.isfinite(concurrency):
            raise ValueError(f"arrivals and concurrency must be ≥ 0 (got {arrivals}, {concurrency})")
        second = math.floor(now)
        if self._count == 0:
            self._first = self._last = second
            self._head = 0
            self._arrivals = array("l", [0])
            self._concurrency = array("d", [0.0])
            self._samples = array("l", [0])
            self._count = 1
        elif second < self._last:
            return  # time only moves on
        elif second > self._last:
            gap = second - self._last
            if gap >= self.retention:
                # Everything held is older than the retention: start afresh.
                self._count = 0
                self.record(now, arrivals, concurrency)
                return
            for _ in range(gap):
                self._push_empty()
            self._last = second
        i = self._slot(second)
        self._arrivals[i] += int(arrivals)
        self._concurrency[i] += float(concurrency)
        self._samples[i] += 1

    def as_dict(self) -> dict[str, Any]:
        """``{"start", "interval", "arrivals", "concurrency"}``, oldest bucket first."""
        arrivals: list[int] = []
        concurrency: list[float] = []
        for k in range(self._count):
            i = (self._head + k) % self.retention
            arrivals.append(self._arrivals[i])
            n = self._samples[i]
            concurrency.append(round(self._concurrency[i] / n, 3) if n else 0.0)
        return {
            "start": self._first if self._count else None,
            "interval": self.interval,
            "arrivals": arrivals,
            "concurrency": concurrency,
        }
