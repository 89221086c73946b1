"""The router's async lane: priority order, fair turns with sync requests, clean cancellation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from swell.autoscaling import VirtualClock
from swell.config import AutoscalingSettings, ModelConfig
from swell.serving import DeploymentRouter, ReplicaSpec, ReplicaState, Unavailable
from swell.serving._backend import Replica
from swell.serving._testing import FakeSupervisor


def make_router(clock: VirtualClock, *, queue_limit: int | None = None) -> DeploymentRouter:
    config = ModelConfig.model_validate({"runtime": {"predict_concurrency": 1}})
    spec = ReplicaSpec("dep1", Path("/nowhere"), config, python="python")
    supervisor = FakeSupervisor(spec, AutoscalingSettings())
    return DeploymentRouter("dep1", name="m", supervisor=supervisor, now=clock.now, queue_limit=queue_limit)


def ready(router: DeploymentRouter, rid: str = "a") -> None:
    replica = Replica(id=rid, deployment_id="dep1", state=ReplicaState.READY, address=f"unix:/nowhere/{rid}.sock")
    router.ready(router.add(replica))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def serve_in_order(router: DeploymentRouter, waiters: dict[str, asyncio.Task]) -> list[str]:
    """Release the one slot again and again; the order in which the waiters got it."""
    order: list[str] = []
    while len(order) < len(waiters):
        await settle()
        done = [name for name, task in waiters.items() if task.done() and name not in order]
        assert len(done) == 1, done
        order.append(done[0])
        router.release(waiters[done[0]].result())
    return order


async def test_async_requests_run_by_priority_then_arrival() -> None:
    router = make_router(VirtualClock())
    ready(router)
    first = await router.acquire()
    waiters = {}
    for name, priority in [("p2-a", 2), ("p1-a", 1), ("p0-a", 0), ("p1-b", 1), ("p0-b", 0)]:
        waiters[name] = asyncio.create_task(router.acquire(priority=priority))
        await settle()
    assert router.queued == 5
    router.release(first)
    assert await serve_in_order(router, waiters) == ["p0-a", "p0-b", "p1-a", "p1-b", "p2-a"]
    assert router.queued == 0 and router.in_flight == 0


async def test_sync_and_async_take_free_slots_in_turn() -> None:
    router = make_router(VirtualClock())
    ready(router)
    first = await router.acquire()
    waiters = {}
    for i in range(3):
        waiters[f"async{i}"] = asyncio.create_task(router.acquire(priority=1))
    await settle()
    for i in range(3):
        waiters[f"sync{i}"] = asyncio.create_task(router.acquire())
    await settle()
    router.release(first)
    order = await serve_in_order(router, waiters)
    # A backlog of async requests does not hold back the sync ones behind it, nor the reverse.
    assert order == ["sync0", "async0", "sync1", "async1", "sync2", "async2"]


async def test_async_lane_counts_toward_concurrency_and_wakes() -> None:
    router = make_router(VirtualClock())
    woken = router._supervisor.woken  # type: ignore[attr-defined]
    task = asyncio.create_task(router.acquire(priority=1))
    await settle()
    assert router.concurrency == 1 and woken == [0]
    ready(router)
    handle = await task
    assert router.in_flight == 1 and router.queued == 0
    router.release(handle)


async def test_async_lane_ignores_the_queue_limit() -> None:
    router = make_router(VirtualClock(), queue_limit=1)
    ready(router)
    first = await router.acquire()
    waiting = [asyncio.create_task(router.acquire(priority=1)) for _ in range(3)]
    await settle()
    assert router.queued == 3  # kept requests are never refused for a full queue
    with pytest.raises(Unavailable) as refused:
        await asyncio.gather(router.acquire(), router.acquire())
    assert refused.value.status == 429
    router.fail_queued(Unavailable(503, "stop"))
    await asyncio.gather(*waiting, return_exceptions=True)
    router.release(first)


async def test_cancelled_lane_entries_are_counted_out_and_never_block() -> None:
    router = make_router(VirtualClock())
    ready(router)
    first = await router.acquire()
    gone = [asyncio.create_task(router.acquire(priority=0)) for _ in range(3)]
    await settle()
    for task in gone:
        task.cancel()
    await asyncio.gather(*gone, return_exceptions=True)
    assert router.queued == 0
    router.release(first)
    # Only dead entries are left in the lane: a new request still gets the free slot.
    handle = await asyncio.wait_for(router.acquire(), 1)
    router.release(handle)
    async_handle = await asyncio.wait_for(router.acquire(priority=2), 1)
    router.release(async_handle)
    assert router.queued == 0 and router.in_flight == 0


async def test_fail_queued_answers_the_async_lane_too() -> None:
    router = make_router(VirtualClock())
    waiting = [asyncio.create_task(router.acquire(priority=p)) for p in (0, 1, 2)]
    await settle()
    assert router.fail_queued(Unavailable(503, "deployment failed to load")) == 3
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, Unavailable) and r.status == 503 for r in results)
    assert router.queued == 0
