"""Each policy on small traces, and the idle jump giving exactly the tick-by-tick result."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from swell.autoscaling import ConcurrencyWindow
from swell.config import AutoscalingSettings, parse_autoscaling
from swell.sim import POLICIES, ColdStart, SimConfig, replay, synthetic_trace
from swell.sim.policies import SimWindow

ONE = (np.array([0.0]), np.array([1.0]))


def _config(**kwargs: object) -> SimConfig:
    kwargs.setdefault("cold_start", ColdStart.parse("10"))
    return SimConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("policy", "replica_seconds", "wait"),
    [
        # 11 (last busy) + 60 (window) + 900 (delay).
        ("swell", 971.0, 10.0),
        # Woken into panic (6 s mean 1 ≥ 2 × 0.7 per ready pod, counted as 1) until
        # the panic window falls below at 13; panic ends 60 s later (73); stable
        # wants 0 from there and the last pod goes after the 30 s grace: 103.
        ("knative", 103.0, 10.0),
        # 30 s look-back empty at 41; 1 → 0 waits downscale_delay_s 600: 641.
        ("ray-serve", 641.0, 10.0),
        # Kept 10 minutes after the request finished at 11.
        ("keepalive", 611.0, 10.0),
        # Started at -10 (one cold start early), stopped when idle at the tick 2.
        ("oracle", 12.0, 0.0),
    ],
)
def test_one_request_per_policy(policy: str, replica_seconds: float, wait: float) -> None:
    m = replay(*ONE, policy, _config()).metrics
    assert m["replica_seconds"] == replica_seconds
    assert m["queue_wait_max"] == wait
    assert m["cold_starts"] == 1
    assert m["requests_delayed_by_cold_start"] == (1 if wait else 0)


RAMP = (np.arange(0.0, 100.0, 0.1), np.ones(1000))  # 10 req/s, 1 s each, for 100 s


def _first_time(result: object, replicas: int) -> float:
    tl = result.timeline  # type: ignore[attr-defined]
    return float(tl.t[np.flatnonzero(tl.replicas >= replicas)[0]])


def test_ray_serve_waits_its_upscale_delay() -> None:
    result = replay(*RAMP, "ray-serve", _config(settings=parse_autoscaling({"max_replica": 5}), timeline=True))
    # Woken to 1 at once; the first replica is running at 10; 30 s later: 5.
    assert _first_time(result, 2) == 40.0
    assert result.metrics["max_replicas"] == 5


def test_knative_panics_and_swell_scales_up_at_the_first_tick() -> None:
    settings = parse_autoscaling({"max_replica": 5})
    for policy in ("knative", "swell"):
        result = replay(*RAMP, policy, _config(settings=settings, timeline=True))
        assert _first_time(result, 5) <= 2.0, policy


def test_oracle_never_waits_for_a_cold_start_it_could_foresee() -> None:
    trace = synthetic_trace("steps:rates=2/0/5/0,step=5m", seed=2)
    settings = parse_autoscaling({"max_replica": 10})
    m = replay(trace.arrivals, np.full(len(trace), 0.5), "oracle", _config(settings=settings)).metrics
    assert m["requests_delayed_by_cold_start"] == 0
    others = [
        replay(trace.arrivals, np.full(len(trace), 0.5), p, _config(settings=settings)).metrics["replica_seconds"]
        for p in POLICIES
        if p != "oracle"
    ]
    assert m["replica_seconds"] < min(others)


SETTINGS = [
    AutoscalingSettings(),
    AutoscalingSettings(max_replica=4, autoscaling_window=30, scale_down_delay=120),
    AutoscalingSettings(min_replica=1, max_replica=3, scale_down_delay=0, target_utilization_percentage=100),
]


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("settings", SETTINGS, ids=["defaults", "small-window", "min-one"])
def test_jumping_idle_stretches_equals_ticking_through_them(policy: str, settings: AutoscalingSettings) -> None:
    trace = synthetic_trace("steps:rates=1/0/0/4/0/0/0/0.2,step=10m", seed=5)
    service = np.random.default_rng(1).exponential(1.5, len(trace))
    results = []
    for skip in (True, False):
        config = _config(
            settings=settings, cold_start=ColdStart.parse("lognormal:8,0.4"), skip_idle=skip, timeline=True
        )
        results.append(replay(trace.arrivals, service, policy, config))
    jumped, ticked = results
    a, b = dict(jumped.metrics), dict(ticked.metrics)
    assert a.pop("ticks") < b.pop("ticks")
    assert a == b
    assert jumped.timeline is not None and ticked.timeline is not None
    for column in ("t", "replicas", "ready", "concurrency"):
        np.testing.assert_array_equal(getattr(jumped.timeline, column), getattr(ticked.timeline, column))


def test_a_tick_other_than_one_second() -> None:
    fine = replay(*ONE, "swell", _config(tick=0.25)).metrics
    assert fine["replica_seconds"] == 971.0  # 11 + 60 + 900 does not depend on the tick
    coarse = replay(*ONE, "swell", _config(tick=7.0)).metrics
    assert 971.0 <= coarse["replica_seconds"] < 971.0 + 14


@pytest.mark.parametrize("policy", list(POLICIES))
def test_a_year_of_silence_costs_a_few_ticks(policy: str) -> None:
    year = 365 * 86400.0
    m = replay(np.array([0.0, year]), np.ones(2), policy, _config()).metrics
    assert m["ticks"] < 3000  # not 31 million
    assert m["cold_starts"] == 2 and m["simulated_seconds"] > year


@pytest.mark.parametrize("seed", range(4))
def test_the_replay_window_answers_as_the_live_one_bit_for_bit(seed: int) -> None:
    # The jumps rely on SimWindow's means, now and as they will be if nothing arrives, being
    # the very floats the live window gives.
    rng = np.random.default_rng(seed)
    live, sim = ConcurrencyWindow(-3.0, retention=70.0), SimWindow(-3.0, retention=70.0)
    t = -3.0
    for _ in range(200):
        t += float(rng.choice([0.5, 1.0, 1.0, 7.0]))
        value = float(rng.choice([0.0, 0.0, rng.uniform(0, 9)]))
        live.record(t, value)
        sim.record(t, value)
        for now in (t, t - 0.25, t + 3.0):
            for window in (6.0, 60.0, 300.0):
                assert sim.mean(now, window) == live.mean(now, window)
    for x in (t + np.arange(0, 130) * 0.5).tolist():  # the idle projection is the live mean after a zero
        idle = copy.deepcopy(live)
        idle.record(x, 0.0)
        assert sim.mean_if_idle(x, 60.0) == idle.mean(x, 60.0)
