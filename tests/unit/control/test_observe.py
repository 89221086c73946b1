"""``?since=``: a duration back from now or an ISO time; anything else is a 422 naming it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from swell.control._observe import parse_since
from swell.control._plane import ApiError

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("30s", NOW - 30),
        ("10m", NOW - 600),
        ("1.5h", NOW - 5400),
        ("2d", NOW - 172800),
        ("99999999999999d", 0.0),  # before 1970: everything
        ("0001-01-01T00:00:00Z", 0.0),
        ("9999-12-31T23:59:59-14:00", 253402300799.0),
        ("2027-01-15T08:00:00Z", datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp()),
        ("2027-01-15T08:00:00.250+01:00", datetime(2027, 1, 15, 7, 0, 0, 250000, tzinfo=UTC).timestamp()),
    ],
)
def test_since(value: str | None, expected: float | None) -> None:
    assert parse_since(value, NOW) == expected


def test_iso_without_zone_is_utc() -> None:
    assert parse_since("2027-01-15T08:00:00", NOW) == parse_since("2027-01-15T08:00:00+00:00", NOW)


@pytest.mark.parametrize("value", ["yesterday", "10 minutes", "-5m", "10x"])
def test_bad_since_names_field_value_and_what_is_allowed(value: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_since(value, NOW)
    assert caught.value.status == 422
    detail = caught.value.payload["detail"][0]
    assert detail["field"] == "since" and detail["value"] == value and "10m" in detail["allowed"]
