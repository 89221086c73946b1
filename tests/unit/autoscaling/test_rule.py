"""The scaling rule, stage by stage, as tables."""

from __future__ import annotations

import math
import random

import pytest

from swell.autoscaling import (
    Action,
    ConcurrencyWindow,
    Decision,
    Observation,
    ScalerState,
    clamp,
    decide,
    hold_for_scale_down,
    wanted_replicas,
)
from swell.config import AutoscalingSettings


def settings(**overrides: int) -> AutoscalingSettings:
    return AutoscalingSettings.model_validate(overrides, context={"max_replica_cap": 100})


# ---------------------------------------------------------------- stage 2: wanted


@pytest.mark.parametrize(
    ("overrides", "average", "wanted"),
    [
        ({}, 0.0, 0),
        ({}, 0.001, 1),
        ({}, 0.7, 1),  # exactly one replica's capacity (1 × 70 %)
        ({}, 0.71, 2),
        ({}, 7.0, 10),
        ({}, 7.9, 12),
        ({"target_utilization_percentage": 100}, 3.0, 3),  # integral ratio: no float round-up
        ({"target_utilization_percentage": 100}, 3.0000001, 4),
        ({"concurrency_target": 4, "target_utilization_percentage": 100}, 8.0, 2),
        ({"concurrency_target": 4, "target_utilization_percentage": 50}, 8.0, 4),
        ({"concurrency_target": 3, "target_utilization_percentage": 70}, 2.1, 1),  # 3 × 0.7 = 2.1
    ],
)
def test_wanted_replicas(overrides: dict[str, int], average: float, wanted: int) -> None:
    assert wanted_replicas(settings(**overrides), average) == wanted


# ---------------------------------------------------------------- stage 4: clamp


@pytest.mark.parametrize(
    ("min_replica", "max_replica", "target", "expected"),
    [
        (0, 1, 0, 0),
        (0, 1, 5, 1),
        (2, 5, 0, 2),
        (2, 5, 3, 3),
        (3, 3, 0, 3),  # min = max pins the count
        (3, 3, 9, 3),
    ],
)
def test_clamp(min_replica: int, max_replica: int, target: int, expected: int) -> None:
    assert clamp(settings(min_replica=min_replica, max_replica=max_replica), target) == expected


# ---------------------------------------------------------------- stage 3: hold


def run_hold(delay: int, samples: list[tuple[float, int]]) -> list[int]:
    s = settings(scale_down_delay=delay, max_replica=100)
    state = ScalerState()
    out = []
    for now, wanted in samples:
        held, state = hold_for_scale_down(s, state, wanted, now)
        out.append(held)
    return out


@pytest.mark.parametrize(
    ("delay", "samples", "expected"),
    [
        # scale-up is immediate
        (900, [(0, 1), (1, 5)], [1, 5]),
        # delay 0: the target follows wanted at once, down as well as up
        (0, [(0, 5), (1, 2), (2, 0)], [5, 2, 0]),
        # 5 was in force over [0, 1); lower demand since t=1 must last 10 s
        (10, [(0, 5), (1, 2), (10, 2), (10.5, 2), (11, 2)], [5, 5, 5, 5, 2]),
        # the delay exactly elapsed releases the old value
        (10, [(0, 3), (1, 0), (11, 0)], [3, 3, 0]),
        # an intermediate peak restarts the hold for its own level
        (10, [(0, 8), (1, 4), (5, 6), (6, 1), (11, 1), (16, 1)], [8, 8, 8, 8, 6, 1]),
        # a sample gap: the old value was in force until the late sample replaced it
        (10, [(0, 4), (30, 1), (39, 1), (40, 1)], [4, 4, 4, 1]),
    ],
)
def test_hold_for_scale_down(delay: int, samples: list[tuple[float, int]], expected: list[int]) -> None:
    assert run_hold(delay, samples) == expected


def test_hold_state_stays_small_under_rising_demand() -> None:
    s = settings(max_replica=100)
    state = ScalerState()
    for t in range(1000):
        _, state = hold_for_scale_down(s, state, t % 50, float(t))
    # a monotonic queue keeps only decreasing values
    values = [h.wanted for h in state.held]
    assert values == sorted(values, reverse=True)
    assert len(values) <= 50


def _hold_by_definition(delay: int, samples: list[tuple[float, int]]) -> list[int]:
    """The largest wanted in force at any moment of [now − delay, now], from the whole history."""
    out = []
    for i, (now, _) in enumerate(samples):
        # Sample j is in force from its time until the next sample's (the current one: until now).
        out.append(max(w for j, (t, w) in enumerate(samples[: i + 1])
                       if j == i or samples[j + 1][0] > now - delay))
    return out


@pytest.mark.parametrize("delay", [0, 3, 10, 900])
@pytest.mark.parametrize("seed", range(6))
def test_hold_for_scale_down_is_the_largest_wanted_of_the_last_delay(delay: int, seed: int) -> None:
    # Repeats of the same value (the steady tick) and irregular gaps, against the definition.
    rng = random.Random(seed)
    now, samples = 0.0, []
    for _ in range(300):
        now += rng.choice([0.5, 1.0, 1.0, 1.0, 4.0, 30.0])
        samples.append((now, rng.choice([0, 1, 1, 2, 2, 2, 3, 5]) if rng.random() < 0.4 else
                        (samples[-1][1] if samples else 0)))
    assert run_hold(delay, samples) == _hold_by_definition(delay, samples)


def test_hold_keeps_its_state_when_the_same_value_comes_again() -> None:
    s = settings(scale_down_delay=10, max_replica=100)
    _, state = hold_for_scale_down(s, ScalerState(), 4, 0.0)
    _, state = hold_for_scale_down(s, state, 2, 1.0)
    held, again = hold_for_scale_down(s, state, 2, 2.0)
    assert held == 4 and again == state


# ---------------------------------------------------------------- stage 1: window


@pytest.mark.parametrize(
    ("samples", "now", "window", "mean"),
    [
        ([], 10.0, 60, 0.0),
        ([(1, 2.0), (2, 4.0)], 2.0, 60, 3.0),  # only covered time counts
        ([(10, 1.0), (20, 3.0)], 20.0, 10, 3.0),  # window exactly one interval
        ([(10, 1.0), (20, 3.0)], 20.0, 15, (5 * 1.0 + 10 * 3.0) / 15),  # part of an interval
        ([(10, 1.0), (20, 3.0)], 30.0, 10, 0.0),  # window exactly elapsed past the data
        ([(10, 1.0), (40, 2.0)], 40.0, 60, (10 * 1.0 + 30 * 2.0) / 40),  # a 30 s sample gap covers its span
    ],
)
def test_window_mean(samples: list[tuple[float, float]], now: float, window: int, mean: float) -> None:
    w = ConcurrencyWindow(start=0.0)
    for t, value in samples:
        w.record(float(t), value)
    assert w.mean(now, window) == pytest.approx(mean)


def test_window_retention_keeps_answers_inside_it() -> None:
    w = ConcurrencyWindow(start=0.0, retention=100.0)
    for t in range(1, 1001):
        w.record(float(t), float(t % 7))
    expected = sum(t % 7 for t in range(941, 1001)) / 60
    assert w.mean(1000.0, 60) == pytest.approx(expected)
    assert len(w) <= 102


def test_window_rejects_negative_and_ignores_stale_samples() -> None:
    w = ConcurrencyWindow(start=0.0)
    w.record(5.0, 1.0)
    w.record(5.0, 9.0)  # not later: ignored
    assert w.mean(5.0, 60) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="negative"):
        w.record(6.0, -1.0)


# ---------------------------------------------------------------- the whole rule


def replay(
    s: AutoscalingSettings,
    busy: list[tuple[float, float, float]],
    until: int,
    *,
    wake_at: float | None = None,
) -> list[tuple[int, int, Action]]:
    """Tick once a second; ``busy`` lists (start, end, concurrency) spans."""

    def level(t: float) -> float:
        return sum(c for a, b, c in busy if a <= t < b)

    window = ConcurrencyWindow(start=0.0)
    state = ScalerState()
    replicas = 0
    out: list[tuple[int, int, Action]] = []
    if wake_at is not None:
        decision, state = decide(s, window, state, Observation(wake_at, 1, 0))
        replicas = decision.target
        out.append((0, decision.target, decision.action))
    for t in range(1, until + 1):
        window.record(float(t), level(t - 0.5))
        decision, state = decide(s, window, state, Observation(float(t), int(level(t)), replicas))
        if decision.target != replicas:
            out.append((t, decision.target, decision.action))
        replicas = decision.target
    return out


def test_one_request_lives_window_plus_delay_after_the_last_busy_second() -> None:
    # A request arrives at t=0 (wake), waits a 10 s cold start, is served 10..11.
    changes = replay(settings(), [(0, 11, 1)], until=2000, wake_at=0.0)
    assert changes == [(0, 1, Action.WAKE), (11 + 60 + 900, 0, Action.SCALE_DOWN)]


@pytest.mark.parametrize(
    ("overrides", "busy", "until", "expected"),
    [
        # delay 0: scale to zero as soon as the window forgets the traffic
        ({"scale_down_delay": 0, "autoscaling_window": 10}, [(0, 5, 1)], 60, [(1, 1), (15, 0)]),
        # min = max: nothing ever changes after the first tick
        ({"min_replica": 2, "max_replica": 2}, [(0, 50, 30)], 100, [(1, 2)]),
        # utilisation 100 % with an exactly integral load: 3 replicas, not 4
        (
            {"target_utilization_percentage": 100, "max_replica": 10, "autoscaling_window": 10},
            [(0, 100, 3)],
            30,
            [(1, 3)],
        ),
        # capped by max_replica
        ({"max_replica": 4}, [(0, 100, 50)], 20, [(1, 4)]),
        # min_replica keeps a floor through silence
        ({"min_replica": 1, "max_replica": 3, "scale_down_delay": 0, "autoscaling_window": 10}, [], 30, [(1, 1)]),
    ],
)
def test_rule_table(
    overrides: dict[str, int], busy: list[tuple[float, float, float]], until: int, expected: list[tuple[int, int]]
) -> None:
    changes = replay(settings(**overrides), busy, until)
    assert [(t, target) for t, target, _ in changes] == expected


def test_scale_up_follows_a_ramp_within_the_window() -> None:
    s = settings(max_replica=20, autoscaling_window=10)
    changes = replay(s, [(0, 100, 7)], until=20)
    targets = [target for _, target, _ in changes]
    assert targets == sorted(targets)
    assert targets[-1] == math.ceil(7 / 0.7)


def test_wake_is_immediate_and_says_so() -> None:
    s = settings()
    decision, _ = decide(s, ConcurrencyWindow(start=0.0), ScalerState(), Observation(12.5, 3, 0))
    assert decision.target == 1
    assert decision.action is Action.WAKE
    assert "wake" in decision.reason


def test_no_change_is_a_hold_decision() -> None:
    s = settings()
    decision, _ = decide(s, ConcurrencyWindow(start=0.0), ScalerState(), Observation(5.0, 0, 0))
    assert decision.action is Action.HOLD
    assert decision.target == 0
    assert decision.reason.startswith("hold")


def test_scale_down_reason_names_the_delay() -> None:
    s = settings(scale_down_delay=0, autoscaling_window=10)
    changes = replay(s, [(0, 5, 1)], until=60)
    assert changes[-1][2] is Action.SCALE_DOWN


# ---------------------------------------------------------------- the runner's inputs: promotion floor, back-off


def decide_once(s: AutoscalingSettings, observation: Observation, busy: float = 0.0) -> Decision:
    """One decision over a window that saw ``busy`` concurrency for its whole span."""
    window = ConcurrencyWindow(start=0.0)
    if busy:
        window.record(observation.now, busy)
    decision, _ = decide(s, window, ScalerState(), observation)
    return decision


@pytest.mark.parametrize(
    ("overrides", "observation", "busy", "target", "action", "promotion"),
    [
        # no floor: the rule alone
        ({"max_replica": 5}, Observation(10.0, 0, 0), 0.0, 0, Action.HOLD, False),
        # a floor while in force raises the target, starting what is missing
        ({"max_replica": 5}, Observation(10.0, 0, 0, promotion_floor=3), 0.0, 3, Action.SCALE_UP, True),
        ({"max_replica": 5}, Observation(10.0, 0, 3, promotion_floor=3, promotion_until=20.0), 0.0, 3, Action.HOLD, True),
        # ... never above max_replica
        ({"max_replica": 2}, Observation(10.0, 0, 0, promotion_floor=3), 0.0, 2, Action.SCALE_UP, True),
        # once its time is over it no longer holds
        ({"max_replica": 5}, Observation(20.0, 0, 3, promotion_floor=3, promotion_until=20.0), 0.0, 0, Action.SCALE_DOWN, False),
        # demand above the floor: the rule's target stands
        ({"max_replica": 10}, Observation(10.0, 4, 0, promotion_floor=2), 4.0, 6, Action.WAKE, False),
    ],
)
def test_promotion_floor(
    overrides: dict[str, int], observation: Observation, busy: float, target: int, action: Action, promotion: bool
) -> None:
    s = settings(scale_down_delay=0, autoscaling_window=10, **overrides)
    decision = decide_once(s, observation, busy)
    assert (decision.target, decision.action, decision.promotion) == (target, action, promotion)
    assert ("for a promotion" in decision.reason) is promotion


@pytest.mark.parametrize(
    ("overrides", "observation", "busy", "target", "withheld", "why"),
    [
        # a request waits during the back-off: no start until it ends
        ({}, Observation(10.0, 1, 0, backoff_until=12.0), 0.0, 0, 1, "back-off"),
        # the back-off is over: the wake goes ahead
        ({}, Observation(12.0, 1, 0, backoff_until=12.0), 0.0, 1, 0, None),
        # a failing model nobody waits for is not restarted for the window's memory ...
        ({}, Observation(10.0, 0, 0, failing=True), 1.0, 0, 1, "no request waits"),
        # ... but is as soon as somebody waits
        ({}, Observation(10.0, 1, 0, failing=True), 1.0, 1, 0, None),
        # ... and min_replica still asks for it
        ({"min_replica": 1}, Observation(10.0, 0, 0, failing=True), 0.0, 1, 0, None),
        # a back-off holds scale-up with replicas serving, counting only what is missing
        ({"max_replica": 5}, Observation(10.0, 4, 1, backoff_until=30.0), 3.0, 1, 4, "back-off"),
        # scale-down is never held
        ({"max_replica": 5}, Observation(10.0, 0, 3, backoff_until=30.0, failing=True), 0.0, 0, 0, None),
        # the back-off also holds the promotion floor's starts
        ({"max_replica": 5}, Observation(10.0, 0, 0, promotion_floor=2, backoff_until=30.0), 0.0, 0, 2, "back-off"),
    ],
)
def test_backoff(
    overrides: dict[str, int], observation: Observation, busy: float, target: int, withheld: int, why: str | None
) -> None:
    s = settings(scale_down_delay=0, autoscaling_window=10, **overrides)
    decision = decide_once(s, observation, busy)
    assert (decision.target, decision.withheld) == (target, withheld)
    if why is None:
        assert decision.action is not Action.HOLD or decision.target == observation.replicas
    else:
        assert decision.action is Action.HOLD and why in decision.reason


@pytest.mark.parametrize(
    ("overrides", "observation", "busy", "target", "action", "capped"),
    [
        # no ceiling: the window's memory of traffic wants its replica back
        ({}, Observation(10.0, 0, 0), 1.0, 1, Action.SCALE_UP, False),
        # stopped to make room for another deployment: it stays at the ceiling ...
        ({}, Observation(10.0, 0, 0, ceiling=0), 1.0, 0, Action.HOLD, True),
        # ... and gives up a replica that still waited for room
        ({"max_replica": 3}, Observation(10.0, 0, 2, ceiling=1), 2.0, 1, Action.SCALE_DOWN, True),
        # min_replica still holds
        ({"min_replica": 1}, Observation(10.0, 0, 0, ceiling=0), 1.0, 1, Action.SCALE_UP, False),
        # a ceiling above what the rule wants changes nothing
        ({"max_replica": 3}, Observation(10.0, 0, 1, ceiling=2), 0.5, 1, Action.HOLD, False),
    ],
)
def test_capacity_ceiling(
    overrides: dict[str, int], observation: Observation, busy: float, target: int, action: Action, capped: bool
) -> None:
    s = settings(scale_down_delay=60, autoscaling_window=10, **overrides)
    decision = decide_once(s, observation, busy)
    assert (decision.target, decision.action) == (target, action)
    assert ("make room for another deployment" in decision.reason) is capped
