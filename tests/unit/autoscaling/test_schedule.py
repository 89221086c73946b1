"""Scheduled pre-warm: windows open and close on the wall clock, and raise the rule's floor."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from swell.autoscaling import ConcurrencyWindow, Observation, ScalerState, decide, next_schedule_change, schedule_floor
from swell.config import Schedule, parse_autoscaling


def _t(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


DAILY = Schedule.model_validate({"start": "08:30", "end": "18:00", "min_replica": 3})
NIGHT = Schedule.model_validate({"start": "22:00", "end": "02:00", "min_replica": 2})
CRON = Schedule.model_validate({"cron": "0 9 * * mon-fri", "duration": 3600, "min_replica": 4})


@pytest.mark.parametrize(
    ("schedules", "at", "floor"),
    [
        ((DAILY,), "2024-05-01T08:29:59", 0),
        ((DAILY,), "2024-05-01T08:30:00", 3),
        ((DAILY,), "2024-05-01T17:59:59", 3),
        ((DAILY,), "2024-05-01T18:00:00", 0),
        ((NIGHT,), "2024-05-01T23:00:00", 2),
        ((NIGHT,), "2024-05-02T01:59:00", 2),
        ((NIGHT,), "2024-05-02T02:00:00", 0),
        ((CRON,), "2024-05-01T09:30:00", 4),  # a Wednesday
        ((CRON,), "2024-05-04T09:30:00", 0),  # a Saturday
        ((CRON,), "2024-05-01T10:00:00", 0),
        ((DAILY, CRON), "2024-05-01T09:30:00", 4),
    ],
)
def test_floor_of_open_windows(schedules: tuple[Schedule, ...], at: str, floor: int) -> None:
    assert schedule_floor(schedules, _t(at))[0] == floor


def test_floor_holds_until_the_next_boundary() -> None:
    floor, until = schedule_floor((DAILY,), _t("2024-05-01T12:00:00"))
    assert floor == 3 and until == _t("2024-05-01T18:00:00")
    assert next_schedule_change((CRON,), _t("2024-05-03T10:00:00")) == _t("2024-05-06T09:00:00")
    assert next_schedule_change((), 0.0) == math.inf


def test_timezone_is_honoured() -> None:
    berlin = Schedule.model_validate({"start": "09:00", "end": "10:00", "min_replica": 1, "timezone": "Europe/Berlin"})
    assert schedule_floor((berlin,), _t("2024-07-01T07:30:00"))[0] == 1  # 09:30 CEST
    assert schedule_floor((berlin,), _t("2024-07-01T09:30:00"))[0] == 0


def test_decide_holds_the_scheduled_floor_and_says_why() -> None:
    s = parse_autoscaling({"max_replica": 5, "schedules": [{"start": "08:30", "end": "18:00", "min_replica": 3}]})
    now = _t("2024-05-01T09:00:00")
    decision, _ = decide(s, ConcurrencyWindow(0.0), ScalerState(), Observation(10.0, 0, 0, wall=now))
    assert decision.target == 3 and "schedule" in decision.reason
    # Without a wall clock schedules are not applied: the rule is unchanged.
    decision, _ = decide(s, ConcurrencyWindow(0.0), ScalerState(), Observation(10.0, 0, 0))
    assert decision.target == 0


def test_simulator_applies_schedules() -> None:
    import numpy as np

    from swell.sim import ColdStart, SimConfig, replay

    s = parse_autoscaling({"max_replica": 5, "schedules": [{"start": "00:10", "end": "00:20", "min_replica": 2}]})
    arrivals = np.array([0.0, 900.0])
    metrics = replay(arrivals, np.ones(2), "swell", SimConfig(settings=s, cold_start=ColdStart("fixed", 30.0))).metrics
    plain = replay(arrivals, np.ones(2), "swell", SimConfig(settings=s.model_copy(update={"schedules": ()}),
                                                             cold_start=ColdStart("fixed", 30.0))).metrics
    assert metrics["requests_delayed_by_cold_start"] <= plain["requests_delayed_by_cold_start"]
    assert metrics["replica_seconds"] > plain["replica_seconds"]


WEEKEND = Schedule.model_validate({"cron": "0 9 * * fri-sun", "duration": 3600, "min_replica": 2})
NIGHTLY = Schedule.model_validate({"cron": "@daily", "duration": 7200, "min_replica": 1})


@pytest.mark.parametrize(
    ("schedule", "at", "floor"),
    [
        (WEEKEND, "2024-05-03T09:30:00", 2),  # a Friday
        (WEEKEND, "2024-05-05T09:30:00", 2),  # a Sunday: was refused (Sunday is 0)
        (WEEKEND, "2024-05-06T09:30:00", 0),  # a Monday
        (NIGHTLY, "2024-05-06T01:59:00", 1),
        (NIGHTLY, "2024-05-06T02:00:00", 0),
    ],
)
def test_cron_windows_through_sunday_and_aliases(schedule: Schedule, at: str, floor: int) -> None:
    assert schedule_floor((schedule,), _t(at))[0] == floor
