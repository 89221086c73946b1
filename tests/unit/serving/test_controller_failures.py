"""Replicas that die while serving: crash-loop back-off, Unhealthy with the last
error, isolation between deployments, a per-model load timeout.  A fake
backend and a virtual clock: no processes, no sleeps."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from serving_harness import settle, setup, tick  # type: ignore[import-not-found]

from swell.config import AutoscalingSettings, ModelConfig
from swell.serving import (
    DeploymentStatus,
    ReplicaSpec,
    ReplicaState,
    Unavailable,
)
from swell.serving._controller import (
    BACKOFF_MAX_SECONDS,
    CRASH_LOOP_WINDOW_SECONDS,
    crash_backoff,
)
from swell.serving._testing import FakeBackend

WARM = AutoscalingSettings(min_replica=1, max_replica=3, autoscaling_window=10, scale_down_delay=0)
KILLED = "replica was killed by SIGKILL; last lines of r.log:\nserving"


def latest(backend: FakeBackend) -> str:
    return backend.started[-1].id


@pytest.mark.parametrize(
    ("crashes", "seconds"),
    [(0, 0.0), (1, 0.0), (2, 1.0), (3, 2.0), (4, 4.0), (7, 32.0), (8, BACKOFF_MAX_SECONDS), (30, BACKOFF_MAX_SECONDS)],
)
def test_crash_backoff_first_at_once_then_doubling_to_the_cap(crashes: int, seconds: float) -> None:
    assert crash_backoff(crashes) == seconds


async def test_crash_loop_backs_off_exponentially_and_shows_unhealthy_with_the_error() -> None:
    controller, _router, backend, clock = setup(WARM)
    scaled = controller.get("dep1")
    assert scaled is not None
    await tick(controller, clock)
    waits: list[float] = []
    for n in range(1, 9):
        rid = latest(backend)
        backend.ready(rid)
        assert scaled.status() is DeploymentStatus.ACTIVE
        clock.advance(5.0)  # dies 5 s after it became ready: a crash loop
        started = len(backend.started)
        backend.set_state(rid, ReplicaState.FAILED, error=KILLED)
        await settle()
        assert scaled.crashes == n
        assert scaled.status() is DeploymentStatus.UNHEALTHY
        assert scaled.error is not None and f"replica {rid} failed while serving" in scaled.error
        assert "killed by SIGKILL" in scaled.error
        waited = 0.0
        while len(backend.started) == started:
            await tick(controller, clock, 0.25)
            waited += 0.25
            assert waited < 100
        waits.append(waited)
        # While the replacement starts, a crash-looping deployment stays Unhealthy.
        backend.set_state(latest(backend), ReplicaState.LOADING)
        assert scaled.status() is DeploymentStatus.UNHEALTHY
    # Measured in 0.25 s ticks; the first replacement starts with the news itself.
    assert waits == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0]


async def test_a_replica_that_serves_the_window_ends_the_crash_loop() -> None:
    controller, _router, backend, clock = setup(WARM)
    scaled = controller.get("dep1")
    assert scaled is not None
    await tick(controller, clock)
    for _ in range(3):
        rid = latest(backend)
        backend.ready(rid)
        clock.advance(1.0)
        backend.set_state(rid, ReplicaState.FAILED, error=KILLED)
        await settle()
        for _ in range(10):
            await tick(controller, clock)
    assert scaled.crashes == 3
    rid = latest(backend)
    backend.ready(rid)
    assert scaled.status() is DeploymentStatus.ACTIVE and scaled.error is not None  # still looping
    for _ in range(int(CRASH_LOOP_WINDOW_SECONDS)):
        await tick(controller, clock)
    assert scaled.crashes == 0 and scaled.error is None
    assert scaled.status() is DeploymentStatus.ACTIVE
    # A young death after that is a first one again: replaced at once.
    started = len(backend.started)
    clock.advance(5.0)
    backend.set_state(rid, ReplicaState.FAILED, error=KILLED)
    await settle()
    assert len(backend.started) == started + 1
    backend.ready(latest(backend))
    clock.advance(5.0)
    backend.set_state(latest(backend), ReplicaState.FAILED, error=KILLED)
    await settle()
    assert scaled.crashes == 1 and len(backend.started) == started + 2


async def test_a_replica_that_served_long_is_replaced_at_once_and_starts_no_loop() -> None:
    controller, _router, backend, clock = setup(WARM)
    scaled = controller.get("dep1")
    assert scaled is not None
    await tick(controller, clock)
    backend.ready("r0")
    clock.advance(CRASH_LOOP_WINDOW_SECONDS + 1)  # no tick: only its age counts
    backend.set_state("r0", ReplicaState.FAILED, error="the model exceeded its memory limit of 64Mi and was stopped")
    await settle()
    assert scaled.crashes == 0 and len(backend.started) == 2  # replaced at once
    assert scaled.status() is DeploymentStatus.WAKING_UP
    assert scaled.error is not None and "exceeded its memory limit" in scaled.error


async def test_with_a_ready_sibling_the_dead_replica_is_replaced_at_once() -> None:
    settings = AutoscalingSettings(min_replica=2, max_replica=3, autoscaling_window=10, scale_down_delay=0)
    controller, _router, backend, clock = setup(settings)
    scaled = controller.get("dep1")
    assert scaled is not None
    await tick(controller, clock)
    backend.ready("r0")
    backend.ready("r1")
    for n in range(1, 6):  # r1's successors keep dying young; r0 serves on
        victim = latest(backend)
        clock.advance(1.0)
        backend.set_state(victim, ReplicaState.FAILED, error=KILLED)
        await settle()
        assert scaled.crashes == n and scaled.status() is DeploymentStatus.ACTIVE
        assert len(backend.started) == 2 + n  # no back-off: the deployment still serves
        backend.ready(latest(backend))


async def test_queued_requests_wait_for_the_first_replacement_then_fail_fast_in_a_loop() -> None:
    controller, router, backend, clock = setup()  # min_replica 0: requests wake it
    scaled = controller.get("dep1")
    assert scaled is not None
    first = asyncio.create_task(router.acquire())
    await settle()
    backend.ready("r0")
    await first
    waiting = asyncio.create_task(router.acquire())
    await settle()
    backend.set_state("r0", ReplicaState.FAILED, error=KILLED)  # one death: the request waits
    await settle()
    assert not waiting.done() and len(backend.started) == 2
    backend.ready("r1")
    handle = await waiting
    assert handle.id == "r1"  # held: it is in flight when r1 dies
    queued = [asyncio.create_task(router.acquire()) for _ in range(2)]
    await settle()
    clock.advance(2.0)
    backend.set_state("r1", ReplicaState.FAILED, error=KILLED)  # the second in a row, none left
    await settle()
    for task in queued:
        with pytest.raises(Unavailable) as info:
            await task
        assert info.value.status == 503 and "killed by SIGKILL" in (info.value.reason or "")
    assert scaled.status() is DeploymentStatus.UNHEALTHY
    with pytest.raises(Unavailable) as info:  # during the back-off: 503 at once, nothing queued
        await router.acquire()
    assert "keeps failing" in (info.value.reason or "") and router.queued == 0
    await tick(controller, clock, 1.5)  # past the 1 s back-off: the next request tries again
    again = asyncio.create_task(router.acquire())
    await settle()
    assert len(backend.started) >= 3  # as many as the window's memory of demand asks
    backend.ready("r2")
    router.release(await again)
    assert scaled.status() is DeploymentStatus.ACTIVE


async def test_a_replica_that_dropped_a_request_counts_as_a_crash() -> None:
    # The router notices first (the connection dropped): it asks for a stop, and
    # the backend reports STOPPED; that is still a death while serving.
    controller, router, backend, clock = setup(WARM)
    scaled = controller.get("dep1")
    assert scaled is not None
    await tick(controller, clock)
    backend.ready("r0")
    handle = router.handles["r0"]
    router.mark_broken(handle)
    scaled.broken(handle)
    await settle()
    assert "r0" in backend.stopped and scaled.crashes == 1
    assert scaled.error is not None and "replica r0 failed while serving" in scaled.error
    assert len(backend.started) == 2


async def test_a_planned_stop_is_not_a_crash() -> None:
    controller, router, backend, clock = setup(AutoscalingSettings(autoscaling_window=10, scale_down_delay=0))
    scaled = controller.get("dep1")
    assert scaled is not None
    task = asyncio.create_task(router.acquire())
    await settle()
    backend.ready("r0")
    router.release(await task)
    for _ in range(15):
        await tick(controller, clock)
    assert backend.stopped == ["r0"] and scaled.crashes == 0 and scaled.error is None
    assert scaled.status() is DeploymentStatus.SCALED_TO_ZERO


async def test_one_deployments_crash_loop_leaves_another_alone() -> None:
    controller, _router, backend, clock = setup(WARM)
    config = ModelConfig.model_validate({"runtime": {"predict_concurrency": 1}})
    other = controller.add(
        "dep2",
        name="other",
        spec=ReplicaSpec("dep2", Path("/nowhere"), config, python="python"),
        settings=WARM,
    ).router
    await tick(controller, clock)
    ids = {r.deployment_id: r.id for r in backend.started}
    backend.ready(ids["dep1"])
    backend.ready(ids["dep2"])
    for _ in range(6):  # dep1 crash-loops into a long back-off
        victim = [r for r in backend.alive("dep1")][-1].id
        if backend.replicas[victim].state is not ReplicaState.READY:
            backend.ready(victim)
        clock.advance(1.0)
        backend.set_state(victim, ReplicaState.FAILED, error=KILLED)
        await settle()
        while not backend.alive("dep1"):
            await tick(controller, clock)
    dep1 = controller.get("dep1")
    dep2 = controller.get("dep2")
    assert dep1 is not None and dep2 is not None
    assert dep1.crashes == 6 and dep2.crashes == 0 and dep2.error is None
    assert dep2.status() is DeploymentStatus.ACTIVE
    # dep2 serves, and a replica it loses is replaced at the same tick, back-off free.
    handle = await asyncio.wait_for(other.acquire(), 1)
    other.release(handle)
    clock.advance(CRASH_LOOP_WINDOW_SECONDS + 1)
    before = len(backend.started)
    backend.set_state(handle.id, ReplicaState.FAILED, error=KILLED)
    await settle()
    assert len(backend.started) == before + 1 and backend.started[-1].deployment_id == "dep2"


async def test_per_model_load_timeout_overrides_the_servers() -> None:
    controller, router, backend, clock = setup(WARM, load_stall_seconds=1000.0, load_timeout_seconds=1000.0)
    config = ModelConfig.model_validate({"runtime": {"load_timeout_seconds": 5}})
    scaled = controller.get("dep1")
    assert scaled is not None
    scaled.spec = dataclasses.replace(scaled.spec, replica=dataclasses.replace(router.spec, config=config))
    await tick(controller, clock)
    backend.set_state("r0", ReplicaState.LOADING)
    for _ in range(4):
        await tick(controller, clock)
    assert "r0" not in backend.stopped
    for _ in range(3):
        await tick(controller, clock)
    assert "r0" in backend.stopped
    assert scaled.error is not None and "within 5 s (runtime.load_timeout_seconds)" in scaled.error


def test_runtime_config_fields_default_off() -> None:
    runtime = ModelConfig.model_validate({}).runtime
    assert runtime.predict_idempotent is False and runtime.load_timeout_seconds is None
    with pytest.raises(ValueError, match="load_timeout_seconds"):
        ModelConfig.model_validate({"runtime": {"load_timeout_seconds": 0}})
