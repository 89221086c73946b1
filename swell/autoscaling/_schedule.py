"""Scheduled pre-warm: the replica floor that ``schedules`` ask for at a wall-clock time.

A schedule holds at least its ``min_replica`` while its window is open: a daily
``start``–``end`` window, or a window of ``duration`` seconds from each time a
cron expression fires.  Times are local to the schedule's ``timezone``.

Pure: the wall time comes in as an argument.  The floor only changes at window
boundaries, so :func:`schedule_floor` also returns until when it holds, and a
runner (or the simulator's idle skip) need not ask again before then.
"""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from swell.config import Schedule
from swell.cron import CronFields, last_fire, next_fire, parse_cron

__all__ = ["schedule_floor", "schedule_is_open", "next_schedule_change"]


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=256)
def _cron(expression: str) -> CronFields:
    return parse_cron(expression)


def _hhmm(text: str) -> time:
    hour, minute = text.split(":")
    return time(int(hour), int(minute))


def _at(day: date, moment: time, zone: ZoneInfo) -> float:
    return datetime.combine(day, moment, tzinfo=zone).timestamp()


def _daily_open(schedule: Schedule, wall: float) -> tuple[bool, float]:
    assert schedule.start is not None and schedule.end is not None
    zone = _zone(schedule.timezone)
    start, end = _hhmm(schedule.start), _hhmm(schedule.end)
    today = datetime.fromtimestamp(wall, zone).date()
    # Windows that opened yesterday or today (one crossing midnight may still be open).
    is_open = False
    boundaries: list[float] = []
    for offset in (-1, 0, 1, 2):
        day = today + timedelta(days=offset)
        opens = _at(day, start, zone)
        closes = _at(day + timedelta(days=1) if end <= start else day, end, zone)
        if opens <= wall < closes:
            is_open = True
        boundaries.extend(b for b in (opens, closes) if b > wall)
    return is_open, min(boundaries, default=math.inf)


def _cron_open(schedule: Schedule, wall: float) -> tuple[bool, float]:
    assert schedule.cron is not None and schedule.duration is not None
    zone = _zone(schedule.timezone)
    fields = _cron(schedule.cron)
    last = last_fire(fields, zone, wall)
    closes = last + schedule.duration if last is not None else -math.inf
    is_open = closes > wall
    # The state can change next when this window closes or the next one opens.
    change = next_fire(fields, zone, wall)
    if is_open:
        change = min(change, closes)
    return is_open, change


def _open(schedule: Schedule, wall: float) -> tuple[bool, float]:
    if schedule.cron is not None:
        return _cron_open(schedule, wall)
    return _daily_open(schedule, wall)


def schedule_is_open(schedule: Schedule, wall: float) -> bool:
    """Whether ``schedule``'s window is open at ``wall`` (unix seconds)."""
    return _open(schedule, wall)[0]


def next_schedule_change(schedules: tuple[Schedule, ...], wall: float) -> float:
    """A wall time after ``wall``, no later than the next opening or closing of any window."""
    return min((_open(s, wall)[1] for s in schedules), default=math.inf)


def schedule_floor(schedules: tuple[Schedule, ...], wall: float) -> tuple[int, float]:
    """(the largest ``min_replica`` of the windows open at ``wall``, the time it holds until)."""
    floor = 0
    until = math.inf
    for schedule in schedules:
        is_open, change = _open(schedule, wall)
        if is_open:
            floor = max(floor, schedule.min_replica)
        until = min(until, change)
    return floor, until
