"""Rolling promotion: the plan, the pure stepping rule, and the split the request path reads.

A rolling promotion moves an environment from one published deployment to
another in steps (10 % → 50 % → 100 % of its requests by default), waiting
``step_seconds`` at each, and rolls back (every request to the old deployment
again) when the new deployment's error rate in a step passes
``max_error_rate``.  The environment keeps pointing at the old deployment until
the last step; the share in between is a :class:`TrafficSplit` the front door
consults.

:func:`advance` is the whole decision: a function of the plan, the state, the
time and what the new deployment did (ready replicas, answers counted so far);
no clock, no I/O.  ``_promotion.py`` runs it and does what it says.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from swell.config import FieldError, SettingsError

__all__ = [
    "DEFAULT_STEPS",
    "Answers",
    "Phase",
    "RollingPlan",
    "RollingState",
    "TrafficSplit",
    "advance",
    "parse_rolling",
    "start",
]

DEFAULT_STEPS = (10, 50, 100)


class Phase(str, Enum):
    WARMING = "warming"  # the new deployment is starting; no traffic has moved
    SHIFTING = "shifting"  # a share of the traffic goes to the new deployment
    DONE = "done"  # the environment points at the new deployment
    ROLLED_BACK = "rolled_back"  # every request goes to the old deployment again
    FAILED = "failed"  # the new deployment never became ready; no traffic moved

    @property
    def finished(self) -> bool:
        return self in (Phase.DONE, Phase.ROLLED_BACK, Phase.FAILED)


@dataclass(frozen=True)
class RollingPlan:
    """What the caller asked for (validated by :func:`parse_rolling`)."""

    steps: tuple[int, ...] = DEFAULT_STEPS  # percent of the environment's requests, rising, ending at 100
    step_seconds: float = 60.0  # the wait at each step before the next
    max_error_rate: float = 0.05  # 5xx answers / answers in a step above this: roll back
    min_requests: int = 20  # judged before the step ends only once this many answers came
    warm_seconds: float = 900.0  # the new deployment has this long to get its replicas ready

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": list(self.steps),
            "step_seconds": self.step_seconds,
            "max_error_rate": self.max_error_rate,
            "min_requests": self.min_requests,
            "warm_seconds": self.warm_seconds,
        }


@dataclass(frozen=True)
class Answers:
    """The new deployment's answers counted so far (cumulative): all, and those 500 or above."""

    total: int = 0
    errors: int = 0


@dataclass(frozen=True)
class RollingState:
    phase: Phase
    started: float  # when the promotion began (the clock :func:`advance` is given)
    step: int = -1  # index into plan.steps; -1 while warming
    percent: int = 0  # share of the environment's requests the new deployment gets now
    step_started: float = 0.0
    baseline: Answers = Answers()  # the counts when the step began: the step's window starts there
    reason: str = "warming the new deployment"

    def as_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value,
            "step": self.step,
            "percent": self.percent,
            "reason": self.reason,
        }


def start(now: float) -> RollingState:
    return RollingState(Phase.WARMING, started=now)


def advance(
    plan: RollingPlan,
    state: RollingState,
    *,
    now: float,
    ready: int,
    want: int,
    answers: Answers,
    failure: str | None = None,
) -> RollingState:
    """The next state, or ``state`` itself when nothing changes.

    ``ready`` and ``want``: the new deployment's ready replicas and how many it
    must have before the first shift; ``answers``: its answers so far;
    ``failure``: why it cannot serve (failed to load, deleted, deactivated), if so.
    """
    if state.phase.finished:
        return state
    if state.phase is Phase.WARMING:
        if failure is not None:
            return replace(state, phase=Phase.FAILED, reason=f"the new deployment did not become ready: {failure}")
        if ready >= want:
            return _shift(plan, state, 0, now, answers)
        if now - state.started >= plan.warm_seconds:
            return replace(
                state,
                phase=Phase.FAILED,
                reason=f"the new deployment had {ready} of {want} replica(s) ready after {plan.warm_seconds:g} s",
            )
        return state
    if failure is not None:
        return _roll_back(state, f"the new deployment cannot serve: {failure}")
    total = answers.total - state.baseline.total
    errors = answers.errors - state.baseline.errors
    step_over = now - state.step_started >= plan.step_seconds
    if total > 0 and (step_over or total >= plan.min_requests) and errors / total > plan.max_error_rate:
        return _roll_back(
            state,
            f"error rate {errors}/{total} = {errors / total:.1%} at {state.percent}% passed "
            f"max_error_rate {plan.max_error_rate:.1%}",
        )
    if step_over:
        return _shift(plan, state, state.step + 1, now, answers)
    return state


def _shift(plan: RollingPlan, state: RollingState, step: int, now: float, answers: Answers) -> RollingState:
    percent = plan.steps[step]
    if percent >= 100:
        return replace(state, phase=Phase.DONE, step=step, percent=100, step_started=now, baseline=answers,
                       reason="every request goes to the new deployment")
    return replace(
        state, phase=Phase.SHIFTING, step=step, percent=percent, step_started=now, baseline=answers,
        reason=f"step {step + 1} of {len(plan.steps)}: {percent}% of requests to the new deployment",
    )


def _roll_back(state: RollingState, why: str) -> RollingState:
    return replace(state, phase=Phase.ROLLED_BACK, percent=0, reason=f"rolled back: {why}")


class TrafficSplit:
    """The share of an environment's requests that go to the deployment being promoted.

    Read on the request path: :meth:`take` is integer arithmetic on two slots
    (no lock, no allocation: one event loop thread, small ints), and exact: of
    any 100 consecutive requests, ``percent`` go to the new deployment, spread
    evenly rather than in a burst.
    """

    __slots__ = ("deployment_id", "percent", "_credit")

    def __init__(self, deployment_id: str, percent: int) -> None:
        self.deployment_id = deployment_id
        self.percent = percent
        self._credit = 0

    def take(self) -> bool:
        """Whether this request goes to the new deployment."""
        credit = self._credit + self.percent
        if credit >= 100:
            self._credit = credit - 100
            return True
        self._credit = credit
        return False


def parse_rolling(body: Mapping[str, Any], *, base: RollingPlan | None = None) -> RollingPlan:
    """A plan from the promotion body's fields (missing ones take ``base``'s, else the defaults).

    Raises :class:`SettingsError` naming every bad field, its value and what is allowed.
    """
    plan = base or RollingPlan()
    errors: list[FieldError] = []
    values: dict[str, Any] = {}
    if "steps" in body and body["steps"] is not None:
        steps = body["steps"]
        rule = "a list of whole percentages between 1 and 100, rising, ending at 100 (e.g. [10, 50, 100])"
        if (
            not isinstance(steps, list)
            or not steps
            or len(steps) > 20
            or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 100 for s in steps)
            or any(b <= a for a, b in zip(steps, steps[1:], strict=False))
            or steps[-1] != 100
        ):
            errors.append(FieldError("steps", steps, rule + ", at most 20 steps"))
        else:
            values["steps"] = tuple(steps)
    _number(body, "step_seconds", 1, 3600, "seconds", errors, values)
    _number(body, "warm_seconds", 1, 86400, "seconds", errors, values)
    _number(body, "max_error_rate", 0, 1, "a fraction (0.05 is 5%)", errors, values)
    if body.get("min_requests") is not None:
        value = body["min_requests"]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1_000_000:
            errors.append(FieldError("min_requests", value, "must be a whole number between 1 and 1000000"))
        else:
            values["min_requests"] = value
    if errors:
        raise SettingsError(errors)
    return replace(plan, **values)


def _number(
    body: Mapping[str, Any], name: str, low: float, high: float, unit: str, errors: list[FieldError], out: dict[str, Any]
) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        errors.append(FieldError(name, value, f"must be a number between {low:g} and {high:g} ({unit})"))
    else:
        out[name] = float(value)

