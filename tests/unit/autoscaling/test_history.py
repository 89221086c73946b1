"""TrafficHistory: per-second arrivals and concurrency in a bounded ring."""

from __future__ import annotations

import pytest

from swell.autoscaling import TrafficHistory


def test_empty() -> None:
    assert TrafficHistory().as_dict() == {"start": None, "interval": 1.0, "arrivals": [], "concurrency": []}


def test_samples_add_up_per_second_and_gaps_read_zero() -> None:
    h = TrafficHistory(retention=10)
    h.record(100.2, 2, 1.0)
    h.record(100.7, 1, 3.0)
    h.record(103.0, 4, 2.5)
    h.record(99.0, 9, 9.0)  # the past: ignored
    assert h.as_dict() == {"start": 100, "interval": 1.0, "arrivals": [3, 0, 0, 4], "concurrency": [2.0, 0.0, 0.0, 2.5]}


def test_retention_is_a_ring() -> None:
    h = TrafficHistory(retention=3)
    for t in range(10):
        h.record(float(t), t, float(t))
    assert h.as_dict() == {"start": 7, "interval": 1.0, "arrivals": [7, 8, 9], "concurrency": [7.0, 8.0, 9.0]}
    h.record(100.0, 1, 1.0)  # past the retention: starts afresh
    assert h.as_dict()["start"] == 100 and len(h) == 1


def test_bad_samples_are_refused() -> None:
    with pytest.raises(ValueError):
        TrafficHistory().record(0.0, -1, 0.0)
    with pytest.raises(ValueError):
        TrafficHistory(retention=0)
