from __future__ import annotations

import pytest

from swell.control._time import iso


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1_796_288_400.0, "2026-12-03T09:00:00.000Z"),
        (1_796_288_400.2509, "2026-12-03T09:00:00.250Z"),
        (None, None),
    ],
)
def test_iso_is_utc_with_milliseconds(ts: float | None, text: str | None) -> None:
    assert iso(ts) == text
