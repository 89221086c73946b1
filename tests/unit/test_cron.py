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
