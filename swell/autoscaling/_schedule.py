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

from swell.config import Schedule, parse_cron

__all__ = ["schedule_floor", "schedule_is_open", "next_schedule_change"]

# Cron windows last at most 7 days (config), so the last fire that can still
# hold a window open is at most this far back.
_LOOKBACK_DAYS = 8
_LOOKAHEAD_DAYS = 5 * 366  # "0 0 29 2 *" fires once in four years


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=256)
def _cron(expression: str) -> tuple[frozenset[int], ...]:
    return parse_cron(expression)


def _hhmm(text: str) -> time:
    hour, minute = text.split(":")
    return time(int(hour), int(minute))


def _at(day: date, moment: time, zone: ZoneInfo) -> float:
    return datetime.combine(day, moment, tzinfo=zone).timestamp()


def _day_matches(fields: tuple[frozenset[int], ...], day: date) -> bool:
    _, _, dom, month, dow = fields
    if day.month not in month:
        return False
    weekday = (day.weekday() + 1) % 7  # cron: 0 = Sunday
    dom_any = len(dom) == 31
    dow_any = len(dow) == 7
    if dom_any or dow_any:
        return day.day in dom and weekday in dow
    return day.day in dom or weekday in dow  # cron: either restricted field matches


def _fires_on(fields: tuple[frozenset[int], ...], day: date, zone: ZoneInfo) -> list[float]:
    if not _day_matches(fields, day):
        return []
    minutes, hours = sorted(fields[0]), sorted(fields[1])
    return [_at(day, time(h, m), zone) for h in hours for m in minutes]


def _last_fire(fields: tuple[frozenset[int], ...], zone: ZoneInfo, wall: float) -> float | None:
    """The latest fire at or before ``wall`` within the look-back, or None."""
    today = datetime.fromtimestamp(wall, zone).date()
    for back in range(_LOOKBACK_DAYS + 1):
        fires = [f for f in _fires_on(fields, today - timedelta(days=back), zone) if f <= wall]
        if fires:
            return max(fires)
    return None


def _next_fire(fields: tuple[frozenset[int], ...], zone: ZoneInfo, wall: float) -> float:
    """The first fire strictly after ``wall`` (inf if none within five years)."""
    today = datetime.fromtimestamp(wall, zone).date()
    for ahead in range(_LOOKAHEAD_DAYS):
        fires = [f for f in _fires_on(fields, today + timedelta(days=ahead), zone) if f > wall]
        if fires:
            return min(fires)
    return math.inf


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
    last = _last_fire(fields, zone, wall)
    closes = last + schedule.duration if last is not None else -math.inf
    is_open = closes > wall
    # The state can change next when this window closes or the next one opens.
    change = _next_fire(fields, zone, wall)
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
