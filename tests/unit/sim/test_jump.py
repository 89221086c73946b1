"""The jumping replay equals the ticking one, metric for metric, on real and on month-long traces.

The engine skips the work of ticks where nothing can change (no arrival, no request ending or
starting, no replica ready or drained, no held value expiring, no schedule edge, no window
sample that changes what the rule wants).  Each case replays the same trace both ways.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from swell.autoscaling import Extras
from swell.config import parse_autoscaling
from swell.sim import ColdStart, ServiceTime, SimConfig, load_trace, replay, synthetic_trace

# The shared folder is the repository's sibling: ../shared/traces.
TRACES = Path(__file__).resolve().parents[3].parent / "shared" / "traces"
AZURE = [TRACES / f"AzureLLMInferenceTrace_{name}.csv" for name in ("code", "conv")]

SETTINGS: dict[str, dict[str, Any]] = {
    "defaults": {"max_replica": 10},
    "tuned": {"min_replica": 4, "max_replica": 10, "scale_down_delay": 540, "concurrency_target": 4,
              "target_utilization_percentage": 85},
    "no-delay": {"max_replica": 10, "scale_down_delay": 0, "autoscaling_window": 30},
    "schedule": {"max_replica": 10, "scale_down_delay": 120,
                 "schedules": [{"start": "01:00", "end": "03:30", "min_replica": 3}]},
}


def _pair(arrivals: np.ndarray, service: np.ndarray, settings: dict[str, Any], *, reference: dict[str, Any],
          extras: Extras | None = None, slots: int = 4) -> tuple[dict[str, Any], dict[str, Any]]:
    results = []
    for flags in ({}, reference):
        config = SimConfig(
            settings=parse_autoscaling(settings, max_replica_cap=10), predict_concurrency=slots,
            cold_start=ColdStart.parse("lognormal:30,0.3"), timeline=True, extras=extras or Extras(), **flags,
        )
        results.append(replay(arrivals, service, "swell", config))
    jumped, ticked = results
    assert jumped.timeline is not None and ticked.timeline is not None
    for column in ("t", "replicas", "ready", "concurrency", "queued"):
        np.testing.assert_array_equal(getattr(jumped.timeline, column), getattr(ticked.timeline, column))
    a, b = dict(jumped.metrics), dict(ticked.metrics)
    assert a.pop("ticks") <= b.pop("ticks")
    return a, b


@pytest.mark.skipif(not AZURE[0].exists(), reason=f"shared traces not found at {TRACES}")
@pytest.mark.parametrize("path", AZURE, ids=["code", "conv"])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_jumping_equals_ticking_on_the_azure_traces(path: Path, name: str) -> None:
    trace = load_trace(str(path))
    service = ServiceTime.parse("auto").durations(trace)
    a, b = _pair(trace.arrivals, service, SETTINGS[name], reference={"skip_idle": False})
    assert a == b


@pytest.mark.skipif(not AZURE[0].exists(), reason=f"shared traces not found at {TRACES}")
@pytest.mark.parametrize("extras", [Extras(burst=True, cold_start=30.0, service_time=2.0, predict_concurrency=4),
                                    Extras(trend=True, cold_start=30.0)], ids=["burst", "trend"])
def test_jumping_equals_ticking_with_the_extras(extras: Extras) -> None:
    trace = load_trace(str(AZURE[0]))
    service = ServiceTime.parse("auto").durations(trace)
    head = trace.arrivals < 900.0  # a quarter of an hour: the trend extra makes ticking slow
    a, b = _pair(trace.arrivals[head], service[head], SETTINGS["defaults"], reference={"skip_idle": False},
                 extras=extras)
    assert a == b


def sparse_month(seed: int, clusters: int, days: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """Clusters of a few requests seconds apart, hours apart, with a daily rhythm: a quiet model's month."""
    rng = np.random.default_rng(seed)
    span = days * 86400.0
    centres = rng.uniform(0, span, clusters * 3)
    keep = rng.uniform(0, 1, centres.shape[0]) < 0.5 + 0.45 * np.sin(2 * np.pi * centres / 86400.0)
    centres = np.sort(centres[keep][:clusters])
    sizes = rng.poisson(6, centres.shape[0]) + 1
    arrivals = np.sort(np.concatenate([c + rng.exponential(4.0, k).cumsum() for c, k in zip(centres, sizes)]))
    return arrivals - arrivals[0], rng.lognormal(0.3, 0.6, arrivals.shape[0])


@pytest.mark.parametrize("name", list(SETTINGS))
def test_jumping_equals_ticking_on_a_sparse_day(name: str) -> None:
    # Every tick of a day, against the jumps.
    arrivals, service = sparse_month(seed=3, clusters=40, days=1.0)
    a, b = _pair(arrivals, service, SETTINGS[name], reference={"skip_idle": False})
    assert a == b


@pytest.mark.parametrize("name", list(SETTINGS))
def test_jumping_equals_ticking_through_bursts(name: str) -> None:
    # bench/sim_month.py's traffic, six hours of it, against every tick: minute-long bursts that
    # outrun a 30 s cold start, so the replay coasts while replicas start with nothing in flight,
    # runs the rule where Policy.steady cannot tell, and projects each window's decay.
    arrivals = synthetic_trace("bursts:rate=0.25,width=60,lull=5m/2h,duration=6h", seed=2).arrivals
    service = np.random.default_rng(2).lognormal(np.log(2.0), 0.5, arrivals.shape[0])
    a, b = _pair(arrivals, service, SETTINGS[name], reference={"skip_idle": False})
    assert a == b


@pytest.mark.parametrize("slots", [4, 40])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_jumping_equals_ticking_through_crowds(name: str, slots: int) -> None:
    # Crowds of 100-800 requests inside one second (more than the cruise takes in a tick: the
    # whole tick's numpy path), queues longer than the cruise's chunk of the trace, with 40
    # slots a replica more in flight than it keeps, then a trickle that drains: every
    # hand-over between the cruise and the whole tick.
    rng = np.random.default_rng(5)
    parts, t = [], 0.0
    for _ in range(12):
        t += float(rng.uniform(30, 900))
        parts.append(t + rng.uniform(0, 0.9, int(rng.integers(100, 800))))
        parts.append(t + 1 + np.cumsum(rng.exponential(2.0, 25)))
    arrivals = np.sort(np.concatenate(parts))
    service = rng.lognormal(0.5, 0.6, arrivals.shape[0])
    a, b = _pair(arrivals, service, SETTINGS[name], reference={"skip_idle": False}, slots=slots)
    assert a == b
    assert a["queue_wait_max"] > 0 and a["requests_delayed_by_cold_start"] > 0


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_jumping_equals_the_idle_only_replay_on_a_sparse_month(seed: int, name: str) -> None:
    # Ticking through a month is 2.6 M ticks: the reference here skips only the stretches
    # where the window is empty and nothing is in flight (itself checked against ticking above
    # and in test_policies) and ticks through every busy second and every window's decay.
    arrivals, service = sparse_month(seed=seed, clusters=400)
    a, b = _pair(arrivals, service, SETTINGS[name], reference={"coast": False})
    assert a == b
