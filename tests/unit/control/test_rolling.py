"""Rolling promotion's pure parts: the stepping and rollback rule, the plan's validation, the split."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from swell.config import SettingsError
from swell.control._rolling import (
    Answers,
    Phase,
    RollingPlan,
    TrafficSplit,
    advance,
    parse_rolling,
    start,
)

PLAN = RollingPlan(steps=(10, 50, 100), step_seconds=60, max_error_rate=0.05, min_requests=20, warm_seconds=300)


def step(state: Any, now: float, answers: Answers = Answers(), *, ready: int = 1, want: int = 1,
         failure: str | None = None, plan: RollingPlan = PLAN) -> Any:
    return advance(plan, state, now=now, ready=ready, want=want, answers=answers, failure=failure)


def test_warms_then_steps_through_every_share_then_is_done() -> None:
    state = start(0.0)
    assert step(state, 5.0, ready=0) is state  # no change is the same state
    state = step(state, 10.0, Answers(3, 0))
    assert (state.phase, state.step, state.percent, state.step_started) == (Phase.SHIFTING, 0, 10, 10.0)
    assert step(state, 69.9, Answers(10, 0)) is state  # waits the whole step
    state = step(state, 70.0, Answers(10, 0))
    assert (state.phase, state.percent, state.baseline) == (Phase.SHIFTING, 50, Answers(10, 0))
    state = step(state, 130.0, Answers(200, 1))
    assert (state.phase, state.percent) == (Phase.DONE, 100)
    assert step(state, 999.0, Answers(0, 999), failure="gone") is state  # finished stays finished


def test_warming_waits_for_want_replicas_and_fails_after_warm_seconds() -> None:
    state = start(0.0)
    assert step(state, 100.0, ready=1, want=2) is state
    failed = step(state, 300.0, ready=1, want=2)
    assert failed.phase is Phase.FAILED and "1 of 2" in failed.reason and failed.percent == 0
    broken = step(state, 1.0, ready=0, failure="ImportError: torch")
    assert broken.phase is Phase.FAILED and "torch" in broken.reason


@pytest.mark.parametrize(
    ("answers", "now", "phase"),
    [
        (Answers(19, 19), 11.0, Phase.SHIFTING),  # too few answers to judge before the step ends
        (Answers(20, 2), 11.0, Phase.ROLLED_BACK),  # 10% > 5%: judged at once
        (Answers(20, 1), 11.0, Phase.SHIFTING),  # 5% is not past 5%
        (Answers(3, 1), 70.0, Phase.ROLLED_BACK),  # the step is over: judged on what came
        (Answers(0, 0), 70.0, Phase.SHIFTING),  # nothing came: nothing against it, next step
    ],
)
def test_error_rate_of_the_step_decides_rollback(answers: Answers, now: float, phase: Phase) -> None:
    shifting = step(start(0.0), 10.0)
    state = step(shifting, now, answers)
    assert state.phase is phase
    if phase is Phase.ROLLED_BACK:
        assert state.percent == 0 and "error rate" in state.reason and "max_error_rate 5.0%" in state.reason


def test_the_window_is_the_step_s_own_answers() -> None:
    state = step(start(0.0), 0.0, Answers(1000, 100))  # errors before the promotion do not count
    state = step(state, 60.0, Answers(1100, 100))
    assert (state.phase, state.percent) == (Phase.SHIFTING, 50)
    state = step(state, 61.0, Answers(1130, 110))  # 10 of 30 in this step
    assert state.phase is Phase.ROLLED_BACK and "10/30" in state.reason and "at 50%" in state.reason


def test_a_new_deployment_that_stops_serving_rolls_back() -> None:
    state = step(step(start(0.0), 0.0), 1.0, failure="deployment deactivated")
    assert state.phase is Phase.ROLLED_BACK and "deactivated" in state.reason


def test_a_single_step_of_100_is_done_once_warm() -> None:
    plan = RollingPlan(steps=(100,))
    assert step(start(0.0), 0.0, plan=plan).phase is Phase.DONE


@pytest.mark.parametrize("percent", [0, 1, 10, 33, 50, 99, 100])
def test_split_sends_exactly_its_share_spread_evenly(percent: int) -> None:
    split = TrafficSplit("new", percent)
    taken = [split.take() for _ in range(1000)]
    assert sum(taken) == percent * 10
    for start_at in range(0, 900, 100):  # every window of 100 has its share, not a burst
        assert sum(taken[start_at:start_at + 100]) == percent


def test_split_allocates_nothing_per_request() -> None:
    """It runs on the request path: integer credit in slots, small cached ints, a bool out."""
    split = TrafficSplit("new", 37)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        taken = 0
        for _ in range(10_000):
            taken += split.take()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert taken == 3700 and grown < 256  # a few bytes of the loop's own, never per call


def test_split_follows_a_changed_share() -> None:
    split = TrafficSplit("new", 10)
    assert sum(split.take() for _ in range(100)) == 10
    split.percent = 50
    assert sum(split.take() for _ in range(100)) == 50


def test_parse_takes_defaults_and_overrides() -> None:
    assert parse_rolling({}) == RollingPlan()
    plan = parse_rolling({"steps": [25, 100], "step_seconds": 2, "max_error_rate": 0.5, "min_requests": 1})
    assert plan == RollingPlan(steps=(25, 100), step_seconds=2.0, max_error_rate=0.5, min_requests=1)
    assert parse_rolling({}, base=RollingPlan(warm_seconds=5)).warm_seconds == 5


@pytest.mark.parametrize(
    ("body", "field", "allowed"),
    [
        ({"steps": [10, 50]}, "steps", "ending at 100"),
        ({"steps": [50, 10, 100]}, "steps", "rising"),
        ({"steps": [0, 100]}, "steps", "between 1 and 100"),
        ({"steps": []}, "steps", "ending at 100"),
        ({"steps": "10,100"}, "steps", "a list"),
        ({"steps": [10.5, 100]}, "steps", "whole"),
        ({"step_seconds": 0}, "step_seconds", "between 1 and 3600"),
        ({"step_seconds": "60"}, "step_seconds", "a number"),
        ({"max_error_rate": 5}, "max_error_rate", "between 0 and 1"),
        ({"max_error_rate": True}, "max_error_rate", "a number"),
        ({"min_requests": 0}, "min_requests", "between 1 and"),
        ({"warm_seconds": float("nan")}, "warm_seconds", "a number"),
    ],
)
def test_parse_refuses_naming_field_value_and_what_is_allowed(body: dict[str, Any], field: str, allowed: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_rolling(body)
    (error,) = info.value.errors
    assert error.field == field and error.value is body[field] and allowed in error.allowed


def test_parse_names_every_bad_field_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        parse_rolling({"steps": [100, 100], "step_seconds": -1, "max_error_rate": 2})
    assert [e.field for e in info.value.errors] == ["steps", "step_seconds", "max_error_rate"]
