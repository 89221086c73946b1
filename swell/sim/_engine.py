"""The replay: a trace through a policy on a virtual clock, event by event.

Model (DESIGN.md): one FIFO queue; replicas go starting → ready → draining →
stopped; a ready replica serves up to ``predict_concurrency`` requests at once.

How it is fast.  The replicas' slots are a heap of the times each slot is next
free (a starting replica's slots are free from its ready time), so a request
starts at max(arrival, earliest free slot): one heap operation.  Capacity only
changes at control ticks and wakes, so requests are committed tick by tick,
only while their start falls before the next tick; requests start in arrival
order (FIFO), so the first one that cannot start ends the pass.  A pass in
which no request has to wait is done in numpy without touching the heap per
request.  Concurrency (in flight + queued) is arrivals − completions, so its
exact time-integral over a tick comes from sorted arrival and end times; that
mean feeds the policy's window.  Idle stretches are jumped over: when nothing
is in flight, queued, starting or draining, the policy says until when its
target cannot change, and the clock moves to that tick or to the next arrival.
Busy stretches go through the cruise (:meth:`_Replay._cruise`): tick by tick,
with the trace read as Python floats a chunk at a time and the per-tick set-up
of the whole treatment left out, the same operations on the same floats (commit,
delayed count, exact integral, the policy's answer, replicas started or
stopped).  It hands back a tick with a crowd (numpy's case), a request that
finds no replica (a wake), or nothing in flight until a distant arrival.  Ticks
with nothing in flight while replicas start or drain only record their sample
and ask the policy whether it holds (:meth:`_Replay._coast`), and are jumped
over like silence.  A tick with no arrival and no end due does no numpy call.

Slots are interchangeable: which replica served a request is not tracked.
Scale-down removes not-ready replicas first (the latest to become ready
first), then ready ones whose slots free up soonest (the least loaded, as a
router that sends to the replica with the most free slots keeps them); a
removed replica drains and stops when its last slot frees.  Queue waits do not
depend on this choice; only when a draining replica stops does, at the margin.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right, insort
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from swell.autoscaling import Extras, extras_in_force
from swell.config import AutoscalingSettings
from swell.sim._models import ColdStart
from swell.sim.policies import Plan, Policy, PolicyContext, SimWindow, View, make_policy

__all__ = ["SimConfig", "SimResult", "Timeline", "replay"]

Floats = NDArray[np.float64]

# A pass with fewer requests than this goes through the per-request loop: for
# a handful, numpy's per-call overhead costs more than it saves.
_VECTOR_MIN = 12
_PROGRESS_EVERY = 2048  # ticks
# The cruise (_Replay._cruise) reads the trace this many requests at a time, as Python floats,
# and leaves a tick with more arrivals than _CROWD to the whole treatment.
_CHUNK = 512
_CROWD = 64
# With nothing in flight, the cruise ticks on through a gap of up to this many ticks; the coast
# jumps over a longer one.
_CRUISE_GAP = 8
# Up to this many values are summed in Python, in numpy's own order (see _sum).
_PAIRWISE_BLOCK = 128
_INF = math.inf


def _sum(values: list[float]) -> float:
    """``float(np.sum(values))`` for up to 128 floats, bit for bit, without numpy's per-call cost.

    numpy adds a short array one by one from 0.0 and a longer one (up to 128) in eight
    interleaved partial sums combined pairwise, then the remainder one by one; the replay's
    arithmetic stays the one it had when these sums went through numpy.
    """
    n = len(values)
    if n < 8:
        total = 0.0
        for v in values:
            total += v
        return total
    if n > _PAIRWISE_BLOCK:
        return float(np.sum(np.asarray(values, dtype=np.float64)))
    r0, r1, r2, r3, r4, r5, r6, r7 = values[:8]
    whole = n - n % 8
    for i in range(8, whole, 8):
        r0 += values[i]
        r1 += values[i + 1]
        r2 += values[i + 2]
        r3 += values[i + 3]
        r4 += values[i + 4]
        r5 += values[i + 5]
        r6 += values[i + 6]
        r7 += values[i + 7]
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(whole, n):
        total += values[i]
    return total


@dataclass(frozen=True)
class SimConfig:
    """Everything about a replay except the trace and the policy."""

    settings: AutoscalingSettings = field(default_factory=lambda: AutoscalingSettings.model_validate({}))
    predict_concurrency: int = 1
    cold_start: ColdStart = ColdStart("fixed", 10.0)
    tick: float = 1.0
    queue_limit: int | None = None
    seed: int = 0
    skip_idle: bool = True  # jump over stretches where nothing can change (False: tick through every one)
    coast: bool = True  # with skip_idle: also through busy stretches and a window's decay (False: idle only)
    timeline: bool = False
    extras: Extras = field(default_factory=Extras)  # Swell's opt-in extras, for the 'swell' policy
    epoch: float = 0.0  # unix seconds at trace time 0 (schedules read this wall clock)

    def context(self, service_time: float | None = None) -> PolicyContext:
        """What a policy is built from, for this configuration.

        Extras the settings switch on (``burst``, ``trend``) read the cold start's
        nominal value, ``service_time`` (the trace's mean) and the slots, as the
        live loop reads its own measurements; extras passed in ``extras`` keep theirs.
        """
        extras = self.extras
        if not extras.active and (self.settings.burst or self.settings.trend):
            extras = Extras(
                cold_start=self.cold_start.nominal,
                service_time=extras.service_time if service_time is None else service_time,
                predict_concurrency=self.predict_concurrency,
            )
        return PolicyContext(
            self.settings, self.predict_concurrency, self.cold_start,
            extras=extras_in_force(self.settings, extras), epoch=self.epoch,
        )

    def __post_init__(self) -> None:
        if not (self.tick > 0 and math.isfinite(self.tick)):
            raise ValueError(f"tick must be > 0 seconds (got {self.tick})")
        if self.predict_concurrency < 1:
            raise ValueError(f"predict_concurrency must be ≥ 1 (got {self.predict_concurrency})")
        if self.queue_limit is not None and self.queue_limit < 0:
            raise ValueError(f"queue_limit must be ≥ 0 (got {self.queue_limit})")


@dataclass(frozen=True, eq=False)
class Timeline:
    """At each tick where something changed: replicas (existing), ready, concurrency, queued.

    ``queued`` is the part of ``concurrency`` that has not started: requests that
    arrived by the tick and wait in the queue (not dropped).
    """

    t: Floats
    replicas: NDArray[np.int64]
    ready: NDArray[np.int64]
    concurrency: NDArray[np.int64]
    queued: NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class SimResult:
    policy: str
    metrics: dict[str, Any]
    timeline: Timeline | None = None


class _Replay:
    def __init__(
        self,
        arrivals: Floats,
        service: Floats,
        policy: Policy,
        config: SimConfig,
        progress: Callable[[float], None] | None,
    ) -> None:
        self.arr = np.ascontiguousarray(arrivals, dtype=np.float64)
        self.svc = np.ascontiguousarray(service, dtype=np.float64)
        if self.arr.shape != self.svc.shape:
            raise ValueError("arrivals and service times differ in length")
        self.n = n = int(self.arr.shape[0])
        self.policy = policy
        self.config = config
        self.dt = dt = float(config.tick)
        self.pc = config.predict_concurrency
        self.limit = config.queue_limit
        self.cold = config.cold_start.sampler(config.seed)
        self.progress = progress
        first = float(self.arr[0]) if n else 0.0
        lead = policy.lead_time
        self.t0 = min(0.0, first) - ((math.ceil(lead / dt - 1e-9) + 1) * dt if lead > 0 else 0.0)
        retention = max(policy.lookback, float(config.settings.autoscaling_window)) + 4 * dt
        self.window = SimWindow(self.t0, retention=retention)
        self.clock = self.t0

        # Per request, preallocated; nothing else grows with the trace.
        self.waits = np.zeros(n, dtype=np.float64)
        self.dropped = np.zeros(n, dtype=bool) if self.limit is not None else None
        self.h = 0  # first request neither committed nor dropped
        self.seen = 0  # first request not yet looked at
        self.q_unc = 0  # queued, uncommitted, not dropped, in [h, seen)
        self.started: deque[float] = deque()  # starts still ahead (queue-limit mode)

        self.heap: list[float] = []
        self.active: list[tuple[float, float]] = []  # (created, ready_at), not draining
        self.draining: list[float] = []  # stop times
        self.retired_seconds = 0.0
        self.cold_starts = 0
        self.delayed = 0
        self.dropped_count = 0
        self.max_alive = 0
        self.wakes = 0

        # Concurrency accounting up to acct_t.
        self.acct_t = self.t0
        self.acct_n = 0
        self.acct_i = 0
        self.acct_next = first if n else _INF  # arr[acct_i]: the next arrival not yet counted
        self.next_arrival = self.acct_next  # arr[seen]: the next arrival not yet looked at
        self.committed = -_INF  # the last tick committed to (then seen counts the arrivals up to it)
        self.pending: Any = []  # ends not yet counted, sorted (a list, or an array when many)
        self.new_ends: list[Any] = []  # ends committed since, not merged into pending yet
        self.pend_head = _INF  # the earliest of pending and new_ends
        self.last_end = -math.inf
        # The count of ready replicas, valid for now in [ready_lo, ready_hi).
        self.ready_n = 0
        self.ready_lo = _INF
        self.ready_hi = -_INF

        self.rows: list[tuple[float, int, int, int, int]] | None = [] if config.timeline else None
        self.last_row: tuple[int, int, int, int] | None = None
        # Python floats of arr/svc[chunk_lo : chunk_lo + len(arr_chunk)], for the cruise (see _cruise).
        self.chunk_lo = 0
        self.arr_chunk: list[float] = []
        self.svc_chunk: list[float] = []
        self.decided: int | None = None  # the policy's answer for the next tick, when the coast asked it
        self.done: View | None = None  # the next tick, done by the cruise but for the loop's idle question
        # Only a policy that can tell when its answer holds (Policy.steady) coasts.
        self.steadies = type(policy).steady is not Policy.steady
        self.ticks = 0

    # ------------------------------------------------------------------ accounting

    def _integrate_to(self, t: float) -> float | None:
        """Mean concurrency over (acct_t, t]; moves acct_t to t."""
        span = t - self.acct_t
        i = j = self.acct_i
        added = 0.0
        if self.acct_next <= t:
            arr = self.arr
            # At the tick just committed the count of arrivals is known: the requests looked at.
            j = self.seen if t == self.committed else int(arr.searchsorted(t, side="right"))
            chunk = arr[i:j]
            added = t * (j - i) - (_sum(chunk.tolist()) if j - i <= _PAIRWISE_BLOCK else float(chunk.sum()))
            self.acct_i = j
            self.acct_next = float(arr[j]) if j < self.n else _INF
        k = 0
        removed = 0.0
        if self.pend_head <= t:
            k, removed = self._end_to(t)
        integral = self.acct_n * max(span, 0.0) + added - removed
        self.acct_n += (j - i) - k
        if t > self.acct_t:
            self.acct_t = t
        if span <= 0:
            return None  # arrivals and ends at this very instant are counted, nothing else
        return max(0.0, integral / span)

    def _push_ends(self, ends: Any) -> None:
        """Ends of requests just committed (a list, or an array), counted when the clock passes them."""
        if len(ends):
            self.new_ends.append(ends)
            first = float(ends.min()) if isinstance(ends, np.ndarray) else min(ends)
            if first < self.pend_head:
                self.pend_head = first

    def _end_to(self, t: float) -> tuple[int, float]:
        """Take the ends at or before ``t`` out of pending: their count, and the integral they remove."""
        pending, parts = self.pending, self.new_ends
        size = len(pending) + sum(len(e) for e in parts)
        if size <= _PAIRWISE_BLOCK:
            merged = pending if isinstance(pending, list) else pending.tolist()
            for e in parts:
                merged += e if isinstance(e, list) else e.tolist()
            merged.sort()
            k = bisect_right(merged, t)
            done: Any = merged[:k]
            removed = t * k - _sum(done)
            rest: Any = merged[k:]
        else:
            merged = np.sort(np.concatenate([np.asarray(pending, dtype=np.float64),
                                             *(np.asarray(e, dtype=np.float64) for e in parts)]))
            k = int(merged.searchsorted(t, side="right"))
            done = merged[:k]
            removed = t * k - float(done.sum())
            rest = merged[k:]
        parts.clear()
        if k:
            last = float(done[-1])
            if last > self.last_end:
                self.last_end = last
        self.pending = rest
        self.pend_head = float(rest[0]) if len(rest) else _INF
        return k, removed

    def _ready(self, now: float) -> int:
        """Ready replicas at ``now``: counted again only when a replica became ready or the set changed."""
        if self.ready_lo <= now < self.ready_hi:
            return self.ready_n
        ready, upcoming = 0, _INF
        for _, ready_at in self.active:
            if ready_at <= now:
                ready += 1
            elif ready_at < upcoming:
                upcoming = ready_at
        self.ready_n, self.ready_lo, self.ready_hi = ready, now, upcoming
        return ready

    def _view(self, now: float) -> View:
        busy = now if self.acct_n > 0 else self.last_end
        return View(now, self.acct_n, len(self.active), self._ready(now), self.window, busy)

    def _alive(self, now: float) -> int:
        if self.draining:
            self.draining = [s for s in self.draining if s > now]
        return len(self.active) + len(self.draining)

    # ------------------------------------------------------------------ replicas

    def _apply(self, target: int, now: float) -> None:
        active, heap, pc = self.active, self.heap, self.pc
        current = len(active)
        if target == current:
            return  # nothing starts, so the most alive at once cannot have grown
        self.ready_hi = -_INF
        if target > current:
            for _ in range(target - current):
                ready_at = now + self.cold()
                active.append((now, ready_at))
                for _ in range(pc):
                    heapq.heappush(heap, ready_at)
                self.cold_starts += 1
        elif target < current:
            remove = current - target
            starting = sorted((r for r in active if r[1] > now), key=lambda r: r[1], reverse=True)[:remove]
            for replica in starting:
                active.remove(replica)
                self.retired_seconds += now - replica[0]
                for _ in range(pc):
                    heap.remove(replica[1])
            if starting:
                heapq.heapify(heap)
            for _ in range(remove - len(starting)):
                freed = [heapq.heappop(heap) for _ in range(pc)]
                stop = max(now, max(freed))
                replica = active.pop()  # which object retires does not change the total
                self.retired_seconds += stop - replica[0]
                if stop > now:
                    self.draining.append(stop)
        self.max_alive = max(self.max_alive, self._alive(now))

    def _wake(self, t: float) -> None:
        t = max(t, self.clock)
        average = self._integrate_to(t)
        if average is not None:
            self.window.record(t, average)
        self.wakes += 1
        target = self.policy.wake(self._view(t))
        self._apply(target, t)

    # ------------------------------------------------------------------ commits

    def _commit(self, T: float) -> None:
        if self.next_arrival > T and (self.h >= self.seen or (self.heap and self.heap[0] > T)):
            return  # nothing arrives, and no queued request can start by T
        m = int(self.arr.searchsorted(T, side="right"))
        self.next_arrival = float(self.arr[m]) if m < self.n else _INF
        self._commit_to(T, m)
        self.committed = T  # seen == m from here (a wake while committing integrated without it)

    def _commit_to(self, T: float, m: int) -> None:
        if self.limit is not None:
            self._commit_limited(T, m)
            return
        h = self.h
        if h >= m:
            self.seen = max(self.seen, m)
            return
        if h == self.seen and m - h >= _VECTOR_MIN and self.heap and self._commit_unqueued(T, h, m):
            return
        arr, svc, waits = self.arr, self.svc, self.waits
        heapreplace = heapq.heapreplace
        i = h  # next request to commit
        chunk = 64
        blocked = False
        while i < m and not blocked:
            # A long queue is looked at a chunk at a time: only its head can start.
            stop = min(m, i + chunk)
            chunk *= 2
            arrivals = arr[i:stop].tolist()
            services = svc[i:stop].tolist()
            ends: list[float] = []
            waited: list[float] = []
            base = i
            heap = self.heap
            for a, s in zip(arrivals, services):
                if not heap:
                    # The request finds no replica: flush what is committed, wake now.
                    waits[base : base + len(waited)] = waited
                    self._push_ends(ends)
                    base += len(waited)
                    ends, waited = [], []
                    self._wake(a)
                    heap = self.heap
                    if not heap:
                        blocked = True
                        break
                free = heap[0]
                start = a if free <= a else free
                if start > T:
                    blocked = True
                    break
                end = start + s
                heapreplace(heap, end)
                ends.append(end)
                waited.append(start - a)
            waits[base : base + len(waited)] = waited
            self._push_ends(ends)
            i = base + len(waited)
        self._count_delayed(self.seen, m, i)
        self.h = i
        self.seen = m

    def _commit_unqueued(self, T: float, h: int, m: int) -> bool:
        """All of [h, m) start on arrival, if they can: decided and done in numpy."""
        a = self.arr[h:m]
        s = self.svc[h:m]
        if s.min() <= 0:
            return False
        free = np.sort(np.asarray(self.heap))
        slots = free.shape[0]
        ends = a + s
        # Busy slots as each request arrives: slots not yet free, plus earlier
        # requests of this pass still in service (later ones end after a).
        busy = (slots - np.searchsorted(free, a, side="right")) + (
            np.arange(a.shape[0]) - np.searchsorted(np.sort(ends), a, side="right")
        )
        if int(busy.max()) >= slots:
            return False
        # After the pass only free times after T matter (every later request
        # arrives after T): the still-busy slots, and the rest free at T.
        still = np.concatenate([free[free > T], ends[ends > T]])
        if still.shape[0] > slots:
            return False
        heap = still.tolist()
        heap.extend([T] * (slots - len(heap)))
        heapq.heapify(heap)
        self.heap = heap
        self._push_ends(ends)
        self.h = self.seen = m
        return True

    def _count_delayed(self, first: int, last: int, committed_to: int) -> None:
        """Of requests first seen now, those that waited while a replica was starting."""
        if last <= first:
            return
        clock = self.clock
        starting = [(c, r) for c, r in self.active if r > clock]
        if not starting:
            return
        if last - first <= 32:
            waits = self.waits[first:last].tolist()
            dropped = self.dropped[first:last].tolist() if self.dropped is not None else None
            count = 0
            for offset, a in enumerate(self.arr[first:last].tolist()):
                if first + offset < committed_to and not waits[offset] > 0:
                    continue
                if dropped is not None and dropped[offset]:
                    continue
                for c, r in starting:
                    if c <= a < r:
                        count += 1
                        break
            self.delayed += count
            return
        idx = np.arange(first, last)
        waited = idx >= committed_to
        waited[~waited] = self.waits[idx[~waited]] > 0
        if self.dropped is not None:
            waited &= ~self.dropped[idx]
        if not waited.any():
            return
        a = self.arr[idx[waited]][:, None]
        created = np.array([c for c, _ in starting])[None, :]
        ready = np.array([r for _, r in starting])[None, :]
        self.delayed += int(((created <= a) & (a < ready)).any(axis=1).sum())

    def _commit_limited(self, T: float, m: int) -> None:
        """The same commits, plus admission: with ``queue_limit`` waiting, refuse."""
        assert self.dropped is not None and self.limit is not None
        arr, svc, waits, dropped = self.arr, self.svc, self.waits, self.dropped
        heap, started, limit = self.heap, self.started, self.limit
        first_new = self.seen
        drop_ends: list[float] = []
        ends: list[float] = []
        blocked = False
        idx = self.h
        while idx < m:
            a = float(arr[idx])
            if idx >= self.seen:
                while started and started[0] <= a:
                    started.popleft()
                self.seen = idx + 1
                if len(started) + self.q_unc >= limit:
                    dropped[idx] = True
                    self.dropped_count += 1
                    drop_ends.append(a)
                    if idx == self.h:
                        self.h += 1
                    idx += 1
                    continue
                self.q_unc += 1
            if blocked or dropped[idx]:
                if dropped[idx] and idx == self.h:
                    self.h += 1
                idx += 1
                continue
            if not heap:
                self._push_ends(ends)
                self._push_ends(drop_ends)
                ends, drop_ends = [], []
                self._wake(a)
                heap = self.heap
                if not heap:
                    blocked = True
                    idx += 1
                    continue
            free = heap[0]
            start = a if free <= a else free
            if start > T:
                blocked = True
                idx += 1
                continue
            end = start + float(svc[idx])
            heapq.heapreplace(heap, end)
            ends.append(end)
            waits[idx] = start - a
            if start > a:
                started.append(start)
            self.q_unc -= 1
            self.h = idx + 1
            idx += 1
        self._push_ends(ends)
        self._push_ends(drop_ends)
        self._count_delayed(first_new, self.seen, self.h)

    # ------------------------------------------------------------------ the loop

    def _idle(self, now: float) -> bool:
        if self.acct_n or self.h < self.seen:
            return False
        if self._ready(now) < len(self.active):
            return False
        return self._alive(now) == len(self.active)

    def _chunk(self, i: int) -> int:
        """Load ``arr_chunk``/``svc_chunk`` from request ``i`` on; returns the new ``chunk_lo``."""
        hi = min(self.n, i + _CHUNK)
        self.arr_chunk = self.arr[i:hi].tolist()
        self.svc_chunk = self.svc[i:hi].tolist()
        self.chunk_lo = i
        return i

    def _cruise(self, k: int, horizon: float, *, eager: bool = False) -> int:
        """Ticks from ``k`` on, whole, in plain arithmetic: the common case of a busy stretch.

        The same operations on the same floats as the whole treatment (:meth:`_commit_to`,
        :meth:`_count_delayed`, :meth:`_integrate_to`, :meth:`_end_to`, the policy's answer and
        :meth:`_apply`), with the trace read as Python floats and none of the per-tick set-up.
        Returns the first tick it leaves to the loop: one past the horizon, a crowd (more than
        ``_CROWD`` arrivals in a tick, a long queue or many requests in flight: numpy's case), a
        request that finds no replica, or, with nothing in flight and the next arrival more than
        ``_CRUISE_GAP`` ticks away, the tick just done (left in ``done``: the loop asks whether
        to jump or to end there).  It leaves a first tick with nothing in flight and the next
        arrival far to the coast, unless ``eager`` (the tick an idle jump lands on).
        """
        t0, dt = self.t0, self.dt
        gap = _CRUISE_GAP * dt
        if self.limit is not None or not self.steadies or self.acct_i != self.seen \
                or not eager and self.acct_n == 0 and self.next_arrival - (t0 + k * dt) > gap:
            return k
        pending, parts = self.pending, self.new_ends
        if len(pending) + sum(len(e) for e in parts) > _PAIRWISE_BLOCK:
            return k
        pend = pending if isinstance(pending, list) else pending.tolist()
        if parts:
            for e in parts:
                pend += e if isinstance(e, list) else e.tolist()
            pend.sort()
        self.pending, self.new_ends = pend, []  # the same ends, merged: a sorted list
        n_req, heap, window, policy, active = self.n, self.heap, self.window, self.policy, self.active
        waits, rows, progress = self.waits, self.rows, self.progress
        heapreplace = heapq.heapreplace
        h, seen = self.h, self.seen
        acct_n, acct_t, last_end = self.acct_n, self.acct_t, self.last_end
        lo, arrs, svcs = self.chunk_lo, self.arr_chunk, self.svc_chunk
        nxt = self.next_arrival
        delayed = ticks = 0
        stop = -_INF  # the next replica ready or drained replica stopping: replicas and ready are counted again
        replicas = ready = 0
        latest = _INF  # the latest ready time of a replica
        while True:
            T = t0 + k * dt
            if T > horizon:
                break
            if T >= stop:
                replicas = len(active)
                ready = self._ready(T)
                stop = self.ready_hi
                for s in self.draining:
                    if T < s < stop:
                        stop = s
                latest = max((r for _, r in active), default=-_INF)
            j = seen
            if nxt <= T or h < seen:
                if not heap:
                    break  # a request with no replica: the loop wakes one
                # The trace from the queue's head to this tick's arrivals, as Python floats.
                if h < lo or seen + _CROWD > lo + len(arrs) and lo + len(arrs) < n_req:
                    if seen + _CROWD > h + _CHUNK:
                        break  # a long queue: numpy's case
                    lo = self._chunk(h)
                    arrs, svcs = self.arr_chunk, self.svc_chunk
                last = lo + len(arrs)
                while j < last and arrs[j - lo] <= T:
                    j += 1
                if j == last < n_req or j - seen > _CROWD:
                    break  # a crowd in one tick: numpy's case
            # Nothing is changed before this point: from here the tick is done whole.
            added = T * (j - seen) - _sum(arrs[seen - lo : j - lo]) if j > seen else 0.0
            # Commit in arrival order every request that starts by T.
            i = h
            late: list[float] | None = None  # requests first seen now that start later than they came
            if i < j and heap[0] <= T:
                while i < j:
                    a = arrs[i - lo]
                    free = heap[0]
                    start = a if free <= a else free
                    if start > T:
                        break
                    end = start + svcs[i - lo]
                    heapreplace(heap, end)
                    insort(pend, end)
                    if start > a:
                        waits[i] = start - a
                        if i >= seen:
                            late = [a] if late is None else [*late, a]
                    i += 1
            if j > seen and latest > acct_t:
                # Of the requests first seen now, those that waited while a replica was starting.
                starting = [(c, r) for c, r in active if r > acct_t]
                for a in (late or []) + arrs[max(i, seen) - lo : j - lo]:
                    for c, r in starting:
                        if c <= a < r:
                            delayed += 1
                            break
            arrived = j - seen
            if j > seen:
                nxt = arrs[j - lo] if j < last else _INF  # (j == last only at the trace's end)
            h, seen = i, j
            done = 0
            removed = 0.0
            if pend and pend[0] <= T:
                done = bisect_right(pend, T)
                ended = pend[:done]
                removed = T * done - _sum(ended)
                if ended[-1] > last_end:
                    last_end = ended[-1]
                del pend[:done]
            span = T - acct_t  # > 0: (max(0.0, …) of _integrate_to written out)
            average = (acct_n * span + added - removed) / span
            if not average > 0.0:
                average = 0.0
            acct_n += arrived - done
            acct_t = T
            window.record(T, average)
            view = View(T, acct_n, replicas, ready, window, T if acct_n > 0 else last_end)
            target = policy.steady(view)
            if target is None:
                target = policy.tick(view)
            if target != replicas:
                self._apply(target, T)
                replicas = len(active)
                ready = self._ready(T)
                stop = -_INF  # counted again at the next tick
                view = View(T, acct_n, replicas, ready, window, view.last_busy)
            if rows is not None:
                row = (self._alive(T), ready, acct_n, seen - h)
                if row != self.last_row:
                    rows.append((T, *row))
                    self.last_row = row
            ticks += 1
            if progress is not None and (self.ticks + ticks) % _PROGRESS_EVERY == 0:
                progress(T)
            if acct_n == 0 and nxt - T > gap or not heap:
                # Nothing in flight until a distant arrival, or no replica: the loop asks
                # whether to jump, to wait for a wake or to end here.
                self.done = view
                break
            k += 1
        if ticks:
            self.ticks += ticks
            self.delayed += delayed
            self.h, self.seen, self.acct_i = h, seen, seen
            self.next_arrival = self.acct_next = nxt
            self.committed = acct_t  # seen counts the arrivals up to it
            self.acct_n, self.acct_t, self.clock, self.last_end = acct_n, acct_t, acct_t, last_end
            self.pend_head = pend[0] if pend else _INF
        return k

    def _advance(self, k: int, horizon: float) -> int:
        """From tick ``k`` on, what can be done without the whole treatment: the next tick it needs."""
        k = self._cruise(k, horizon)
        if self.done is None:
            k = self._coast(k, horizon)
        return k

    def _coast(self, k: int, horizon: float) -> int:
        """Ticks from ``k`` on in which nothing happens, done as ticks without their work.

        Until the next arrival, end of a request, start of a queued one, replica ready or drained,
        concurrency is constant: each tick still records its window sample (the same arithmetic
        as :meth:`_integrate_to`, so the window holds the same numbers), and the policy says
        whether it holds (:meth:`Policy.steady`).  Returns the first tick that needs the whole
        treatment.
        """
        if self.limit is not None or not self.heap or not self.steadies:
            return k
        now = self.clock
        event = min(self.next_arrival, horizon, self.pend_head)
        if self.h < self.seen and self.heap[0] < event:
            event = self.heap[0]
        ready = self._ready(now)
        if self.ready_hi < event:
            event = self.ready_hi
        for s in self.draining:
            if now < s < event:
                event = s
        t0, dt, n, window, policy = self.t0, self.dt, self.acct_n, self.window, self.policy
        replicas = len(self.active)
        progress = self.progress
        # With nothing in flight the window only decays, as in an idle stretch: the ticks up to
        # where the policy may change its mind (Policy.quiet_until) are jumped over, their zero
        # samples recorded as one (a zero adds exactly nothing to the window's integral).
        quiet = -_INF
        k_event = math.ceil((event - t0) / dt - 1e-9)
        while True:
            T = t0 + k * dt
            if T >= event:
                return k
            span = T - self.acct_t
            window.record(T, max(0.0, (n * max(span, 0.0) + 0.0 - 0.0) / span))
            self.acct_t = self.clock = T
            view = View(T, n, replicas, ready, window, T if n > 0 else self.last_end)
            target = policy.steady(view)
            if target is None:
                target = policy.tick(view)
                quiet = -_INF
            if target != replicas:
                # Recorded and decided; the whole tick at k applies it (its own record is a no-op).
                self.decided = target
                return k
            self.ticks += 1
            if progress is not None and self.ticks % _PROGRESS_EVERY == 0:
                progress(T)
            k += 1
            if n == 0 and k_event > k:
                if quiet <= T:
                    quiet = policy.quiet_until(view, dt, event)
                k_next = min(math.ceil((quiet - t0) / dt - 1e-9), k_event)
                if k_next > k:
                    skipped_to = t0 + (k_next - 1) * dt
                    window.record(skipped_to, 0.0)
                    self.acct_t = self.clock = skipped_to
                    k = k_next

    def run(self) -> float:
        dt, t0, policy = self.dt, self.t0, self.policy
        policy.prepare(Plan(self.arr, self.svc, t0, dt))
        floor = policy.clamp(0)
        for _ in range(floor):  # min_replica: deployed and ready before the trace
            self.active.append((t0, t0))
            for _ in range(self.pc):
                heapq.heappush(self.heap, t0)
        self.max_alive = floor
        # A bound for a policy that never settles: far past any sensible delay.
        horizon = (float(self.arr[-1]) if self.n else 0.0) + float(self.svc.sum()) + 10 * 86400.0
        rows = self.rows
        settings = self.config.settings
        schedules = bool(settings.schedules)
        settle = float(settings.autoscaling_window + settings.scale_down_delay) + dt
        jump = self.config.skip_idle and self.config.coast
        k = 1
        while True:
            T = t0 + k * dt
            view, self.done = self.done, None  # the cruise did this tick but for what follows
            if view is None:
                self._commit(T)
                average = self._integrate_to(T)
                if average is not None:
                    self.window.record(T, average)
                self.clock = T
                view = self._view(T)
                target, self.decided = self.decided, None  # the coast's answer for this tick, if it asked
                if target is None and jump:
                    target = policy.steady(view)
                if target is None:
                    target = policy.tick(view)
                if target != view.replicas:
                    self._apply(target, T)
                    view = self._view(T)
                self.ticks += 1
                if rows is not None:
                    # After the commit to T every request committed has started by T: the rest wait.
                    queued = self.q_unc if self.limit is not None else self.seen - self.h
                    row = (self._alive(T), view.ready, view.concurrency, queued)
                    if row != self.last_row:
                        rows.append((T, *row))
                        self.last_row = row
                if self.progress is not None and self.ticks % _PROGRESS_EVERY == 0:
                    self.progress(T)
            if self._idle(T):
                arrival = float(self.arr[self.h]) if self.h < self.n else math.inf
                until = min(policy.quiet_until(view, dt, arrival) if jump else policy.idle_until(view, dt), arrival)
                if until == math.inf or T > horizon:
                    break
                if self.h >= self.n and schedules:
                    # A schedule opens again every day, forever: the run ends where the rule
                    # without it settles, a window and a delay after the last request is done.
                    stop = self.last_end + settle
                    if T >= stop:
                        break
                    until = min(until, stop)
                if self.config.skip_idle:
                    k_next = max(k + 1, math.ceil((until - t0) / dt - 1e-9))
                    if k_next > k + 1:
                        skipped_to = t0 + (k_next - 1) * dt
                        self.window.record(skipped_to, 0.0)
                        self.acct_t = skipped_to
                    # The tick jumped to is one where something happens: a request comes (the cruise
                    # goes on from it if it can) or the policy acts (the whole tick is the shorter way).
                    k = k_next
                    if jump and self.next_arrival <= t0 + k * dt:
                        k = self._cruise(k, horizon, eager=True)
                    continue
            if T > horizon:
                break
            k += 1
            if jump:
                k = self._advance(k, horizon)
        if self.progress is not None:
            self.progress(T)
        return T

    def result(self, end: float) -> SimResult:
        replica_seconds = self.retired_seconds + sum(end - c for c, _ in self.active)
        metrics = _metrics(self, end, replica_seconds)
        timeline = None
        if self.rows is not None:
            data = np.array(self.rows, dtype=np.float64).reshape(-1, 5)
            timeline = Timeline(
                t=data[:, 0],
                replicas=data[:, 1].astype(np.int64),
                ready=data[:, 2].astype(np.int64),
                concurrency=data[:, 3].astype(np.int64),
                queued=data[:, 4].astype(np.int64),
            )
        return SimResult(self.policy.name, metrics, timeline)


def _percentiles(values: Floats, qs: list[float]) -> list[float | None]:
    if values.shape[0] == 0:
        return [None] * len(qs)
    # overwrite_input: partitions in place, no copy of a per-request array.
    found = np.percentile(values, qs, overwrite_input=True)
    return [round(float(v), 6) for v in found]


def _metrics(replay: _Replay, end: float, replica_seconds: float) -> dict[str, Any]:
    # The waits are the replay's own and used up here: partitioned in place.
    if replay.dropped is None:
        waits, service = replay.waits, replay.svc
    else:
        served = ~replay.dropped
        waits, service = replay.waits[served], replay.svc[served]
    n = int(waits.shape[0])
    mean_wait = round(float(waits.mean()), 6) if n else None
    max_wait = round(float(waits.max()), 6) if n else None
    latency = waits + service  # the one temporary per-request array
    l50, l95, l99 = _percentiles(latency, [50, 95, 99])
    del latency
    w50, w95, w99 = _percentiles(waits, [50, 95, 99])
    start = min(replay.t0, 0.0)
    span = max(end - start, 1e-9)
    return {
        "requests": replay.n,
        "served": n,
        "dropped": replay.dropped_count,
        "replica_seconds": round(replica_seconds, 3),
        "replica_hours": round(replica_seconds / 3600.0, 4),
        "mean_replicas": round(replica_seconds / span, 4),
        "max_replicas": replay.max_alive,
        "cold_starts": replay.cold_starts,
        "requests_delayed_by_cold_start": replay.delayed,
        "queue_wait_mean": mean_wait,
        "queue_wait_p50": w50,
        "queue_wait_p95": w95,
        "queue_wait_p99": w99,
        "queue_wait_max": max_wait,
        "latency_p50": l50,
        "latency_p95": l95,
        "latency_p99": l99,
        "simulated_seconds": round(end - start, 3),
        "ticks": replay.ticks,
        "wakes": replay.wakes,
    }


def _mean(service: Floats) -> float | None:
    return float(service.mean()) if service.size else None


def replay(
    arrivals: Floats,
    service: Floats,
    policy: str | Policy,
    config: SimConfig | None = None,
    *,
    progress: Callable[[float], None] | None = None,
) -> SimResult:
    """Replay arrivals (s, sorted) with their service times through a policy."""
    config = config or SimConfig()
    if isinstance(policy, str):
        policy = make_policy(policy, config.context(_mean(service)))
    if arrivals.shape[0] > 1 and not bool(np.all(arrivals[1:] >= arrivals[:-1])):
        raise ValueError("arrivals must be sorted")
    engine = _Replay(arrivals, service, policy, config, progress)
    end = engine.run()
    return engine.result(end)
