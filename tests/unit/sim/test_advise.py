"""``swell advise`` on synthetic traces of each situation of issue 8.

Each test builds the situation as a seeded synthetic trace, checks that advise
names it, and that the recommendation, replayed, improves the stated metric.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from swell.config import AutoscalingSettings, parse_autoscaling
from swell.sim import ColdStart, SimConfig, replay, synthetic_trace
from swell.sim._advise import (
    EFFECT_METRICS,
    Advice,
    AdviseSetup,
    advise,
    service_from_history,
    traffic_to_arrivals,
)


def _advise(
    spec: str,
    settings: dict[str, Any],
    *,
    service: float = 1.0,
    pc: int = 1,
    cap: int = 10,
    joint: bool = False,
    budget: float | None = None,
) -> tuple[Advice, AdviseSetup]:
    """Advise on a seeded synthetic trace; the single checks only unless ``joint`` (hundreds of replays)."""
    trace = synthetic_trace(spec, seed=0)
    setup = AdviseSetup(
        trace.arrivals,
        np.full(len(trace), service),
        parse_autoscaling(settings, max_replica_cap=cap),
        predict_concurrency=pc,
        cold_start=ColdStart("fixed", 30.0),
        max_replica_cap=cap,
        joint_search=joint,
        queue_wait_p99=budget,
    )
    return advise(setup), setup


def _replayed(setup: AdviseSetup, settings: dict[str, Any]) -> dict[str, Any]:
    config = SimConfig(
        settings=parse_autoscaling(settings, max_replica_cap=setup.max_replica_cap),
        predict_concurrency=setup.predict_concurrency,
        cold_start=setup.cold_start,
    )
    return replay(setup.arrivals, setup.service, "swell", config).metrics


def _finding(advice: Advice, finding_id: str) -> Any:
    ids = [f.id for f in advice.findings]
    assert finding_id in ids, f"{finding_id} not among {ids}"
    return next(f for f in advice.findings if f.id == finding_id)


# (situation, trace, settings, model, finding id, metric that must improve)
SITUATIONS = [
    pytest.param(
        "poisson:rate=100,duration=10m", {"max_replica": 10, "concurrency_target": 1}, 0.05, 16, 10,
        "concurrency_target_low", "replica_seconds", id="concurrency_target_1_on_an_embedding_model",
    ),
    pytest.param(
        "steps:rates=0/50/5,step=5m", {"min_replica": 0, "max_replica": 100}, 1.0, 4, 100,
        "cold_spike", "requests_delayed_by_cold_start", id="spike_0_to_50_rps_with_max_100",
    ),
    pytest.param(
        "steps:rates=3/0/3/0/3/0/3/0,step=4m", {"max_replica": 10, "scale_down_delay": 30}, 1.0, 4, 10,
        "scale_down_delay_short", "requests_delayed_by_cold_start", id="scale_down_delay_30_with_lulls",
    ),
    pytest.param(
        "poisson:rate=8,duration=15m", {"max_replica": 2}, 1.0, 1, 10,
        "max_replica_caps_peak", "queue_wait_p99", id="max_replica_below_the_peak",
    ),
    pytest.param(
        "steps:rates=1/2/4/8/16/32,step=2m", {"max_replica": 50, "autoscaling_window": 600}, 1.0, 1, 50,
        "autoscaling_window_long", "queue_wait_p99", id="window_too_long_for_a_ramp",
    ),
    pytest.param(
        "steps:rates=2/6/2/10/2/14/2/18,step=3m", {"max_replica": 30, "target_utilization_percentage": 100},
        1.0, 1, 30, "utilization_high", "requests_delayed_by_cold_start", id="utilization_100_with_bursts",
    ),
    pytest.param(
        "poisson:rate=0.002,duration=6h", {"min_replica": 2, "max_replica": 4}, 1.0, 1, 10,
        "idle_cost", "replica_seconds", id="idle_deployment",
    ),
]


@pytest.mark.parametrize(("spec", "settings", "service", "pc", "cap", "finding_id", "metric"), SITUATIONS)
def test_advise_names_the_situation_and_its_recommendation_improves_the_metric(
    spec: str, settings: dict[str, Any], service: float, pc: int, cap: int, finding_id: str, metric: str
) -> None:
    advice, setup = _advise(spec, settings, service=service, pc=pc, cap=cap)
    finding = _finding(advice, finding_id)
    assert finding.title and finding.why
    assert set(finding.effect) == {"current", "recommended"}
    assert set(finding.effect["current"]) == set(EFFECT_METRICS)
    # The recommendation is a valid PATCH body, and replayed on its own it improves the metric.
    after = _replayed(setup, finding.recommended)
    before = _replayed(setup, settings)
    assert after[metric] < before[metric], (metric, before[metric], after[metric])
    assert after[metric] == finding.effect["recommended"][metric]
    assert not advice.good


def test_min_replica_1_is_told_to_keep_2_for_redundancy() -> None:
    advice, _ = _advise("poisson:rate=2,duration=10m", {"min_replica": 1, "max_replica": 10}, pc=4)
    finding = _finding(advice, "min_replica_one")
    assert finding.recommended["min_replica"] >= 2


# What advise itself recommends for this traffic (from min 2, target 4, utilisation 70, window 60):
# two replicas of four slots hold ~5 in flight; utilisation 85 and a 30 s window keep a third away.
WELL_TUNED: tuple[str, dict[str, Any]] = (
    "poisson:rate=5,duration=15m",
    {"min_replica": 2, "max_replica": 10, "concurrency_target": 4, "scale_down_delay": 900,
     "target_utilization_percentage": 85, "autoscaling_window": 30},
)


def test_a_well_tuned_deployment_is_told_its_settings_are_good() -> None:
    advice, _ = _advise(*WELL_TUNED, pc=4, joint=True)
    assert advice.findings == []
    assert advice.good
    assert "good" in advice.summary
    out = advice.as_dict()
    assert out["findings"] == [] and out["recommended"]["settings"] == out["current"]["settings"]
    assert out["with_extras"] is None


# --------------------------------------------------------------------------- the joint search

BURSTS = "steps:rates=0.5/4/0.5/4,step=3m"


@pytest.fixture(scope="module")
def bursts_advice() -> tuple[Advice, AdviseSetup]:
    return _advise(BURSTS, {"max_replica": 10}, pc=4, joint=True)


def test_the_joint_search_finds_cheaper_settings_at_the_same_latency(bursts_advice: tuple[Advice, AdviseSetup]) -> None:
    # Baseten's defaults on a 4-slot model: each setting alone looks fine, together they overpay.
    advice, setup = bursts_advice
    finding = _finding(advice, "settings_tuned_together")
    before = _replayed(setup, {"max_replica": 10})
    after = _replayed(setup, finding.recommended)
    assert after == {**after, **finding.effect["recommended"]}
    assert after["replica_seconds"] <= 0.9 * before["replica_seconds"]
    # "The same latency": the bounds the search keeps.
    assert after["requests_delayed_by_cold_start"] <= before["requests_delayed_by_cold_start"] + max(3, 0.005 * len(setup.arrivals))
    assert after["queue_wait_p99"] <= before["queue_wait_p99"] * 1.2 + 0.5
    assert advice.recommended == finding.recommended  # the PATCH body is the tuned settings
    parse_autoscaling(advice.recommended)


def test_a_queue_wait_budget_buys_cheaper_settings(bursts_advice: tuple[Advice, AdviseSetup]) -> None:
    strict, setup = bursts_advice
    loose, _ = _advise(BURSTS, {"max_replica": 10}, pc=4, joint=True, budget=10.0)
    a, b = _replayed(setup, strict.recommended), _replayed(setup, loose.recommended)
    assert b["replica_seconds"] <= a["replica_seconds"]
    assert b["queue_wait_p99"] <= 10.0


def test_a_pool_of_processes_gives_the_same_advice(bursts_advice: tuple[Advice, AdviseSetup]) -> None:
    # Candidates of one block are replayed at once in worker processes and compared in order.
    advice, setup = bursts_advice
    pooled = advise(dataclasses.replace(setup, workers=2))
    assert pooled.as_dict() == advice.as_dict()


def test_the_floor_alone_bounds_a_candidates_replica_seconds() -> None:
    # What lets the search skip a candidate before replaying it (_Lab.least_cost).
    from swell.sim._advise import _Lab

    trace = synthetic_trace(BURSTS, seed=0)
    setup = AdviseSetup(trace.arrivals, np.full(len(trace), 1.0), parse_autoscaling({"max_replica": 10}),
                        predict_concurrency=4, cold_start=ColdStart("fixed", 30.0))
    lab = _Lab(setup, None)
    for floor in (1, 3, 10):
        for delay in (0, 600):
            s = lab.settings(setup.settings, min_replica=floor, scale_down_delay=delay)
            assert s is not None
            assert lab.run(s)["replica_seconds"] >= lab.least_cost(s) > 0


def _offered_extra() -> tuple[AdviseSetup, Any, dict[str, bool], AutoscalingSettings, dict[str, Any], dict[str, Any]]:
    """A ramp to 16 req/s with a 300 s window: the extra advise offers, its settings and metrics."""
    from swell.sim._advise import _best_extras, _bounds, _Lab, _traffic

    trace = synthetic_trace("steps:rates=0.5/1/2/4/8/16/0.5,step=2m", seed=0)
    base = parse_autoscaling({"max_replica": 10, "concurrency_target": 4, "autoscaling_window": 300, "scale_down_delay": 300})
    setup = AdviseSetup(trace.arrivals, np.full(len(trace), 1.0), base, predict_concurrency=4, cold_start=ColdStart("fixed", 30.0))
    lab = _Lab(setup, None)
    plain = lab.run(base)
    extras, settings, metrics = _best_extras(lab, base, _traffic(setup), base, plain, _bounds(lab, plain))
    assert extras and settings is not None and metrics is not None
    return setup, lab, extras, settings, metrics, plain


def test_an_extra_is_offered_only_with_settings_where_it_is_pareto_better() -> None:
    setup, lab, extras, settings, metrics, plain = _offered_extra()
    # Pareto-better than the plain rule: no more replica-seconds, no more delayed, fewer of one.
    cost, delayed = "replica_seconds", "requests_delayed_by_cold_start"
    assert metrics[cost] <= plain[cost] and metrics[delayed] <= plain[delayed]
    assert metrics[cost] < plain[cost] or metrics[delayed] < plain[delayed]
    # And it is what the replay with the extra on gives.
    replayed = replay(setup.arrivals, setup.service, "swell", SimConfig(
        settings=settings, predict_concurrency=4, cold_start=setup.cold_start, extras=lab.extras(**extras))).metrics
    assert replayed[cost] == metrics[cost] and replayed[delayed] == metrics[delayed]


def test_an_offered_extra_is_switched_on_in_its_patch_body_which_replays_as_reported() -> None:
    from swell.sim._advise import _patch

    setup, _, extras, settings, metrics, _ = _offered_extra()
    body = _patch(settings)
    assert extras and all(body[name] is True for name in extras)
    # The body alone, as the live loop gets it through a PATCH: no Extras passed to the replay.
    replayed = replay(setup.arrivals, setup.service, "swell", SimConfig(
        settings=parse_autoscaling(body), predict_concurrency=4, cold_start=setup.cold_start)).metrics
    for name in ("replica_seconds", "requests_delayed_by_cold_start", "queue_wait_p99"):
        assert replayed[name] == metrics[name]


def test_json_shape_uses_simulate_metric_names() -> None:
    advice, _ = _advise("poisson:rate=8,duration=10m", {"max_replica": 2})
    out = advice.as_dict()
    for f in out["findings"]:
        assert {"id", "title", "why", "recommended", "effect"} <= set(f)
        assert set(f["effect"]["current"]) == set(EFFECT_METRICS)
        parse_autoscaling(f["recommended"])  # a body the API accepts


def test_daily_peak_proposes_a_schedule_that_prewarms() -> None:
    # Three days, silent but for 09:00-09:30 UTC at 1 req/s; a 30 s cold start each morning.
    # (Silence, not a trickle: with scale_down_delay 60 every request of a trickle pays a cold
    # start, which no schedule fixes. Idle stretches cost the replay nothing, so this is fast.)
    halves = ["0"] * 18 + ["1"] + ["0"] * 29
    spec = "steps:rates=" + "/".join(halves * 3) + ",step=30m"
    advice, setup = _advise(spec, {"max_replica": 10, "scale_down_delay": 60}, pc=1)
    finding = _finding(advice, "daily_peak")
    schedules = finding.recommended["schedules"]
    assert schedules and schedules[-1]["start"] < "09:00" <= schedules[-1]["end"]
    before = _replayed(setup, {"max_replica": 10, "scale_down_delay": 60})
    after = _replayed(setup, finding.recommended)
    assert after["requests_delayed_by_cold_start"] < 0.7 * before["requests_delayed_by_cold_start"]
    assert after["requests_delayed_by_cold_start"] == finding.effect["recommended"]["requests_delayed_by_cold_start"]


# --------------------------------------------------------------------------- the menu

BURSTY = "bursts:rate=2,width=20s,lull=2m/8m,duration=2h"


def test_bursty_traffic_gets_an_option_that_keeps_replicas_across_lulls() -> None:
    # Bursts of 20 s, lulls of 2-8 min, scale_down_delay 30, a 30 s cold start: nearly every
    # request waits for one. Some offer keeps a replica longer than the typical lull, and
    # replayed it delays far fewer requests.
    current = {"max_replica": 10, "scale_down_delay": 30}
    advice, setup = _advise(BURSTY, current, pc=4)
    n = setup.arrivals.shape[0]
    now = advice.metrics["requests_delayed_by_cold_start"]
    assert now >= 0.5 * n
    gaps = np.diff(setup.arrivals)
    lull = float(np.median(gaps[gaps >= 60]))
    offers = [f.recommended for f in advice.findings] + [o.settings for o in advice.menu]
    kept = [s for s in offers if s["scale_down_delay"] > lull - s["autoscaling_window"] and s["scale_down_delay"] > 30]
    assert kept
    assert min(_replayed(setup, s)["requests_delayed_by_cold_start"] for s in kept) <= 0.2 * now
    assert any("lulls between bursts" in o.why for o in advice.menu) or any(
        f.id == "scale_down_delay_short" for f in advice.findings)


def test_the_menu_is_on_the_front_and_each_option_replays_as_reported() -> None:
    advice, setup = _advise(BURSTY, {"max_replica": 10, "scale_down_delay": 30}, pc=4)
    assert advice.menu and [o.name for o in advice.menu][0] == "cheapest"
    out = advice.as_dict()["menu"]
    for o, shown in zip(advice.menu, out, strict=True):
        assert {"name", "title", "why", "settings", "metrics"} == set(shown)
        assert set(o.metrics) == set(EFFECT_METRICS)
        parse_autoscaling(o.settings)  # a body the API accepts
        replayed = _replayed(setup, o.settings)
        assert {k: replayed[k] for k in EFFECT_METRICS} == o.metrics
    costs = [o.metrics["replica_seconds"] for o in advice.menu]
    assert costs == sorted(costs)  # cheapest first; each later one buys latency


def test_a_well_tuned_deployment_has_at_most_one_finding_and_no_cold_start_alarm() -> None:
    advice, _ = _advise(*WELL_TUNED, pc=4)
    assert len(advice.findings) <= 1
    assert all(f.id != "cold_start_waits" for f in advice.findings)


# --------------------------------------------------------------------------- recorded traffic


HISTORY = {"start": 1_700_000_000, "interval": 1.0, "arrivals": [2, 0, 1, 0, 0, 3], "concurrency": [1.0, 0.5, 0.5, 0.0, 0.0, 1.5]}


def test_recorded_traffic_becomes_evenly_spread_arrivals() -> None:
    arrivals, epoch, concurrency = traffic_to_arrivals(HISTORY)
    assert arrivals.tolist() == pytest.approx([0.0, 0.5, 2.25, 5 - 0.25 + 1 / 6, 5 - 0.25 + 0.5, 5 - 0.25 + 5 / 6])
    assert epoch == pytest.approx(1_700_000_000.25)
    assert concurrency.tolist() == HISTORY["concurrency"]
    assert np.all(np.diff(arrivals) >= 0)


def test_service_time_from_history_is_littles_law() -> None:
    assert service_from_history(HISTORY) == pytest.approx(3.5 / 6)


@pytest.mark.parametrize(
    "bad",
    [{"interval": 1.0, "arrivals": [1]}, {"start": 0, "arrivals": [-1]}, {"start": 0, "arrivals": [0, 0]}],
)
def test_bad_history_is_a_clear_error(bad: dict[str, Any]) -> None:
    from swell.sim import SimulationError

    with pytest.raises(SimulationError):
        traffic_to_arrivals(bad)
