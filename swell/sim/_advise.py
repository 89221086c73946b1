"""``swell advise``: what a deployment's settings will cost on its own traffic, and what would do better.

Every recommendation comes from replaying the traffic in the simulator (the
live rule, :func:`swell.autoscaling.decide`) over candidate settings: each
check searches the settings that bear on one known mistake, and reports a
finding only when a candidate is measurably better on that finding's metric
(and not worse elsewhere beyond its tolerance).  Thresholds only say what
counts as "measurably"; they never choose the values.

Pure apart from the replays: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from swell.autoscaling import Extras
from swell.config import AutoscalingSettings, Schedule, parse_autoscaling
from swell.sim._engine import SimConfig, replay
from swell.sim._errors import SimulationError
from swell.sim._models import ColdStart

__all__ = ["EFFECT_METRICS", "Advice", "AdviseSetup", "Finding", "Option", "advise", "traffic_to_arrivals"]

Floats = NDArray[np.float64]

#: The metrics a finding's effect shows, named as ``swell simulate --json`` names them.
EFFECT_METRICS = (
    "replica_seconds",
    "requests_delayed_by_cold_start",
    "queue_wait_p50",
    "queue_wait_p99",
    "queue_wait_max",
    "latency_p99",
    "cold_starts",
    "mean_replicas",
    "max_replicas",
)

COST = "replica_seconds"
DELAYED = "requests_delayed_by_cold_start"
P99 = "queue_wait_p99"


@dataclass(frozen=True, eq=False)
class AdviseSetup:
    """The traffic, the model and the settings in force."""

    arrivals: Floats
    service: Floats
    settings: AutoscalingSettings
    predict_concurrency: int = 1
    cold_start: ColdStart = ColdStart("fixed", 30.0)
    max_replica_cap: int = 10
    epoch: float = 0.0  # unix seconds at arrivals' time 0 (for schedules)
    timezone: str = "UTC"
    seed: int = 0
    # The p99 queue wait the operator accepts (s); None: the current settings' (×1.2 + 0.5 s).
    queue_wait_p99: float | None = None
    # False: only the single checks (each searches the settings that bear on its mistake), without
    # the joint search and the extras; a few replays instead of a hundred or more.
    joint_search: bool = True
    # Processes that replay independent candidates at once (1: all in this process). The advice
    # does not depend on it.
    workers: int = 1


@dataclass(frozen=True)
class Finding:
    id: str
    title: str
    why: str
    recommended: dict[str, Any]  # the full settings: a PATCH …/autoscaling_settings body
    effect: dict[str, dict[str, Any]]  # {"current": metrics, "recommended": metrics}
    extras: dict[str, bool] = field(default_factory=dict)  # opt-in extras the recommendation turns on

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "why": self.why,
            "recommended": self.recommended,
            "effect": self.effect,
        }
        if self.extras:
            out["extras"] = self.extras
        return out


@dataclass(frozen=True)
class Option:
    """One point of the menu: settings on the cost/latency Pareto front, with their simulated effect."""

    name: str  # "cheapest", "balanced", "fastest"
    title: str
    why: str
    settings: dict[str, Any]  # the full settings: a PATCH …/autoscaling_settings body
    metrics: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "why": self.why, "settings": self.settings,
                "metrics": self.metrics}


@dataclass(frozen=True)
class Advice:
    findings: list[Finding]
    current: dict[str, Any]  # current settings
    metrics: dict[str, Any]  # current metrics (EFFECT_METRICS)
    recommended: dict[str, Any]  # every finding's change at once
    recommended_metrics: dict[str, Any]
    extras: dict[str, bool]  # the opt-in extras offered (empty: none is Pareto-better here)
    summary: str
    simulations: int
    extras_recommended: dict[str, Any] | None = None  # settings tuned with ``extras`` on
    extras_metrics: dict[str, Any] | None = None
    menu: list[Option] = field(default_factory=list)  # up to three points of the cost/latency front

    @property
    def good(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {
            "findings": [f.as_dict() for f in self.findings],
            "summary": self.summary,
            "current": {"settings": self.current, "metrics": self.metrics},
            "recommended": {"settings": self.recommended, "metrics": self.recommended_metrics},
            "with_extras": (
                {"extras": self.extras, "settings": self.extras_recommended, "metrics": self.extras_metrics}
                if self.extras
                else None
            ),
            "menu": [o.as_dict() for o in self.menu],
            "simulations": self.simulations,
        }


# --------------------------------------------------------------------------- the simulator, memoised


class _Lab:
    """Replays candidate settings; the same candidate is replayed once.

    With ``setup.workers`` > 1, :meth:`prefetch` replays a batch of independent candidates in a
    pool of processes; their results are stored in the batch's order, so what the search sees
    (and the advice) is the same as one replay after the other.
    """

    def __init__(self, setup: AdviseSetup, progress: Callable[[int], None] | None) -> None:
        self.setup = setup
        self.progress = progress
        self._cache: dict[str, dict[str, Any]] = {}
        self.plain: dict[str, tuple[AutoscalingSettings, dict[str, Any]]] = {}  # without extras, for the menu
        self.mean_service = float(setup.service.mean()) if setup.service.size else 1.0
        a = setup.arrivals
        # Every replica of the floor exists from before the first request to after the last.
        self.span = float(a[-1]) - min(0.0, float(a[0])) if a.size else 0.0
        self._pool: Any = None

    def extras(self, *, burst: bool = False, trend: bool = False) -> Extras:
        return Extras(
            burst=burst,
            trend=trend,
            cold_start=self.setup.cold_start.nominal,
            service_time=self.mean_service,
            predict_concurrency=self.setup.predict_concurrency,
        )

    def settings(self, base: AutoscalingSettings, **changes: Any) -> AutoscalingSettings | None:
        data = {**base.model_dump(), **changes}
        if data["min_replica"] > data["max_replica"]:
            return None
        try:
            return parse_autoscaling(data, max_replica_cap=self.setup.max_replica_cap)
        except ValueError:
            return None

    def least_cost(self, settings: AutoscalingSettings) -> float:
        """A lower bound on the replica-seconds of ``settings``: the floor, kept the whole trace."""
        return settings.min_replica * self.span

    def off_front(self, settings: AutoscalingSettings, extras: Extras | None = None) -> bool:
        """Whether ``settings`` cannot be on the menu's cost/latency front, whatever its replay gives:
        it is not a plain candidate, or a plain one replayed already delays no request, has no queue
        wait and costs no more than ``settings``' floor alone."""
        resolved = self._resolved(settings, extras)
        if (resolved.burst, resolved.trend) != (self.setup.settings.burst, self.setup.settings.trend):
            return True
        least = self.least_cost(resolved)
        return any(_num(m, DELAYED) == 0 and _num(m, P99) == 0 and _num(m, COST) <= least for _, m in self.plain.values())

    @staticmethod
    def _resolved(settings: AutoscalingSettings, extras: Extras | None) -> AutoscalingSettings:
        # The extras are settings: switched on there, the engine runs them with the trace's mean
        # service time and the nominal cold start (what ``extras()`` holds), as the live loop would.
        if extras is not None and extras.active:
            return with_extras(settings, burst=extras.burst, trend=extras.trend)
        return settings

    def run(self, settings: AutoscalingSettings, extras: Extras | None = None) -> dict[str, Any]:
        settings = self._resolved(settings, extras)
        key = settings.model_dump_json()
        if key not in self._cache:
            self._store(key, settings, _replay_metrics(self.setup, settings))
        return self._cache[key]

    def prefetch(self, candidates: Iterable[tuple[AutoscalingSettings, Extras | None]]) -> None:
        """Replay the candidates not replayed yet (in a pool of ``setup.workers`` processes), in order."""
        todo: dict[str, AutoscalingSettings] = {}
        for settings, extras in candidates:
            resolved = self._resolved(settings, extras)
            key = resolved.model_dump_json()
            if key not in self._cache:
                todo.setdefault(key, resolved)
        if self.setup.workers <= 1 or len(todo) < 2:
            for key, settings in todo.items():
                self._store(key, settings, _replay_metrics(self.setup, settings))
            return
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn: a fresh interpreter per worker, whatever threads this process runs.
            self._pool = ProcessPoolExecutor(
                self.setup.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init, initargs=(self.setup,),
            )
        for (key, settings), metrics in zip(todo.items(), self._pool.map(_worker_replay, todo.values()), strict=True):
            self._store(key, settings, metrics)

    def each(
        self, candidates: Iterable[AutoscalingSettings | None], extras: Extras | None = None
    ) -> list[tuple[AutoscalingSettings, dict[str, Any]]]:
        """Each candidate (None: skipped) with its metrics, replayed as one batch."""
        batch = [s for s in candidates if s is not None]
        self.prefetch((s, extras) for s in batch)
        return [(s, self.run(s, extras)) for s in batch]

    def _store(self, key: str, settings: AutoscalingSettings, metrics: dict[str, Any]) -> None:
        s = self.setup
        self._cache[key] = metrics
        if (settings.burst, settings.trend) == (s.settings.burst, s.settings.trend):
            self.plain[key] = (settings, metrics)
        if self.progress is not None:
            self.progress(len(self._cache))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    @property
    def count(self) -> int:
        return len(self._cache)


def _replay_metrics(setup: AdviseSetup, settings: AutoscalingSettings) -> dict[str, Any]:
    config = SimConfig(
        settings=settings,
        predict_concurrency=setup.predict_concurrency,
        cold_start=setup.cold_start,
        seed=setup.seed,
        epoch=setup.epoch,
    )
    metrics = replay(setup.arrivals, setup.service, "swell", config).metrics
    return {k: metrics[k] for k in EFFECT_METRICS}


_WORKER_SETUP: AdviseSetup | None = None


def _worker_init(setup: AdviseSetup) -> None:
    global _WORKER_SETUP
    _WORKER_SETUP = setup


def _worker_replay(settings: AutoscalingSettings) -> dict[str, Any]:
    assert _WORKER_SETUP is not None
    return _replay_metrics(_WORKER_SETUP, settings)


def _num(metrics: dict[str, Any], key: str) -> float:
    value = metrics.get(key)
    return 0.0 if value is None else float(value)


def _no_worse(candidate: dict[str, Any], current: dict[str, Any]) -> bool:
    """Latency within tolerance of the current: a few more delayed requests, a little more p99 wait."""
    d0, d1 = _num(current, DELAYED), _num(candidate, DELAYED)
    w0, w1 = _num(current, P99), _num(candidate, P99)
    return d1 <= d0 * 1.05 + 3 and w1 <= w0 * 1.2 + 0.5


def _knee(
    candidates: Sequence[tuple[AutoscalingSettings, dict[str, Any]]],
    metric: str,
    *,
    budget: float,
) -> tuple[AutoscalingSettings, dict[str, Any]] | None:
    """The cheapest candidate within budget that gets ≥ 80 % of the best improvement on ``metric``."""
    affordable = [c for c in candidates if _num(c[1], COST) <= budget]
    if not affordable:
        return None
    best = min(_num(m, metric) for _, m in affordable)
    worst = max(_num(m, metric) for _, m in affordable)
    good = [c for c in affordable if _num(c[1], metric) <= best + 0.2 * (worst - best)]
    return min(good, key=lambda c: (_num(c[1], COST), _num(c[1], metric)))


def _improves(current: dict[str, Any], new: dict[str, Any], metric: str, *, share: float, absolute: float) -> bool:
    before, after = _num(current, metric), _num(new, metric)
    return before - after >= absolute and after <= before * (1 - share)


def _significant(lab: _Lab) -> float:
    """Fewer delayed requests that count as a finding: 20, or 1 % of the requests if more."""
    return max(20.0, 0.01 * float(lab.setup.arrivals.shape[0]))


def _effect(current: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {"current": dict(current), "recommended": dict(new)}


def with_extras(settings: AutoscalingSettings, *, burst: bool = False, trend: bool = False) -> AutoscalingSettings:
    """``settings`` with the extras named switched on (those already on stay on)."""
    return settings.model_copy(update={"burst": settings.burst or burst, "trend": settings.trend or trend})


def _patch(settings: AutoscalingSettings) -> dict[str, Any]:
    body = settings.model_dump(mode="json")
    if not body.get("schedules"):
        body.pop("schedules", None)
    else:
        body["schedules"] = [{k: v for k, v in s.items() if v is not None} for s in body["schedules"]]
    return body


def _describe(metrics: dict[str, Any]) -> str:
    return (
        f"{_num(metrics, COST):,.0f} replica-seconds, {int(_num(metrics, DELAYED)):,} requests delayed by a cold start, "
        f"p99 queue wait {_num(metrics, P99):.2f} s"
    )


# --------------------------------------------------------------------------- traffic facts


@dataclass(frozen=True)
class _Traffic:
    demand: Floats  # no-wait concurrency sampled each second (in replicas, at full slots)
    peak: int  # replicas the busiest second needs
    steady: int  # replicas the median busy second needs
    base: int  # replicas the quieter busy seconds (25th percentile) need
    busy_share: float  # share of capacity-seconds that served requests, at the current settings


def _traffic(setup: AdviseSetup) -> _Traffic:
    a, s = setup.arrivals, setup.service
    if a.size == 0:
        return _Traffic(np.zeros(1), 0, 0, 0, 0.0)
    grid = np.arange(math.floor(float(a[0])), math.ceil(float((a + s).max())) + 1, 1.0)
    level = np.searchsorted(a, grid, side="right") - np.searchsorted(np.sort(a + s), grid, side="right")
    replicas = np.ceil(level / setup.predict_concurrency)
    busy = replicas[replicas > 0]
    peak = int(replicas.max()) if replicas.size else 0
    steady = int(np.median(busy)) if busy.size else 0
    base = int(np.percentile(busy, 25)) if busy.size else 0
    return _Traffic(replicas, peak, steady, base, 0.0)


# --------------------------------------------------------------------------- the checks


def _check_max_replica(lab: _Lab, cur: AutoscalingSettings, m0: dict[str, Any], t: _Traffic) -> Finding | None:
    cap = lab.setup.max_replica_cap
    if cur.max_replica >= cap and t.peak <= cur.max_replica:
        return None
    values = sorted({v for v in (cur.max_replica * 2, cur.max_replica * 4, t.peak, math.ceil(t.peak * 1.25), cap)
                     if cur.max_replica < v <= cap})
    cands = lab.each(lab.settings(cur, max_replica=v) for v in values)
    pick = _knee(cands, P99, budget=math.inf)
    if pick is None or not _improves(m0, pick[1], P99, share=0.5, absolute=1.0):
        return None
    s, m = pick
    capped = "" if t.peak <= cap else f" (the busiest second needs {t.peak}; the server's cap is {cap}: raise it)"
    return Finding(
        "max_replica_caps_peak",
        f"max_replica {cur.max_replica} is below the peak: the queue grows",
        f"At its busiest the traffic needs {t.peak} replicas of {lab.setup.predict_concurrency} slots, but "
        f"max_replica stops at {cur.max_replica}, so requests queue with nowhere to go (p99 queue wait "
        f"{_num(m0, P99):.1f} s, max {_num(m0, 'queue_wait_max'):.0f} s). Raising it to {s.max_replica} serves "
        f"the peak{capped}.",
        _patch(s),
        _effect(m0, m),
    )


def _check_spike(lab: _Lab, cur: AutoscalingSettings, m0: dict[str, Any], t: _Traffic) -> Finding | None:
    if _num(m0, DELAYED) < _significant(lab) or t.peak < 3 * max(t.base, 1) or t.peak - t.base < 3:
        return None  # no spike: demand never jumps far above its usual level
    floors = sorted({v for v in (t.base, t.steady, max(1, t.steady // 2), t.steady * 2) if cur.min_replica < v <= cur.max_replica})
    ceilings = sorted({v for v in (math.ceil(t.peak * 1.25), cur.max_replica) if v >= 1})
    tried = [(s, burst) for lo in [cur.min_replica, *floors] for hi in ceilings
             if (s := lab.settings(cur, min_replica=lo, max_replica=min(hi, lab.setup.max_replica_cap))) is not None
             for burst in (False, True)]
    lab.prefetch((s, lab.extras(burst=burst)) for s, burst in tried)
    cands = [(s, lab.run(s, lab.extras(burst=burst)), burst) for s, burst in tried]
    budget = max(_num(m0, COST) * 1.25, _num(m0, COST) + 1.0)
    pick = _knee([(s, m) for s, m, _ in cands], DELAYED, budget=budget)
    if pick is None or not _improves(m0, pick[1], DELAYED, share=0.3, absolute=_significant(lab)):
        return None
    s, m = pick
    burst = next(b for c, mm, b in cands if c is s and mm is m)
    parts = []
    if s.min_replica != cur.min_replica:
        parts.append(f"min_replica {s.min_replica} covers the steady traffic")
    if s.max_replica != cur.max_replica:
        parts.append(f"max_replica {s.max_replica} caps the blast radius")
    if burst:
        parts.append("the burst extra scales up at the first backlog instead of waiting for the window")
    return Finding(
        "cold_spike",
        "Traffic spikes faster than replicas can start",
        f"Demand jumps to {t.peak} replicas' worth while the window still averages the quiet before it; "
        f"with a {lab.setup.cold_start.describe()} cold start, {int(_num(m0, DELAYED)):,} requests wait for "
        f"replicas that are still starting. " + ("; ".join(parts) + "." if parts else "")
        + " If the spikes come at known times, pre-warm with a schedule.",
        _patch(with_extras(s, burst=burst)),
        _effect(m0, m),
        {"burst": True} if burst else {},
    )


def _check_scale_down_delay(lab: _Lab, cur: AutoscalingSettings, m0: dict[str, Any], t: _Traffic) -> Finding | None:
    values = [v for v in (60, 120, 300, 600, 900, 1800, 3600) if v > cur.scale_down_delay]
    cands = lab.each(lab.settings(cur, scale_down_delay=v) for v in values)
    pick = _knee(cands, DELAYED, budget=_num(m0, COST) * 1.5)
    if pick is None or not _improves(m0, pick[1], DELAYED, share=0.3, absolute=_significant(lab)):
        return None
    s, m = pick
    return Finding(
        "scale_down_delay_short",
        f"scale_down_delay {cur.scale_down_delay} s lets replicas go between bursts",
        f"Replicas leave in every lull and the next burst pays a cold start again "
        f"({int(_num(m0, 'cold_starts')):,} cold starts, {int(_num(m0, DELAYED)):,} requests delayed by one). "
        f"Bursty traffic wants the replicas kept across lulls: {s.scale_down_delay} s.",
        _patch(s),
        _effect(m0, m),
    )


def _check_window(lab: _Lab, cur: AutoscalingSettings, m0: dict[str, Any], t: _Traffic) -> Finding | None:
    values = [v for v in (10, 30, 60, 120, 300) if v < cur.autoscaling_window]
    cands = lab.each(lab.settings(cur, autoscaling_window=v) for v in values)
    pick = _knee(cands, P99, budget=_num(m0, COST) * 1.5)
    if pick is None or not _improves(m0, pick[1], P99, share=0.3, absolute=1.0):
        return None
    s, m = pick
    return Finding(
        "autoscaling_window_long",
        f"autoscaling_window {cur.autoscaling_window} s makes scale-up lag the traffic",
        f"The mean over {cur.autoscaling_window} s rises slowly when traffic ramps, so replicas are added late "
        f"and requests queue (p99 queue wait {_num(m0, P99):.1f} s). A {s.autoscaling_window} s window follows the ramp.",
        _patch(s),
        _effect(m0, m),
    )


def _check_utilization(lab: _Lab, cur: AutoscalingSettings, m0: dict[str, Any], t: _Traffic) -> Finding | None:
    values = [v for v in (50, 60, 70, 80) if v < cur.target_utilization_percentage]
    cands = lab.each(lab.settings(cur, target_utilization_percentage=v) for v in values)
    budget = _num(m0, COST) * 1.5
    pick_d = _knee(cands, DELAYED, budget=budget)
    pick_w = _knee(cands, P99, budget=budget)
    for pick, metric, absolute in ((pick_d, DELAYED, _significant(lab)), (pick_w, P99, 1.0)):
        if pick is not None and _improves(m0, pick[1], metric, share=0.3, absolute=absolute):
            s, m = pick
            return Finding(
                "utilization_high",
                f"target_utilization_percentage {cur.target_utilization_percentage} leaves no headroom for bursts",
                f"Replicas are only added once they are {cur.target_utilization_percentage} % full, so every "
                f"burst queues while new ones start ({int(_num(m0, DELAYED)):,} requests delayed by a cold start, "
                f"p99 queue wait {_num(m0, P99):.1f} s). At {s.target_utilization_percentage} % a burst lands on "
                "capacity that is already there.",
                _patch(s),
                _effect(m0, m),
            )
    return None


def _check_concurrency_target(lab: _Lab, cur: AutoscalingSettings, m0: dict[str, Any], t: _Traffic) -> Finding | None:
    pc = lab.setup.predict_concurrency
    # More than a replica's slots would queue on the replica by design: the search stops at them.
    values = sorted({v for v in (2, 4, 8, 16, 32, pc) if cur.concurrency_target < v <= pc})
    cands = lab.each(lab.settings(cur, concurrency_target=v) for v in values)
    fine = [c for c in cands if _no_worse(c[1], m0)]
    if not fine:
        return None
    s, m = min(fine, key=lambda c: _num(c[1], COST))
    if _num(m, COST) > _num(m0, COST) * 0.75:
        return None
    ratio = _num(m0, COST) / max(_num(m, COST), 1e-9)
    return Finding(
        "concurrency_target_low",
        f"concurrency_target {cur.concurrency_target} pays for replicas that sit mostly empty",
        f"A replica serves {pc} requests at once, but concurrency_target {cur.concurrency_target} starts a "
        f"replica for every {cur.replica_capacity:g} requests in flight: {ratio:.1f}× the replica-seconds "
        f"needed. concurrency_target {s.concurrency_target} costs {_num(m, COST):,.0f} replica-seconds instead "
        f"of {_num(m0, COST):,.0f} with the same latency.",
        _patch(s),
        _effect(m0, m),
    )


def _check_idle(lab: _Lab, cur: AutoscalingSettings, m0: dict[str, Any], t: _Traffic) -> Finding | None:
    s0 = lab.setup
    work = float(s0.service.sum())
    capacity = _num(m0, COST) * s0.predict_concurrency
    if capacity <= 0 or work / capacity >= 0.1 or float((t.demand == 0).mean()) < 0.5:
        return None  # the replicas are busy enough, or requests are in flight most of the time
    cands = lab.each(lab.settings(cur, min_replica=lo, scale_down_delay=min(delay, cur.scale_down_delay))
                     for lo in sorted({0, min(cur.min_replica, 1)}) for delay in (0, 60, 300, cur.scale_down_delay))
    s, m = min(cands, key=lambda c: (_num(c[1], COST), _num(c[1], DELAYED)))
    if _num(m, COST) > _num(m0, COST) * 0.5:
        return None
    return Finding(
        "idle_cost",
        "The deployment is idle most of the time but keeps paying for replicas",
        f"Requests keep its replicas busy {100 * work / capacity:.1f} % of the time they exist. "
        f"min_replica {s.min_replica} and scale_down_delay {s.scale_down_delay} s cost "
        f"{_num(m, COST):,.0f} replica-seconds instead of {_num(m0, COST):,.0f}; the price is "
        f"{int(_num(m, DELAYED)):,} requests that wait for a cold start (now {int(_num(m0, DELAYED)):,}).",
        _patch(s),
        _effect(m0, m),
    )


def _check_min_replica_one(lab: _Lab, cur: AutoscalingSettings, m0: dict[str, Any], t: _Traffic) -> Finding | None:
    if cur.min_replica != 1:
        return None
    s = lab.settings(cur, min_replica=2, max_replica=max(2, cur.max_replica))
    if s is None:
        return None
    m = lab.run(s)
    return Finding(
        "min_replica_one",
        "min_replica 1 is one failure away from a cold start",
        "One replica kept warm means a crash, a node drain or a rollout leaves the deployment with none, "
        "and every request then waits a cold start. For production keep at least 2; on this traffic the "
        f"second changes the simulated cost by {_num(m, COST) - _num(m0, COST):+,.0f} replica-seconds.",
        _patch(s),
        _effect(m0, m),
    )


def _daily_peak(setup: AdviseSetup, t: _Traffic) -> tuple[int, int, int, int] | None:
    """(start minute, end minute, replicas the peak needs on average, at its busiest 5 %) of a peak
    that recurs daily, in the setup's timezone."""
    a = setup.arrivals
    if a.size == 0 or float(a[-1] - a[0]) < 1.5 * 86400:
        return None
    zone = ZoneInfo(setup.timezone)
    offset = datetime.fromtimestamp(setup.epoch, zone).utcoffset()
    shift = offset.total_seconds() if offset is not None else 0.0
    local = setup.epoch + shift + np.arange(t.demand.shape[0], dtype=np.float64) + math.floor(float(a[0]))
    hours = ((local % 86400) // 3600).astype(np.int64)
    by_hour = np.bincount(hours, weights=t.demand, minlength=24) / np.maximum(np.bincount(hours, minlength=24), 1)
    mean = float(by_hour.mean())
    if mean <= 0:
        return None
    hot = by_hour >= 1.5 * mean
    if not hot.any() or hot.all():
        return None
    # The longest run of hot hours, cyclically.
    best: tuple[int, int] = (0, 0)
    for start in range(24):
        if hot[start] and not hot[start - 1]:
            length = 0
            while length < 24 and hot[(start + length) % 24]:
                length += 1
            if length > best[1]:
                best = (start, length)
    start, length = best
    if length == 0:
        return None
    need = math.ceil(float(max(by_hour[(start + i) % 24] for i in range(length))))
    in_peak = np.isin(hours, [(start + i) % 24 for i in range(length)])
    busy = math.ceil(float(np.percentile(t.demand[in_peak], 95))) if in_peak.any() else need
    lead = math.ceil(setup.cold_start.nominal / 300) * 5  # minutes, in steps of 5
    return (start * 60 - lead) % 1440, ((start + length) % 24) * 60, max(1, need), max(1, need, busy)


def _check_schedule(lab: _Lab, cur: AutoscalingSettings, m0: dict[str, Any], t: _Traffic) -> Finding | None:
    peak = _daily_peak(lab.setup, t)
    if peak is None:
        return None
    start, end, need, busy = peak
    schedules = [
        Schedule.model_validate(
            {
                "min_replica": min(floor, cur.max_replica),
                "start": f"{start // 60:02d}:{start % 60:02d}",
                "end": f"{end // 60:02d}:{end % 60:02d}",
                "timezone": lab.setup.timezone,
            }
        )
        for floor in sorted({max(1, need // 2), need, busy, need * 2})
    ]
    cands = lab.each(lab.settings(cur, schedules=[*cur.schedules, schedule]) for schedule in schedules)
    pick = _knee(cands, DELAYED, budget=_num(m0, COST) * 1.5)
    if pick is None or not _improves(m0, pick[1], DELAYED, share=0.3, absolute=_significant(lab)):
        return None
    s, m = pick
    added = s.schedules[-1]
    return Finding(
        "daily_peak",
        f"A daily peak from {added.start} ({added.timezone}): pre-warm for it",
        f"Every day the traffic rises to about {need} replicas' worth, and the first requests of the rise wait "
        f"for cold starts. A schedule that holds {added.min_replica} replicas from {added.start} to {added.end} "
        f"(starting one cold start early) has them ready.",
        _patch(s),
        _effect(m0, m),
    )


# --------------------------------------------------------------------------- the joint search

#: Values the joint search tries per setting (besides the current ones); ``min_replica`` and
#: ``concurrency_target`` also get values from the traffic and the model.
_TUNE_UTILIZATION = (50, 70, 85, 100)
_TUNE_DELAY = (0, 60, 300, 600, 900, 1800)
_TUNE_WINDOW = (30, 60, 120, 300)
_TUNE_PASSES = 3  # a pass that moves nothing ends the descent before


@dataclass(frozen=True)
class _Bounds:
    """What a tuned candidate may not exceed: the latency the operator has now (with a little slack)."""

    delayed: float
    p99: float

    def violation(self, m: dict[str, Any]) -> float:
        over_d = max(0.0, _num(m, DELAYED) - self.delayed) / max(self.delayed, 1.0)
        over_w = max(0.0, _num(m, P99) - self.p99) / max(self.p99, 0.1)
        return over_d + over_w


def _bounds(lab: _Lab, m: dict[str, Any]) -> _Bounds:
    """No more cold-start delays than ``m`` plus max(3, 0.5 % of requests); p99 queue wait as the
    operator accepts it (``queue_wait_p99``) or, not given, ``m``'s ×1.2 + 0.5 s."""
    n = float(lab.setup.arrivals.shape[0])
    given = lab.setup.queue_wait_p99
    p99 = given if given is not None else _num(m, P99) * 1.2 + 0.5
    return _Bounds(delayed=_num(m, DELAYED) + max(3.0, 0.005 * n), p99=p99)


def _score(m: dict[str, Any], bounds: _Bounds) -> tuple[float, float, float]:
    """Lower is better: feasible before infeasible, then the cheapest (or the least infeasible)."""
    v = bounds.violation(m)
    if v > 0:
        return (1.0, v, _num(m, COST))
    return (0.0, _num(m, COST), _num(m, DELAYED))


def _axes(lab: _Lab, cur: AutoscalingSettings, t: _Traffic) -> dict[str, list[dict[str, int]]]:
    """The moves of the descent, per axis: each a set of setting changes.

    ``concurrency_target`` and ``target_utilization_percentage`` enter the rule only through their
    product (a replica's capacity), so they are one axis; each capacity is written with the largest
    target (a replica's slots, at most ``predict_concurrency``) that reaches it.
    """
    pc = lab.setup.predict_concurrency
    hi = cur.max_replica
    # A replica's slots and half of them, at each utilisation (and the current capacity).
    targets = sorted({pc, max(1, pc // 2)})
    capacity: dict[float, dict[str, int]] = {}
    for target in targets:  # ascending: a larger target that reaches the same capacity wins
        for util in _TUNE_UTILIZATION:
            capacity[round(target * util / 100, 6)] = {"concurrency_target": target, "target_utilization_percentage": util}
    capacity[round(cur.replica_capacity, 6)] = {
        "concurrency_target": cur.concurrency_target,
        "target_utilization_percentage": cur.target_utilization_percentage,
    }
    keep = set(capacity)
    # Floors from 0 to the peak's replicas (at most 6, spread evenly).
    top = min(hi, max(t.peak, 1))
    floors = sorted({cur.min_replica, *np.unique(np.linspace(0, top, min(top + 1, 6)).round().astype(int)).tolist()})
    delays = sorted({cur.scale_down_delay, *_TUNE_DELAY})
    windows = sorted({cur.autoscaling_window, *_TUNE_WINDOW})
    # Two blocks, each searched as a grid: capacity and floor trade against each other (a fuller
    # replica is only as quick at equal latency with a floor under it), and so do delay and window.
    return {
        "capacity × min_replica": [{**capacity[c], "min_replica": f} for c in sorted(keep) for f in floors if f <= hi],
        "scale_down_delay × autoscaling_window": [
            {"scale_down_delay": d, "autoscaling_window": w} for d in delays for w in windows
        ],
    }


def _descend(
    lab: _Lab,
    start: AutoscalingSettings,
    axes: dict[str, list[dict[str, int]]],
    bounds: _Bounds,
    extras: Extras,
    seen: list[tuple[AutoscalingSettings, dict[str, Any]]],
    passes: int = _TUNE_PASSES,
    keep: float = -math.inf,
) -> tuple[AutoscalingSettings, dict[str, Any]]:
    """Block coordinate descent: one block of settings at a time over its grid, the others held, until
    no block moves.

    Every replay is kept in ``seen`` (the caller looks for Pareto-better points among those that
    cost at most ``keep``). A block's candidates differ from the best at its start only in the
    block's settings, so they are replayed as one batch, then compared in order.  A candidate is
    not replayed when its floor alone (:meth:`_Lab.least_cost`) costs more than a best within the
    bounds and than ``keep``, and it cannot be on the menu's front (:meth:`_Lab.off_front`): it
    could neither win, nor be kept, nor be offered.
    """
    best, best_m = start, lab.run(start, extras)
    seen.append((best, best_m))
    for _ in range(passes):
        moved = False
        for moves in axes.values():
            held = best
            block = [s for change in moves
                     if not all(getattr(held, k) == v for k, v in change.items())
                     and (s := lab.settings(held, **change)) is not None]
            if bounds.violation(best_m) == 0:
                limit = max(keep, _num(best_m, COST))
                block = [s for s in block if not (lab.least_cost(s) > limit and lab.off_front(s, extras))]
            lab.prefetch((s, extras) for s in block)
            for s in block:
                m = lab.run(s, extras)
                seen.append((s, m))
                if _score(m, bounds) < _score(best_m, bounds):
                    best, best_m, moved = s, m, True
        if not moved:
            break
    return best, best_m


def _seeds(lab: _Lab, cur: AutoscalingSettings, t: _Traffic, *more: AutoscalingSettings) -> list[AutoscalingSettings]:
    """Where descents start: the given settings, and a replica's full slots with the steady level kept warm.

    Coordinate descent alone stays near its start when two settings must move together (a higher
    ``concurrency_target`` is only cheap at equal latency with a floor under it): the second seed
    starts it there.
    """
    pc = lab.setup.predict_concurrency
    seeds = [*more]
    full = lab.settings(cur, concurrency_target=max(cur.concurrency_target, pc),
                        min_replica=max(cur.min_replica, min(t.steady, cur.max_replica)), scale_down_delay=300)
    if full is not None:
        seeds.append(full)
    unique: dict[str, AutoscalingSettings] = {}
    for s in seeds:
        unique.setdefault(s.model_dump_json(), s)
    return list(unique.values())


def _tune(
    lab: _Lab, cur: AutoscalingSettings, t: _Traffic, start: AutoscalingSettings, bounds: _Bounds, extras: Extras
) -> tuple[AutoscalingSettings, dict[str, Any], list[tuple[AutoscalingSettings, dict[str, Any]]]]:
    """The cheapest settings the descents find within ``bounds``, and every candidate replayed."""
    axes = _axes(lab, cur, t)
    seen: list[tuple[AutoscalingSettings, dict[str, Any]]] = []
    # One descent, from the better seed.
    seeds = _seeds(lab, cur, t, start)
    lab.prefetch((s, extras) for s in seeds)
    seed = min(seeds, key=lambda s: _score(lab.run(s, extras), bounds))
    best = _descend(lab, seed, axes, bounds, extras, seen)
    # The grids are coarse: polish the best one setting at a time over the values between.
    polished = _descend(lab, best[0], _finer(best[0]), bounds, extras, seen, passes=2)
    best = min((best, polished), key=lambda c: _score(c[1], bounds))
    return best[0], best[1], seen


def _finer(s: AutoscalingSettings) -> dict[str, list[dict[str, int]]]:
    """Single-setting moves between the grids' values, around ``s``."""
    return {
        "min_replica": [{"min_replica": v} for v in range(max(0, s.min_replica - 2), min(s.max_replica, s.min_replica + 2) + 1)],
        "target_utilization_percentage": [
            {"target_utilization_percentage": v}
            for v in range(max(1, s.target_utilization_percentage - 10), min(100, s.target_utilization_percentage + 10) + 1, 5)
        ],
        "scale_down_delay": [{"scale_down_delay": v} for v in sorted({s.scale_down_delay * 3 // 4, s.scale_down_delay * 3 // 2,
                                                                       max(0, s.scale_down_delay - 60), min(3600, s.scale_down_delay + 60)})
                             if 0 <= v <= 3600],
        "autoscaling_window": [{"autoscaling_window": v} for v in sorted({s.autoscaling_window * 3 // 4, s.autoscaling_window * 3 // 2})
                               if 10 <= v <= 3600],
    }


def _near(axes: dict[str, list[dict[str, int]]], base: AutoscalingSettings) -> dict[str, list[dict[str, int]]]:
    """The blocks cut to the neighbourhood of ``base``: capacity within 1.5×, the floor within 2."""

    def close(change: dict[str, int]) -> bool:
        target = change.get("concurrency_target", base.concurrency_target)
        util = change.get("target_utilization_percentage", base.target_utilization_percentage)
        ratio = target * util / 100 / base.replica_capacity
        return 1 / 1.5 <= ratio <= 1.5 and abs(change.get("min_replica", base.min_replica) - base.min_replica) <= 2

    return {name: [c for c in moves if close(c)] for name, moves in axes.items()}


def _dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """``a`` is Pareto-better than ``b``: no more replica-seconds, no more delayed, fewer of one."""
    ca, cb, da, db = _num(a, COST), _num(b, COST), _num(a, DELAYED), _num(b, DELAYED)
    return ca <= cb and da <= db and (ca < cb or da < db)


_CHECKS = (
    _check_max_replica,
    _check_spike,
    _check_scale_down_delay,
    _check_window,
    _check_utilization,
    _check_concurrency_target,
    _check_idle,
    _check_schedule,
    _check_min_replica_one,
)


# --------------------------------------------------------------------------- putting it together


def _combine(cur: AutoscalingSettings, findings: Iterable[Finding]) -> dict[str, Any]:
    base = cur.model_dump()
    merged = dict(base)
    for f in findings:
        for key, value in f.recommended.items():
            if key == "schedules":
                merged["schedules"] = value
            elif value == base.get(key):
                continue
            elif key in ("min_replica", "max_replica") and merged[key] != base[key]:
                merged[key] = max(merged[key], value)
            else:
                merged[key] = value
    merged["max_replica"] = max(merged["max_replica"], merged["min_replica"])
    return merged


def advise(setup: AdviseSetup, *, progress: Callable[[int], None] | None = None) -> Advice:
    """Run every check on the traffic; return the findings and the settings that combine them."""
    if setup.arrivals.size == 0:
        raise SimulationError("no requests to advise on")
    lab = _Lab(setup, progress)
    try:
        return _advise(lab)
    finally:
        lab.close()


def _advise(lab: _Lab) -> Advice:
    setup = lab.setup
    cur = setup.settings
    m0 = lab.run(cur)
    traffic = _traffic(setup)
    findings = [f for check in _CHECKS if (f := check(lab, cur, m0, traffic)) is not None]
    combined = lab.settings(cur, **_combine(cur, findings)) or cur
    m1 = lab.run(combined)
    # The joint search: every setting at once, as cheap as it gets at the latency of the
    # recommendation so far (the current settings' when there is no finding).
    bounds = _bounds(lab, m1)
    tuned, mt = combined, m1
    if setup.joint_search:
        tuned, mt, _ = _tune(lab, cur, traffic, combined, bounds, Extras())
    if tuned is not combined and bounds.violation(mt) == 0 and (_num(mt, COST) <= 0.9 * _num(m1, COST) or bounds.violation(m1) > 0):
        findings.append(_tuned_finding(cur, combined, tuned, m1, mt, bounds, setup.queue_wait_p99 is not None))
        base, mb = tuned, mt
    else:
        base, mb = combined, m1
    # The extras, judged on this traffic: offered only when Pareto-better than the best without them.
    extras, with_extras, me = _best_extras(lab, cur, traffic, base, mb, bounds) if setup.joint_search else (None, None, None)
    if extras is not None and with_extras is not None and me is not None:
        names = " and ".join(extras)
        findings.append(
            Finding(
                "extras",
                f"The {names} extra{'s' if len(extras) > 1 else ''} would do better on this traffic",
                f"With {names} on (opt-in), settings tuned for it use no more replica-seconds and delay no "
                f"more requests than the best without it ({_describe(me)} instead of {_describe(mb)}). "
                "Without the extra, keep the settings recommended without it.",
                _patch(with_extras),
                _effect(mb, me),
                dict(extras),
            )
        )
    menu, waits = _menu(lab, cur, m0, base, mb, traffic)
    if waits is not None:
        findings.append(waits)
    if findings:
        shown = me if me is not None else mb
        summary = (
            f"{len(findings)} finding{'s' if len(findings) > 1 else ''}; with every recommendation: {_describe(mb)}"
            + (f" ({_describe(shown)} with the extras)" if me is not None else "")
            + f" (now {_describe(m0)})"
        )
    else:
        summary = (
            f"The settings are good for this traffic: no candidate the search tried was measurably better "
            f"({lab.count} replays; now {_describe(m0)})."
        )
    return Advice(
        findings,
        _patch(cur),
        m0,
        _patch(base),
        mb,
        dict(extras or {}),
        summary,
        lab.count,
        _patch(with_extras) if with_extras is not None else None,
        me,
        menu,
    )


# --------------------------------------------------------------------------- the menu

#: A share of requests delayed by a cold start that counts as "large": the menu then includes the
#: option that removes most of those waits, and a finding says so.
_MANY_DELAYED = 0.1
#: The fastest option may cost up to this many times the current (or the cheapest) replica-seconds.
_FAST_BUDGET = 3.0


@dataclass(frozen=True)
class _Lulls:
    lengths: Floats  # silences between bursts (gaps ≥ a minute), s
    rise: float | None  # median seconds from a burst's first request until one replica is not enough

    def quantile(self, q: float) -> float:
        return float(np.percentile(self.lengths, q)) if self.lengths.size else 0.0

    def outlasted(self, seconds: float) -> float:
        """The share of lulls a replica kept ``seconds`` after a burst outlasts."""
        return float((self.lengths <= seconds).mean()) if self.lengths.size else 1.0


def _lulls(setup: AdviseSetup) -> _Lulls:
    a = setup.arrivals
    gaps = np.diff(a)
    breaks = np.flatnonzero(gaps >= 60.0)
    starts = np.r_[0, breaks + 1]
    ends = np.r_[breaks + 1, a.shape[0]]
    k = setup.predict_concurrency
    rises = [float(a[i + k] - a[i]) for i, j in zip(starts, ends) if j - i > k]
    return _Lulls(gaps[breaks], float(np.median(rises)) if rises else None)


def _warm_candidates(lab: _Lab, cur: AutoscalingSettings, base: AutoscalingSettings, lulls: _Lulls, t: _Traffic) -> None:
    """Replay what keeps replicas warm: delays that outlast most lulls, and a floor for the bursts."""
    window = cur.autoscaling_window
    delays = sorted({min(3600, max(0, math.ceil((lulls.quantile(q) - window) / 60) * 60 + 60)) for q in (50, 90, 100)})
    starts = {cur.model_dump_json(): cur, base.model_dump_json(): base}.values()
    lab.each(
        s
        for start in starts
        for s in [
            *(lab.settings(start, scale_down_delay=d) for d in delays),
            *(lab.settings(start, min_replica=min(floor, start.max_replica))
              for floor in sorted({t.steady, t.peak}) if floor > start.min_replica),
        ]
    )


def _front(points: Iterable[tuple[AutoscalingSettings, dict[str, Any]]]) -> list[tuple[AutoscalingSettings, dict[str, Any]]]:
    """The cost/latency Pareto front (replica-seconds vs delayed requests, then p99), cheapest first."""
    ranked = sorted(points, key=lambda c: (_num(c[1], COST), _num(c[1], DELAYED), _num(c[1], P99)))
    front: list[tuple[AutoscalingSettings, dict[str, Any]]] = []
    for s, m in ranked:
        # Kept when quicker than every cheaper point kept: fewer delayed, or as many and less p99 wait.
        if not front or (_num(m, DELAYED), _num(m, P99)) < (_num(front[-1][1], DELAYED), _num(front[-1][1], P99)):
            front.append((s, m))
    return front


def _option_why(
    setup: AdviseSetup, cur: AutoscalingSettings, s: AutoscalingSettings, m0: dict[str, Any], m: dict[str, Any],
    lulls: _Lulls, t: _Traffic,
) -> str:
    cost0, cost = _num(m0, COST), _num(m, COST)
    price = cost - cost0
    parts = [
        f"{_changes(cur, s)}." if _changes(cur, s) != "no change" else "The current settings.",
        f"Simulated: {_describe(m)} ({'+' if price >= 0 else '−'}{abs(price) / 3600:,.1f} replica-hours, "
        f"{'+' if price >= 0 else '−'}{abs(price) / max(cost0, 1e-9) * 100:.0f} % against now; delayed requests "
        f"{int(_num(m0, DELAYED)):,} → {int(_num(m, DELAYED)):,}, p99 queue wait {_num(m0, P99):.1f} → {_num(m, P99):.1f} s).",
    ]
    cold = setup.cold_start.nominal
    if s.scale_down_delay > cur.scale_down_delay and lulls.lengths.size:
        kept0 = cur.autoscaling_window + cur.scale_down_delay
        kept = s.autoscaling_window + s.scale_down_delay
        parts.append(
            f"The lulls between bursts last {lulls.quantile(50):.0f} s (median) to {lulls.quantile(90):.0f} s "
            f"(90th percentile). A replica stays about autoscaling_window + scale_down_delay after a burst: "
            f"{kept0} s now, gone before {100 * (1 - lulls.outlasted(kept0)):.0f} % of the lulls end, so the next "
            f"burst waits a {cold:g} s cold start; {kept} s outlasts {100 * lulls.outlasted(kept):.0f} % of them."
        )
    if s.min_replica > cur.min_replica:
        rise = f"within {lulls.rise:.0f} s" if lulls.rise is not None else "at once"
        parts.append(
            f"A burst outgrows one replica {rise} of its first request, faster than a {cold:g} s cold start, "
            f"and needs up to {t.peak} at once: min_replica {s.min_replica} keeps them warm."
        )
    if s.schedules != cur.schedules:
        parts.append("A schedule holds replicas for the daily peak before it starts.")
    if s.scale_down_delay < cur.scale_down_delay and cost < cost0:
        parts.append(f"A shorter scale_down_delay ({s.scale_down_delay} s) lets replicas go sooner after demand falls.")
    return " ".join(parts)


def _menu(
    lab: _Lab, cur: AutoscalingSettings, m0: dict[str, Any], base: AutoscalingSettings, mb: dict[str, Any], t: _Traffic,
) -> tuple[list[Option], Finding | None]:
    """Up to three settings on the cost/latency front, and a finding when many requests wait for a cold start."""
    setup = lab.setup
    lulls = _lulls(setup)
    n = float(setup.arrivals.shape[0])
    many = _num(m0, DELAYED) >= max(_significant(lab), _MANY_DELAYED * n)
    if many:
        _warm_candidates(lab, cur, base, lulls, t)
    front = _front(lab.plain.values())
    budget = _FAST_BUDGET * max(_num(m0, COST), _num(mb, COST))
    affordable = [c for c in front if _num(c[1], COST) <= budget]
    options: list[tuple[str, str, AutoscalingSettings, dict[str, Any]]] = []
    if base.model_dump_json() != cur.model_dump_json():
        options.append(("cheapest", "The cheapest at today's latency", base, mb))
    fastest = None
    if affordable:
        # The fewest delayed requests (within the joint search's slack), then the lowest p99 wait
        # (within its tolerance), then the cheapest of those.
        least = min(_num(m, DELAYED) for _, m in affordable) + max(3.0, 0.005 * n)
        quick = [c for c in affordable if _num(c[1], DELAYED) <= least]
        wait = min(_num(m, P99) for _, m in quick) * 1.2 + 0.5
        fastest = min((c for c in quick if _num(c[1], P99) <= wait), key=lambda c: _num(c[1], COST))
    if fastest is not None and (
        _improves(mb, fastest[1], DELAYED, share=0.3, absolute=_significant(lab))
        or _improves(mb, fastest[1], P99, share=0.3, absolute=1.0)
    ):
        between = [c for c in affordable if _num(mb, COST) < _num(c[1], COST) < _num(fastest[1], COST)]
        if between:
            c_lo, c_hi = _num(mb, COST), _num(fastest[1], COST)
            d_lo, d_hi = _num(fastest[1], DELAYED), max(_num(mb, DELAYED), _num(fastest[1], DELAYED) + 1)

            def distance(c: tuple[AutoscalingSettings, dict[str, Any]]) -> float:
                return (_num(c[1], COST) - c_lo) / max(c_hi - c_lo, 1e-9) + (_num(c[1], DELAYED) - d_lo) / (d_hi - d_lo)

            s_b, m_b = min(between, key=distance)
            if distance((s_b, m_b)) < 1.0:  # nearer the ideal than either end
                options.append(("balanced", "Balanced: most of the latency gain for part of the price", s_b, m_b))
        options.append((
            "fastest", f"The fewest cold-start waits within {_FAST_BUDGET:g}× today's replica-seconds", *fastest))
    menu = [Option(name, title, _option_why(setup, cur, s, m0, m, lulls, t), _patch(s), dict(m))
            for name, title, s, m in options]
    finding = None
    # Said as a finding when the recommendation at today's latency leaves those waits in place.
    if many and fastest is not None and _num(fastest[1], DELAYED) <= 0.2 * _num(m0, DELAYED) < _num(mb, DELAYED):
        s, m = fastest
        finding = Finding(
            "cold_start_waits",
            f"{int(_num(m0, DELAYED)):,} of {int(n):,} requests wait for a cold start: keeping replicas warm "
            f"removes most of those waits, at a price",
            _option_why(setup, cur, s, m0, m, lulls, t),
            _patch(s),
            _effect(m0, m),
        )
    return menu, finding


def _changes(before: AutoscalingSettings, after: AutoscalingSettings) -> str:
    names = ("min_replica", "max_replica", "autoscaling_window", "scale_down_delay", "concurrency_target",
             "target_utilization_percentage")
    moved = [f"{n} {getattr(before, n)} → {getattr(after, n)}" for n in names if getattr(before, n) != getattr(after, n)]
    return ", ".join(moved) or "no change"


def _tuned_finding(
    cur: AutoscalingSettings, combined: AutoscalingSettings, tuned: AutoscalingSettings,
    m1: dict[str, Any], mt: dict[str, Any], bounds: _Bounds, budget: bool,
) -> Finding:
    saved = 1 - _num(mt, COST) / max(_num(m1, COST), 1e-9)
    if bounds.violation(m1) > 0:
        title = f"Tuned together, the settings keep the p99 queue wait within {bounds.p99:g} s"
    elif budget:
        title = f"Tuned together, the settings cost {100 * saved:.0f} % less within a p99 queue wait of {bounds.p99:g} s"
    else:
        title = f"Tuned together, the settings cost {100 * saved:.0f} % less at the same latency"
    return Finding(
        "settings_tuned_together",
        title,
        "Changed one at a time, each setting looks right; searched together (a replica's slots, the headroom, "
        "a warm floor, the delay and the window trade against each other) they do the same work for fewer "
        f"replica-seconds: {_changes(cur, tuned)}. Simulated: {_describe(mt)}, against {_describe(m1)}"
        + (" with the other findings' changes." if combined != cur else "."),
        _patch(tuned),
        _effect(m1, mt),
    )


def _best_extras(
    lab: _Lab, cur: AutoscalingSettings, t: _Traffic, base: AutoscalingSettings, mb: dict[str, Any], bounds: _Bounds
) -> tuple[dict[str, bool] | None, AutoscalingSettings | None, dict[str, Any] | None]:
    """Each extra with settings tuned for it; kept only when Pareto-better than ``mb`` (the best without).

    An extra that, switched on over ``base``, costs more and delays more (one of them strictly) is
    not searched further: it only buys latency, and this search looks for cheaper at ``mb``'s.
    """
    # No more delayed requests than the best without extras: the search then looks for cheaper.
    tight = _Bounds(delayed=_num(mb, DELAYED), p99=max(bounds.p99, _num(mb, P99)))
    best: tuple[dict[str, bool], AutoscalingSettings, dict[str, Any]] | None = None
    names = ("trend", "burst")
    lab.prefetch((base, lab.extras(**{name: True})) for name in names)
    for name in names:
        trial = {name: True}
        extras = lab.extras(**trial)
        if _dominates(mb, lab.run(base, extras)):
            continue
        seen: list[tuple[AutoscalingSettings, dict[str, Any]]] = []
        _descend(lab, base, _near(_axes(lab, cur, t), base), tight, extras, seen, passes=1, keep=_num(mb, COST))
        better = [(s, m) for s, m in seen if _dominates(m, mb) and tight.violation(m) == 0]
        if not better:
            continue
        s, m = min(better, key=lambda c: (_num(c[1], COST), _num(c[1], DELAYED)))
        if best is None or _dominates(m, best[2]) or _num(m, COST) < _num(best[2], COST):
            best = (trial, with_extras(s, **trial), m)
    if best is None:
        return None, None, None
    return best


# --------------------------------------------------------------------------- recorded traffic


def traffic_to_arrivals(data: dict[str, Any]) -> tuple[Floats, float, Floats]:
    """The server's per-second history as (arrival times from 0, epoch, mean concurrency per second).

    ``{"start": unix s, "interval": 1.0, "arrivals": [int…], "concurrency": [float…]}``: the n
    arrivals of bucket k are spread evenly across it, at ``k·interval + (j + ½)·interval/n``.
    """
    try:
        start = float(data["start"])
        interval = float(data.get("interval", 1.0))
        counts = np.asarray(data["arrivals"], dtype=np.int64)
        concurrency = np.asarray(data.get("concurrency", []), dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise SimulationError(f"the traffic history is not in the expected shape: {exc}") from None
    if not (interval > 0 and math.isfinite(interval)) or counts.ndim != 1 or (counts < 0).any():
        raise SimulationError("the traffic history has a bad interval or negative arrival counts")
    n = int(counts.sum())
    if n == 0:
        raise SimulationError("the recorded traffic has no requests to advise on")
    bucket = np.repeat(np.arange(counts.shape[0], dtype=np.float64), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    j = np.arange(n, dtype=np.float64) - first
    per = np.repeat(counts.astype(np.float64), counts)
    times = (bucket + (j + 0.5) / per) * interval
    offset = float(times[0])
    return times - offset, start + offset, concurrency


def service_from_history(data: dict[str, Any]) -> float | None:
    """Mean seconds in the system per request, by Little's law (an upper bound on service time)."""
    arrivals = np.asarray(data.get("arrivals", []), dtype=np.float64)
    concurrency = np.asarray(data.get("concurrency", []), dtype=np.float64)
    interval = float(data.get("interval", 1.0))
    total = float(arrivals.sum())
    if total <= 0 or concurrency.size == 0:
        return None
    return float(concurrency.sum()) * interval / total
