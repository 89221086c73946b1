"""Concurrency history as a piecewise-constant signal with a running integral.

A sample ``(t, average)`` says "the mean concurrency over ``(previous t, t]``
was ``average``".  The live router derives these from its running integral of
concurrency; the simulator from its exact event history.  Keeping the
cumulative integral at every sample makes the windowed mean O(log n) however
long the window, which matters to the simulator (a 3600 s window over a day).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque


class ConcurrencyWindow:
    """Samples of concurrency since ``start``, kept for ``retention`` seconds."""

    __slots__ = ("_cum", "_times", "_values", "retention", "start")

    def __init__(self, start: float, retention: float = 3600.0) -> None:
        self.start = start
        self.retention = retention
        # _times[i] is the end of interval i; _cum[i] the integral from an
        # arbitrary origin up to _times[i].  The first entry is the origin.
        self._times: deque[float] = deque([start])
        self._cum: deque[float] = deque([0.0])
        self._values: deque[float] = deque([0.0])

    @property
    def last_time(self) -> float:
        return self._times[-1]

    @property
    def last_value(self) -> float:
        return self._values[-1]

    def __len__(self) -> int:
        return len(self._times) - 1

    def record(self, t: float, average: float) -> None:
        """Add the mean concurrency over ``(last_time, t]``.

        A sample at or before the last one is ignored: time only moves on.
        """
        times = self._times
        last = times[-1]
        if t <= last:
            return
        if average < 0:
            raise ValueError(f"concurrency cannot be negative (got {average})")
        times.append(t)
        cum = self._cum
        cum.append(cum[-1] + average * (t - last))
        self._values.append(average)
        horizon = t - self.retention
        # Keep one point at or before the horizon so the integral there is known.
        while len(times) > 2 and times[1] <= horizon:
            times.popleft()
            cum.popleft()
            self._values.popleft()

    def _integral_at(self, t: float) -> float:
        times = self._times
        if t <= times[0]:
            return self._cum[0]
        if t >= times[-1]:
            return self._cum[-1]
        return self._inside(t)

    def _inside(self, t: float) -> float:
        """The integral at ``t`` strictly between the first and the last sample."""
        times = self._times
        i = bisect_right(times, t)  # times[i-1] <= t < times[i]
        return self._cum[i - 1] + self._values[i] * (t - times[i - 1])

    def mean(self, now: float, window: float) -> float:
        """Time-weighted mean over ``[now - window, now]``.

        Only time that samples cover counts: before the first sample, or past
        the last one, nothing is known, so it neither raises nor lowers the mean.
        """
        # Branches written out (the simulator asks a few times per simulated second):
        # the arithmetic of max(now - window, first), min(now, last) and _integral_at.
        times = self._times
        first, last = times[0], times[-1]
        lo = now - window
        if lo < first:
            lo = first
        hi = now if now < last else last
        if hi <= lo:
            return 0.0
        top = self._cum[-1] if hi >= last else self._inside(hi)
        bottom = self._cum[0] if lo <= first else self._inside(lo)
        value = (top - bottom) / (hi - lo)
        return value if value > 0.0 else 0.0
