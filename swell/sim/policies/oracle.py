"""The clairvoyant oracle: a lower bound no real autoscaler can beat.

It knows every arrival and service time in advance.  Its demand is the
concurrency the trace would have if no request ever waited (each served from
its arrival), in replicas: ceil(concurrency / predict_concurrency), at full
capacity, no utilisation headroom.  At each tick it asks for the most replicas
that demand needs from now until one cold start (and one tick) ahead, so a
replica starts exactly one cold start before its first request and is drained
as soon as the demand ahead no longer needs it (it stops when idle); never
below the replicas that the requests really in the system need, so a queue
that builds at ``max_replica`` is still served.  With a
random cold start it plans for the distribution's 99th percentile.

Source: the clairvoyant baseline of the autoscaling literature, e.g. the
"oracle" policy of Shahrad et al., "Serverless in the Wild" (USENIX ATC 2020),
which knows each function's next invocation.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from swell.sim.policies._base import INF, Plan, Policy, PolicyContext, View


class OraclePolicy(Policy):
    name = "oracle"
    lookback = 10.0

    def __init__(self, context: PolicyContext) -> None:
        super().__init__(context)
        self.lead_time = context.cold_start.nominal
        self._targets: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._changes: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._start = 0.0
        self._tick = 1.0

    def prepare(self, plan: Plan) -> None:
        self._start, self._tick = plan.start, plan.tick
        demand = _bucket_max_concurrency(plan.arrivals, plan.service, plan.start, plan.tick)
        pc = self.context.predict_concurrency
        needed = -(-demand // pc)  # ceil
        ahead = int(math.ceil(self.lead_time / plan.tick - 1e-9)) + 1
        padded = np.concatenate([needed, np.zeros(ahead - 1, dtype=needed.dtype)])
        if padded.shape[0] >= ahead:
            targets = np.lib.stride_tricks.sliding_window_view(padded, ahead).max(axis=1)
        else:
            targets = needed
        s = self.settings
        self._targets = np.clip(targets, s.min_replica, s.max_replica).astype(np.int64)
        self._changes = np.flatnonzero(np.diff(self._targets)) + 1

    def _index(self, now: float) -> int:
        return int(math.floor((now - self._start) / self._tick + 1e-6))

    def _target_at(self, k: int) -> int:
        if 0 <= k < self._targets.shape[0]:
            return int(self._targets[k])
        return self.clamp(0)

    def tick(self, view: View) -> int:
        # Never below what is really in the system now: when requests queue
        # (at max_replica, or past a late cold start) the oracle serves them.
        in_system = self.clamp(-(-view.concurrency // self.context.predict_concurrency))
        return max(self._target_at(self._index(view.now)), in_system)

    def idle_until(self, view: View, tick: float) -> float:
        k = self._index(view.now)
        if self._target_at(k) != view.replicas:
            return view.now
        n = self._targets.shape[0]
        if k >= n:
            return INF
        j = int(np.searchsorted(self._changes, k, side="right"))
        nxt = int(self._changes[j]) if j < self._changes.shape[0] else n
        if nxt >= n and self.clamp(0) == view.replicas:
            return INF
        return self._start + nxt * self._tick


def _bucket_max_concurrency(
    arrivals: NDArray[np.float64], service: NDArray[np.float64], start: float, tick: float
) -> NDArray[np.int64]:
    """Max of the no-wait concurrency in each tick interval [start + k·tick, start + (k+1)·tick)."""
    n = arrivals.shape[0]
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    ends = arrivals + service
    times = np.concatenate([ends, arrivals])
    deltas = np.concatenate([np.full(n, -1, dtype=np.int64), np.ones(n, dtype=np.int64)])
    order = np.argsort(times, kind="stable")  # ends before arrivals at equal times
    times, deltas = times[order], deltas[order]
    level = np.cumsum(deltas)
    buckets = np.floor((times - start) / tick + 1e-9).astype(np.int64)
    count = int(buckets[-1]) + 1
    firsts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    used = buckets[firsts]
    peak = np.zeros(count, dtype=np.int64)
    peak[used] = np.maximum.reduceat(level, firsts)
    # Level carried into each bucket from the last event before it.
    carried = np.zeros(count, dtype=np.int64)
    lasts = np.r_[firsts[1:], level.shape[0]] - 1
    end_level = np.full(count, -1, dtype=np.int64)
    end_level[used] = level[lasts]
    filled = np.maximum.accumulate(np.where(end_level >= 0, np.arange(count), -1))
    has = filled >= 0
    prev = np.zeros(count, dtype=np.int64)
    prev[has] = end_level[filled[has]]
    carried[1:] = prev[:-1]
    return np.maximum(peak, carried)
