"""FailureThrottle: token buckets of bad keys per client address; pure, time passed in."""

from __future__ import annotations

import pytest

from swell.control._throttle import FailureThrottle


def test_a_client_may_fail_a_burst_then_waits_for_its_budget() -> None:
    throttle = FailureThrottle(burst=3, rate=0.5)
    for _ in range(3):
        assert throttle.retry_after("a", 0.0) is None
        throttle.failed("a", 0.0)
    assert throttle.retry_after("a", 0.0) == 2  # one token back takes 1 / 0.5 s
    assert throttle.retry_after("a", 1.0) == 1
    assert throttle.retry_after("a", 2.0) is None
    throttle.failed("a", 2.0)
    assert throttle.retry_after("a", 2.0) == 2


def test_clients_are_counted_apart() -> None:
    throttle = FailureThrottle(burst=1, rate=1.0)
    throttle.failed("a", 0.0)
    assert throttle.retry_after("a", 0.0) == 1
    assert throttle.retry_after("b", 0.0) is None


@pytest.mark.parametrize(("failures", "later", "expected"), [(1, 0.0, None), (2, 0.0, 1), (2, 0.99, 1), (2, 1.0, None)])
def test_budget_table(failures: int, later: float, expected: int | None) -> None:
    throttle = FailureThrottle(burst=2, rate=1.0)
    for _ in range(failures):
        throttle.failed("a", 0.0)
    assert throttle.retry_after("a", later) == expected


def test_memory_stays_bounded_and_refilled_clients_are_forgotten_first() -> None:
    throttle = FailureThrottle(burst=2, rate=1.0, max_clients=3)
    throttle.failed("old", 0.0)
    throttle.failed("b", 9.0)
    throttle.failed("b", 9.0)
    throttle.failed("c", 9.5)
    throttle.failed("c", 9.5)
    throttle.failed("d", 10.0)  # full: "old" has refilled by now and goes; b and c have not
    assert set(throttle._buckets) == {"b", "c", "d"}
    assert throttle.retry_after("b", 10.0) is None  # one token back after 1 s
    throttle.failed("e", 10.0)  # full, and none refilled: the oldest goes
    assert len(throttle._buckets) == 3


def test_a_full_bucket_is_dropped_when_read() -> None:
    throttle = FailureThrottle(burst=2, rate=1.0)
    throttle.failed("a", 0.0)
    assert throttle.retry_after("a", 5.0) is None
    assert "a" not in throttle._buckets


@pytest.mark.parametrize(("burst", "rate"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_nonsense_budgets_are_refused(burst: int, rate: float) -> None:
    with pytest.raises(ValueError):
        FailureThrottle(burst=burst, rate=rate)
