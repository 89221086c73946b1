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
        self._buckets: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._targets: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._start = 0.0
        self._tick = 1.0

    def prepare(self, plan: Plan) -> None:
        self._start, self._tick = plan.start, plan.tick
        ahead = int(math.ceil(self.lead_time / plan.tick - 1e-9)) + 1
        buckets, demand = _bucket_demand(plan.arrivals, plan.service, plan.start, plan.tick, ahead)
        pc = self.context.predict_concurrency
        needed = -(-demand // pc)  # ceil
        padded = np.concatenate([needed, np.zeros(ahead - 1, dtype=needed.dtype)])
        targets = np.lib.stride_tricks.sliding_window_view(padded, ahead).max(axis=1)
        s = self.settings
        targets = np.clip(targets, s.min_replica, s.max_replica).astype(np.int64)
        # Keep only where the target changes: a step function over tick indices.
        keep = np.r_[True, targets[1:] != targets[:-1]]
        self._buckets = buckets[keep]
        self._targets = targets[keep]

    def _index(self, now: float) -> int:
        return int(math.floor((now - self._start) / self._tick + 1e-6))

    def _target_at(self, k: int) -> int:
        # A step function: the target of the last change at or before k.
        j = int(np.searchsorted(self._buckets, k, side="right")) - 1
        return int(self._targets[j]) if j >= 0 else self.clamp(0)

    def tick(self, view: View) -> int:
        # Never below what is really in the system now: when requests queue
        # (at max_replica, or past a late cold start) the oracle serves them.
        in_system = self.clamp(-(-view.concurrency // self.context.predict_concurrency))
        return max(self._target_at(self._index(view.now)), in_system)

    def idle_until(self, view: View, tick: float) -> float:
        k = self._index(view.now)
        if self._target_at(k) != view.replicas:
            return view.now
        j = int(np.searchsorted(self._buckets, k, side="right"))
        if j < self._buckets.shape[0]:
            return self._start + int(self._buckets[j]) * self._tick
        return INF


def _bucket_demand(
    arrivals: NDArray[np.float64], service: NDArray[np.float64], start: float, tick: float, ahead: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The peak no-wait concurrency of each tick interval [start + k·tick, start + (k+1)·tick).

    Returned for the intervals that matter only: those with an arrival or an
    end, and around them enough of each quiet gap (constant concurrency) that
    a max over ``ahead`` consecutive returned intervals equals the max over
    ``ahead`` real ones.  A year of silence costs a few entries, not 31 M.
    Returns (interval indices, ascending; peaks).
    """
    n = arrivals.shape[0]
    if n == 0:
        return np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
    times = np.concatenate([arrivals + service, arrivals])
    deltas = np.concatenate([np.full(n, -1, dtype=np.int64), np.ones(n, dtype=np.int64)])
    order = np.argsort(times, kind="stable")  # ends before arrivals at equal times
    level = np.cumsum(deltas[order])
    buckets = np.floor((times[order] - start) / tick + 1e-9).astype(np.int64)
    firsts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    lasts = np.r_[firsts[1:], level.shape[0]] - 1
    busy = buckets[firsts]
    end_level = level[lasts]
    carried_in = np.r_[0, end_level[:-1]]
    peak = np.maximum(np.maximum.reduceat(level, firsts), carried_in)
    # A virtual quiet interval at -1 covers the lead-in from interval 0.
    busy = np.r_[-1, busy]
    peak = np.r_[0, peak]
    end_level = np.r_[0, end_level]
    following = np.r_[busy[1:], busy[-1] + ahead + 2]
    gap = following - busy - 1
    kept = 1 + np.minimum(gap, ahead + 1)
    owner = np.repeat(np.arange(busy.shape[0]), kept)
    j = np.arange(owner.shape[0]) - np.repeat(np.cumsum(kept) - kept, kept)
    long_gap = gap[owner] > ahead + 1
    index = np.where(long_gap & (j >= 2), following[owner] - ahead + (j - 2), busy[owner] + j)
    value = np.where(j == 0, peak[owner], end_level[owner])
    return index[1:], value[1:]
