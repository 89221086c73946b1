"""Background advice: which answers earn a marker, and when a deployment is advised on again."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from swell.control._advice import MIN_REQUESTS, RETRY_SECONDS, AdviceCache, notable


def _metrics(cost: float, waits: float) -> dict[str, Any]:
    return {"replica_seconds": cost, "requests_delayed_by_cold_start": waits, "queue_wait_p99": 1.0}


def _advice(current: tuple[float, float], *options: tuple[str, float, float], findings: int = 1) -> dict[str, Any]:
    return {
        "findings": [{"id": "x"}] * findings,
        "current": {"metrics": _metrics(*current)},
        "recommended": {"metrics": _metrics(*current) if not options else _metrics(*options[0][1:])},
        "with_extras": None,
        "menu": [{"name": name, "metrics": _metrics(cost, waits)} for name, cost, waits in options],
    }


@pytest.mark.parametrize(
    ("advice", "saves", "removed"),
    [
        (_advice((1000, 10), ("cheapest", 690, 10)), 31, 0),  # saves 31 % at no more waits
        (_advice((1000, 10), ("cheapest", 850, 10)), None, None),  # 15 %: not worth a marker
        (_advice((1000, 10), ("cheapest", 500, 40)), None, None),  # cheaper, but more waits
        (_advice((1000, 500), ("fastest", 1400, 20)), 0, 96),  # most of many waits removed, at a price
        (_advice((1000, 50), ("fastest", 1400, 0)), None, None),  # 5 % of requests wait: not "many"
        (_advice((1000, 10), findings=0), None, None),  # a quiet answer
    ],
)
def test_notable_flags_big_savings_and_most_cold_start_waits_removed(
    advice: dict[str, Any], saves: int | None, removed: int | None
) -> None:
    digest = notable(advice, requests=1000, model_id="m1", deployment_id="d1")
    if saves is None:
        assert digest is None
        return
    assert digest is not None
    assert digest["saves_percent"] == saves and digest["cold_start_waits_removed_percent"] == removed
    assert digest["url"] == "/ui/models/m1/deployments/d1"
    assert digest["command"] == "swell advise --deployment m1/d1"
    assert ("save" in digest["summary"]) == (saves > 0) and ("remove" in digest["summary"]) == (removed > 0)


class _Runner:
    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.calls: list[str] = []

    async def __call__(self, view: Mapping[str, Any], traffic: Mapping[str, Any], cap: int) -> dict[str, Any]:
        self.calls.append(str(view["id"]))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _job(deployment: str, arrivals: int) -> tuple[str, str, Any, int]:
    return (deployment, "m1", lambda: ({"id": deployment}, {}), arrivals)


async def test_due_hourly_with_new_traffic_and_enough_of_it() -> None:
    runner = _Runner(_advice((1000, 10), ("cheapest", 600, 10)))
    cache = AdviceCache(runner, every=3600.0)
    assert not cache.due("d1", MIN_REQUESTS - 1, now=0.0)  # too little history
    assert cache.due("d1", MIN_REQUESTS, now=0.0)
    await cache.run([_job("d1", 500)], now=0.0, cap=10)
    assert runner.calls == ["d1"] and cache.get("d1") is not None and cache.get("d1")["saves_percent"] == 40  # type: ignore[index]
    assert not cache.due("d1", 600, now=3599.0)  # within the hour
    assert not cache.due("d1", 500, now=7200.0)  # no new traffic since
    assert cache.due("d1", 600, now=3600.0)
    cache.forget({"d2"})
    assert cache.get("d1") is None


async def test_a_failed_run_is_retried_after_a_growing_back_off_and_none_runs_without_a_runner() -> None:
    runner = _Runner(RuntimeError("swell advise took over 120 s and was stopped"))  # type: ignore[arg-type]
    cache = AdviceCache(runner, every=3600.0)
    await cache.run([_job("d1", 500)], now=0.0, cap=10)
    assert cache.get("d1") is None and not cache.due("d1", 500, now=60.0)  # not every housekeeping round
    assert cache.due("d1", 500, now=RETRY_SECONDS)  # the same history: the failure was not its answer
    await cache.run([_job("d1", 500)], now=RETRY_SECONDS, cap=10)
    assert not cache.due("d1", 500, now=RETRY_SECONDS * 3 - 1) and cache.due("d1", 500, now=RETRY_SECONDS * 3)
    runner.answer = _advice((1000, 10), ("cheapest", 600, 10))
    await cache.run([_job("d1", 500)], now=RETRY_SECONDS * 3, cap=10)
    assert cache.get("d1") is not None and not cache.due("d1", 600, now=RETRY_SECONDS * 4)  # back to hourly
    assert not AdviceCache(None, every=3600.0).due("d1", 10_000, now=0.0)
    assert not AdviceCache(runner, every=0).due("d1", 10_000, now=0.0)  # advice_seconds 0: off


async def test_a_quiet_answer_is_cached_as_no_marker() -> None:
    runner = _Runner(_advice((1000, 10), findings=0))
    cache = AdviceCache(runner, every=3600.0)
    await cache.run([_job("d1", 500)], now=0.0, cap=10)
    assert cache.get("d1") is None and not cache.due("d1", 500, now=10.0)
