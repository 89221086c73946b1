from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from swell.cron import last_fire, next_fire, parse_cron

UTC_ZONE = ZoneInfo("UTC")


@pytest.mark.parametrize(
    ("expression", "field", "values"),
    [
        ("*/15 * * * *", 0, {0, 15, 30, 45}),
        ("0 9-17/4 * * *", 1, {9, 13, 17}),
        ("0 0 1,15 * *", 2, {1, 15}),
        ("0 0 * jan-mar *", 3, {1, 2, 3}),
        ("0 0 * * 7", 4, {0}),
        ("0 0 * * mon-fri", 4, {1, 2, 3, 4, 5}),
    ],
)
def test_fields_parse_to_their_values(expression: str, field: int, values: set[int]) -> None:
    assert parse_cron(expression)[field] == frozenset(values)


@pytest.mark.parametrize(
    ("expression", "named"),
    [("* * *", "5 fields"), ("60 * * * *", "minute"), ("* 24 * * *", "hour"), ("* * * foo *", "month")],
)
def test_a_bad_expression_names_its_field(expression: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_cron(expression)


def test_last_and_next_fire_around_a_weekday_morning() -> None:
    fields = parse_cron("0 9 * * mon-fri")
    friday_noon = datetime(2026, 12, 4, 12, tzinfo=UTC).timestamp()
    assert last_fire(fields, UTC_ZONE, friday_noon) == datetime(2026, 12, 4, 9, tzinfo=UTC).timestamp()
    assert next_fire(fields, UTC_ZONE, friday_noon) == datetime(2026, 12, 7, 9, tzinfo=UTC).timestamp()


def _fires(expression: str, start: datetime, count: int, zone: ZoneInfo = UTC_ZONE) -> list[str]:
    fields, wall, out = parse_cron(expression), start.timestamp(), []
    for _ in range(count):
        wall = next_fire(fields, zone, wall)
        out.append(datetime.fromtimestamp(wall, zone).strftime("%a %H:%M"))
    return out


THURSDAY = datetime(2026, 12, 3, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "weekdays"),
    [
        ("0 9 * * fri-sun", {5, 6, 0}),  # Sunday is 0: a range through it was refused
        ("0 9 * * 5-7", {5, 6, 0}),  # ... and 7
        ("0 9 * * 5-0", {5, 6, 0}),
        ("0 9 * * sat-mon", {6, 0, 1}),
        ("0 9 * * 0-2", {0, 1, 2}),
        ("0 9 * * 0", {0}),
        ("0 9 * * sun,wed", {0, 3}),
    ],
)
def test_weekday_ranges_through_sunday(expression: str, weekdays: set[int]) -> None:
    assert parse_cron(expression)[4] == frozenset(weekdays)


def test_fri_sun_fires_friday_saturday_and_sunday() -> None:
    assert _fires("0 9 * * fri-sun", THURSDAY, 4) == ["Fri 09:00", "Sat 09:00", "Sun 09:00", "Fri 09:00"]
    assert _fires("0 9 * * sat-mon", THURSDAY, 4) == ["Sat 09:00", "Sun 09:00", "Mon 09:00", "Sat 09:00"]


@pytest.mark.parametrize(
    ("expression", "fires"),
    [
        ("@daily", ["Fri 00:00", "Sat 00:00"]),
        ("@midnight", ["Fri 00:00", "Sat 00:00"]),
        ("@hourly", ["Thu 13:00", "Thu 14:00"]),
        ("@weekly", ["Sun 00:00", "Sun 00:00"]),
        ("@DAILY", ["Fri 00:00", "Sat 00:00"]),
        ("*/20 * * * *", ["Thu 12:20", "Thu 12:40"]),
        ("0 8-18/5 * * *", ["Thu 13:00", "Thu 18:00"]),
        ("30 */12 * * *", ["Thu 12:30", "Fri 00:30"]),
    ],
)
def test_aliases_and_steps(expression: str, fires: list[str]) -> None:
    assert _fires(expression, THURSDAY, 2) == fires


def test_monthly_and_yearly_fire_at_midnight_of_the_first() -> None:
    wall = THURSDAY.timestamp()
    assert next_fire(parse_cron("@monthly"), UTC_ZONE, wall) == datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    assert next_fire(parse_cron("@yearly"), UTC_ZONE, wall) == datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    assert last_fire(parse_cron("@daily"), UTC_ZONE, wall) == datetime(2026, 12, 3, tzinfo=UTC).timestamp()


def test_a_fire_exactly_at_wall_is_the_last_not_the_next() -> None:
    fields = parse_cron("0 9 * * *")
    nine = datetime(2026, 12, 3, 9, tzinfo=UTC).timestamp()
    assert last_fire(fields, UTC_ZONE, nine) == nine
    assert next_fire(fields, UTC_ZONE, nine) == nine + 86400
    assert last_fire(fields, UTC_ZONE, nine - 0.5) == nine - 86400


def test_a_rare_expression_has_no_last_fire_within_the_look_back() -> None:
    assert last_fire(parse_cron("0 0 29 2 *"), UTC_ZONE, THURSDAY.timestamp()) is None
    assert next_fire(parse_cron("0 0 29 2 *"), UTC_ZONE, THURSDAY.timestamp()) == datetime(2028, 2, 29, tzinfo=UTC).timestamp()


def test_fires_in_the_schedules_time_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    wall = next_fire(parse_cron("0 9 * * fri-sun"), berlin, THURSDAY.timestamp())
    assert datetime.fromtimestamp(wall, UTC) == datetime(2026, 12, 4, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("@reboot", "not a known alias; use one of @yearly"),
        ("@sometimes", "@daily"),
        ("0 9 * * funday", "day of week field 'funday' is not valid"),
        ("0 9 32 * *", "day of month field '32' is not valid"),
        ("0 9 * * * *", "5 fields"),
        ("", "5 fields"),
        ("*/0 * * * *", "minute field"),
    ],
)
def test_a_bad_expression_says_what_is_wrong_and_what_is_allowed(expression: str, says: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_cron(expression)
    assert says in str(info.value)
