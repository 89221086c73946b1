"""Cron expressions: what the five fields mean, and when an expression fires.

Parsing and firing are cronsim's (a small, pure-Python, maintained cron
evaluator with Debian cron's semantics, daylight-saving changes included);
this module adds what cronsim leaves out and schedules need: the ``@daily``
family of aliases, day-of-week ranges through Sunday (``fri-sun``, ``sat-mon``),
and errors that name the field and say what it accepts.

A leaf that imports nothing of Swell: :mod:`swell.config` validates a schedule's
``cron`` with :func:`parse_cron`, and :mod:`swell.autoscaling`'s schedule asks
:func:`last_fire` and :func:`next_fire` when its window opens.  (It sits below
both so that neither imports the other the wrong way; see tests/unit/test_layering.py.)
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

__all__ = ["CRON_ALIASES", "CRON_FIELDS", "CronFields", "last_fire", "next_fire", "parse_cron"]

# Cron windows last at most 7 days (config), so the last fire that can still
# hold a window open is at most this far back.
_LOOKBACK_DAYS = 8
_LOOKAHEAD_DAYS = 5 * 366  # "0 0 29 2 *" fires once in four years

#: (name, lowest, highest) of the five cron fields, in order.
CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 6))

#: What each ``@`` alias stands for (Vixie/Debian cron's list, less ``@reboot``).
CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_WEEKDAYS = {name: i for i, name in enumerate("sun mon tue wed thu fri sat".split())}
# cronsim's field names (its error text is "Bad <name>") → ours.
_CRONSIM_FIELDS = {"minute": 0, "hour": 1, "day-of-month": 2, "month": 3, "day-of-week": 4}
_ACCEPTS = (
    "each field is *, a value, a range a-b, a list a,b or a step */n or a-b/n "
    "(minute 0-59, hour 0-23, day of month 1-31, month 1-12 or jan-dec, "
    "day of week 0-7 or sun-sat with 0 and 7 both Sunday); or one of "
    + ", ".join(CRON_ALIASES)
)


class CronFields(tuple[frozenset[int], ...]):
    """The five fields as sets of values (minute, hour, day of month, month, day of
    week with 0 = Sunday), and the expression cronsim evaluates (``expression``)."""

    expression: str

    def __new__(cls, fields: tuple[frozenset[int], ...], expression: str) -> CronFields:
        self = super().__new__(cls, fields)
        self.expression = expression
        return self


def _weekday(text: str) -> int | None:
    if text in _WEEKDAYS:
        return _WEEKDAYS[text]
    return int(text) if text.isdigit() else None


def _weekday_ranges(field: str) -> str:
    """Day-of-week ranges through Sunday as cronsim takes them: ``fri-sun`` → ``5-7``,
    ``sat-mon`` → ``6-7,0-1`` (cron numbers Sunday both 0 and 7)."""
    parts = []
    for part in field.split(","):
        first, dash, last = part.partition("-")
        a, b = _weekday(first), _weekday(last) if dash else None
        if a is not None and b is not None and "/" not in part and a > b:
            part = f"{a}-7" if b == 0 else f"{a}-7,0-{b}"
        parts.append(part)
    return ",".join(parts)


def _normal(expression: str) -> str:
    text = " ".join(expression.lower().split())
    if text.startswith("@"):
        if text not in CRON_ALIASES:
            raise ValueError(f"cron {expression!r} is not a known alias; use one of {', '.join(CRON_ALIASES)} or 5 fields")
        return CRON_ALIASES[text]
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(
            f"a cron expression has 5 fields (minute hour day month weekday) or is an alias "
            f"such as @daily, got {len(fields)} field{'s' if len(fields) != 1 else ''} in {expression!r}"
        )
    fields[4] = _weekday_ranges(fields[4])
    return " ".join(fields)


def _ints(values: object) -> frozenset[int]:
    # cronsim keeps "L" and "5#2" as markers and tuples: the sets list plain values only.
    return frozenset(v for v in values if isinstance(v, int) and v >= 0)  # type: ignore[attr-defined]


def parse_cron(expression: str) -> CronFields:
    """The five fields of a cron expression as sets of values; ``ValueError`` names the bad field.

    Supports ``*``, ``a``, ``a-b``, ``*/n``, ``a-b/n``, lists, names of months and
    weekdays, 0 and 7 for Sunday, ranges through Sunday (``fri-sun``) and the
    aliases ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``.
    """
    if not isinstance(expression, str):
        raise ValueError(f"a cron expression is a string such as '0 9 * * mon-fri' or '@daily', not {expression!r}")
    normal = _normal(expression)
    try:
        sim = CronSim(normal, datetime(2000, 1, 1))
    except CronSimError as exc:
        index = _CRONSIM_FIELDS.get(str(exc).removeprefix("Bad "))
        if index is None:
            raise ValueError(f"cron {expression!r} is not valid ({exc}); {_ACCEPTS}") from None
        name = CRON_FIELDS[index][0]
        raise ValueError(f"cron {name} field {expression.split()[index]!r} is not valid; {_ACCEPTS}") from None
    weekdays = frozenset(0 if v == 7 else v for v in _ints(sim.weekdays))
    fields = (_ints(sim.minutes), _ints(sim.hours), _ints(sim.days), _ints(sim.months), weekdays)
    return CronFields(fields, normal)


def last_fire(fields: CronFields, zone: ZoneInfo, wall: float) -> float | None:
    """The latest fire at or before ``wall`` within the look-back, or None."""
    # cronsim steps back one second before it looks: start just after wall's second.
    start = datetime.fromtimestamp(math.floor(wall) + 1, zone)
    fire = next(CronSim(fields.expression, start, reverse=True)).timestamp()
    return fire if fire >= wall - _LOOKBACK_DAYS * 86400 else None


def next_fire(fields: CronFields, zone: ZoneInfo, wall: float) -> float:
    """The first fire strictly after ``wall`` (inf if none within five years)."""
    start = datetime.fromtimestamp(math.floor(wall), zone)
    fire = next(CronSim(fields.expression, start)).timestamp()
    return fire if fire <= wall + timedelta(days=_LOOKAHEAD_DAYS).total_seconds() else math.inf
