"""Cron expressions: what the five fields mean, and when an expression fires.

A leaf that imports nothing of Swell: :mod:`swell.config` validates a schedule's
``cron`` with :func:`parse_cron`, and :mod:`swell.autoscaling`'s schedule asks
:func:`last_fire` and :func:`next_fire` when its window opens.  (It sits below
both so that neither imports the other the wrong way; see tests/unit/test_layering.py.)
"""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = ["CRON_FIELDS", "CronFields", "last_fire", "next_fire", "parse_cron"]

#: The five fields as sets of values: minute, hour, day of month, month, day of week (0 = Sunday).
CronFields = tuple[frozenset[int], ...]

# Cron windows last at most 7 days (config), so the last fire that can still
# hold a window open is at most this far back.
_LOOKBACK_DAYS = 8
_LOOKAHEAD_DAYS = 5 * 366  # "0 0 29 2 *" fires once in four years

#: (name, lowest, highest) of the five cron fields, in order.
CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 6))
_CRON_NAMES = {
    3: {n: i + 1 for i, n in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())},
    4: {n: i for i, n in enumerate("sun mon tue wed thu fri sat".split())},
}


def parse_cron(expression: str) -> CronFields:
    """The five fields of a cron expression as sets of values; ``ValueError`` names the bad field.

    Supports ``*``, ``a``, ``a-b``, ``*/n``, ``a-b/n``, lists, names of months and
    weekdays, and 7 for Sunday.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"a cron expression has 5 fields (minute hour day month weekday), got {len(fields)}")
    out: list[frozenset[int]] = []
    for i, (text, (name, lo, hi)) in enumerate(zip(fields, CRON_FIELDS)):
        hi_in = 7 if i == 4 else hi
        values: set[int] = set()
        for part in text.lower().split(","):
            span, _, step_text = part.partition("/")
            try:
                step = int(step_text) if step_text else 1
                if span == "*":
                    a, b = lo, hi_in
                else:
                    first, dash, last = span.partition("-")
                    a = _CRON_NAMES.get(i, {}).get(first, None)
                    a = int(first) if a is None else a
                    b = (_CRON_NAMES.get(i, {}).get(last) or int(last)) if dash else (hi_in if step_text else a)
            except ValueError:
                raise ValueError(f"cron {name} field {text!r} is not a number, range, list or */step") from None
            if not (lo <= a <= b <= hi_in) or step < 1:
                raise ValueError(f"cron {name} field {text!r} must lie within {lo}-{hi_in}")
            values.update(7 if v == 7 and i == 4 else v for v in range(a, b + 1, step))
        if i == 4 and 7 in values:
            values = (values - {7}) | {0}
        out.append(frozenset(values))
    return tuple(out)


def _day_matches(fields: CronFields, day: date) -> bool:
    _, _, dom, month, dow = fields
    if day.month not in month:
        return False
    weekday = (day.weekday() + 1) % 7  # cron: 0 = Sunday
    dom_any = len(dom) == 31
    dow_any = len(dow) == 7
    if dom_any or dow_any:
        return day.day in dom and weekday in dow
    return day.day in dom or weekday in dow  # cron: either restricted field matches


def _fires_on(fields: CronFields, day: date, zone: ZoneInfo) -> list[float]:
    if not _day_matches(fields, day):
        return []
    minutes, hours = sorted(fields[0]), sorted(fields[1])
    return [datetime.combine(day, time(h, m), tzinfo=zone).timestamp() for h in hours for m in minutes]


def last_fire(fields: CronFields, zone: ZoneInfo, wall: float) -> float | None:
    """The latest fire at or before ``wall`` within the look-back, or None."""
    today = datetime.fromtimestamp(wall, zone).date()
    for back in range(_LOOKBACK_DAYS + 1):
        fires = [f for f in _fires_on(fields, today - timedelta(days=back), zone) if f <= wall]
        if fires:
            return max(fires)
    return None


def next_fire(fields: CronFields, zone: ZoneInfo, wall: float) -> float:
    """The first fire strictly after ``wall`` (inf if none within five years)."""
    today = datetime.fromtimestamp(wall, zone).date()
    for ahead in range(_LOOKAHEAD_DAYS):
        fires = [f for f in _fires_on(fields, today + timedelta(days=ahead), zone) if f > wall]
        if fires:
            return min(fires)
    return math.inf
