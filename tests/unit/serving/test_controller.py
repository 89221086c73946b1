"""The control loop with a fake backend and a virtual clock: no processes, no sleeps."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_harness import settle, setup, tick  # type: ignore[import-not-found]

from swell.config import AutoscalingSettings, ModelConfig
from swell.serving import (
    DeploymentStatus,
    ReplicaSpec,
    ReplicaState,
    Unavailable,
    render_metrics,
)
from swell.serving._metrics import CONTENT_TYPE


async def test_request_wakes_a_scaled_to_zero_deployment_at_once() -> None:
    controller, router, backend, clock = setup()
    scaled = controller.get("dep1")
    assert scaled is not None and scaled.status() is DeploymentStatus.SCALED_TO_ZERO
    waiting = asyncio.create_task(router.acquire())
    await settle()
    assert len(backend.started) == 1  # no tick needed
    assert scaled.status() is DeploymentStatus.WAKING_UP
    backend.set_state("r0", ReplicaState.LOADING)
    assert scaled.status() is DeploymentStatus.LOADING_MODEL
    backend.ready("r0")
    handle = await waiting
    assert handle.id == "r0" and scaled.status() is DeploymentStatus.ACTIVE
    router.release(handle)


async def test_burst_wakes_only_one_replica() -> None:
    controller, router, backend, clock = setup()
    tasks = [asyncio.create_task(router.acquire()) for _ in range(50)]
    await settle()
    assert len(backend.started) == 1
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_scale_up_under_load_then_down_to_zero() -> None:
    settings = AutoscalingSettings(
        autoscaling_window=10, scale_down_delay=0, max_replica=3, target_utilization_percentage=100
    )
    controller, router, backend, clock = setup(settings)
    tasks = [asyncio.create_task(router.acquire()) for _ in range(3)]
    await settle()
    backend.ready("r0")
    for _ in range(3):
        await tick(controller, clock)
    assert len(backend.alive("dep1")) == 3
    for rid in ("r1", "r2"):
        backend.ready(rid)
    handles = await asyncio.gather(*tasks)
    assert {h.id for h in handles} == {"r0", "r1", "r2"}
    for h in handles:
        router.release(h)
    for _ in range(15):
        await tick(controller, clock)
    assert backend.alive("dep1") == []
    assert controller.get("dep1").status() is DeploymentStatus.SCALED_TO_ZERO  # type: ignore[union-attr]
    decision = controller.get("dep1").decision  # type: ignore[union-attr]
    assert decision is not None and decision.target == 0


async def test_draining_replica_stops_only_when_its_requests_are_done() -> None:
    controller, router, backend, clock = setup(AutoscalingSettings(autoscaling_window=10, scale_down_delay=0))
    task = asyncio.create_task(router.acquire())
    await settle()
    backend.ready("r0")
    handle = await task
    for _ in range(15):
        await tick(controller, clock)
    # still one in flight: the rule wants 1; force a drain by lowering the target
    controller.update_settings("dep1", AutoscalingSettings(autoscaling_window=10, scale_down_delay=0, max_replica=1))
    scaled = controller.get("dep1")
    assert scaled is not None
    controller._drain(scaled, handle)
    await settle()
    assert backend.stopped == []
    router.release(handle)
    await settle()
    assert backend.stopped == ["r0"]


async def test_failed_load_answers_waiters_with_503_and_backs_off() -> None:
    controller, router, backend, clock = setup()
    tasks = [asyncio.create_task(router.acquire()) for _ in range(2)]
    await settle()
    backend.set_state("r0", ReplicaState.FAILED, error="Traceback ...\nImportError: no module named torch")
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, Unavailable) and r.status == 503 for r in results)
    assert "torch" in (results[0].reason or "")  # type: ignore[union-attr]
    scaled = controller.get("dep1")
    assert scaled is not None and scaled.status() is DeploymentStatus.UNHEALTHY
    assert "torch" in (scaled.error or "")
    # during the back-off a request is answered at once, not queued
    with pytest.raises(Unavailable):
        await router.acquire()
    assert len(backend.started) == 1
    await tick(controller, clock, 2.0)  # past the 1 s back-off
    task = asyncio.create_task(router.acquire())
    await settle()
    assert len(backend.started) == 2
    backend.ready("r1")
    router.release(await task)
    assert scaled.status() is DeploymentStatus.ACTIVE and scaled.error is None


async def test_crashed_replica_is_replaced_for_waiting_requests() -> None:
    controller, router, backend, clock = setup()
    task = asyncio.create_task(router.acquire())
    await settle()
    backend.ready("r0")
    await task
    waiting = asyncio.create_task(router.acquire())
    await settle()
    backend.set_state("r0", ReplicaState.FAILED, error="killed by signal 9")
    await settle()
    assert len(backend.started) == 2  # replaced at once: a request waits
    backend.ready("r1")
    assert (await waiting).id == "r1"


async def test_min_replica_keeps_replicas_warm() -> None:
    controller, router, backend, clock = setup(AutoscalingSettings(min_replica=2, max_replica=3))
    await tick(controller, clock)
    assert len(backend.alive("dep1")) == 2


async def test_scale_down_stops_not_ready_replicas_first() -> None:
    settings = AutoscalingSettings(min_replica=2, max_replica=3)
    controller, router, backend, clock = setup(settings)
    await tick(controller, clock)
    backend.ready("r0")  # r1 is still starting
    controller.update_settings("dep1", AutoscalingSettings(min_replica=1, max_replica=3, scale_down_delay=0))
    await tick(controller, clock)
    assert backend.stopped == ["r1"]


async def test_retire_stops_everything_and_forgets_the_deployment() -> None:
    controller, router, backend, clock = setup(AutoscalingSettings(min_replica=1))
    await tick(controller, clock)
    backend.ready("r0")
    controller.retire("dep1")
    await settle()
    await tick(controller, clock)
    assert backend.stopped == ["r0"] and controller.get("dep1") is None


async def test_close_stops_replicas_and_answers_the_queue() -> None:
    controller, router, backend, clock = setup(AutoscalingSettings(min_replica=1))
    await tick(controller, clock)
    waiting = asyncio.create_task(router.acquire())
    await settle()
    await controller.close()
    result = (await asyncio.gather(waiting, return_exceptions=True))[0]
    assert isinstance(result, Unavailable) and result.status == 503
    assert backend.closed


async def test_replica_that_cannot_even_spawn_fails_the_waiters_and_backs_off() -> None:
    # The process backend returns a FAILED replica (no callback follows) when
    # the process cannot be spawned, e.g. a deployment's venv interpreter is gone.
    controller, router, backend, _clock = setup()
    backend.spawn_error = "could not start the replica process: No such file or directory"
    task = asyncio.create_task(router.acquire())
    result = (await asyncio.gather(asyncio.wait_for(task, 5), return_exceptions=True))[0]
    assert isinstance(result, Unavailable) and result.status == 503
    scaled = controller.get("dep1")
    assert scaled is not None and scaled.status() is DeploymentStatus.UNHEALTHY
    assert "No such file" in (scaled.error or "")
    assert router.queued == 0


async def test_retiring_deployment_still_serves_what_it_holds_when_its_replica_dies() -> None:
    controller, router, backend, clock = setup()
    first = asyncio.create_task(router.acquire())
    await settle()
    backend.ready("r0")
    handle = await first
    waiting = asyncio.create_task(router.acquire())
    await settle()
    controller.retire("dep1")  # a newer development push replaced it
    backend.set_state("r0", ReplicaState.FAILED, error="killed by signal 9")
    router.release(handle)
    await settle()
    assert len(backend.started) == 2  # the queued request gets a replica, not a hang
    backend.ready("r1")
    served = await asyncio.wait_for(waiting, 5)
    assert served.id == "r1"
    router.release(served)
    await tick(controller, clock)  # the queue is empty: r1 drains and stops
    await tick(controller, clock)  # nothing left: the deployment is forgotten
    assert controller.get("dep1") is None and backend.alive("dep1") == []


async def test_a_deployment_whose_tick_raises_does_not_starve_the_others(caplog: pytest.LogCaptureFixture) -> None:
    controller, broken, backend, clock = setup()
    config = ModelConfig.model_validate({})
    controller.add(
        "dep2",
        name="m2",
        spec=ReplicaSpec("dep2", Path("/nowhere"), config, python="python"),
        settings=AutoscalingSettings(min_replica=1),
    )

    def boom(now: float) -> float:
        raise RuntimeError("bad window")

    broken.take_mean = boom  # type: ignore[method-assign]
    await tick(controller, clock)  # must neither raise nor skip dep2
    assert len(backend.alive("dep2")) == 1
    assert "bad window" in caplog.text


# ---------------------------------------------------------------- /metrics: valid Prometheus text, checked with the reference parser


async def test_metrics_parse_and_carry_the_counters() -> None:
    controller, router, backend, clock = setup()
    waiting = asyncio.create_task(router.acquire())
    await settle()
    backend.set_state("r0", ReplicaState.LOADING)
    clock.advance(0.3)
    backend.ready("r0")
    handle = await waiting
    router.release(handle)
    router._count(200, 0.0)
    router.name = 'odd "name"\nwith\\escapes'
    await tick(controller, clock)

    families = {f.name: f for f in text_string_to_metric_families(render_metrics(controller).decode())}
    assert {"swell_requests", "swell_request_duration_seconds", "swell_queue_length", "swell_replicas",
            "swell_cold_start_seconds", "swell_replicas_target", "swell_request_retries",
            "swell_requests_in_flight"} <= set(families)
    (answered,) = families["swell_requests"].samples
    assert answered.name == "swell_requests_total"
    assert answered.labels == {"model": 'odd "name"\nwith\\escapes', "deployment": "dep1", "status": "200"}
    assert answered.value == 1
    ready = [s for s in families["swell_replicas"].samples if s.labels["state"] == "ready"]
    assert [s.value for s in ready] == [1]
    cold = {s.name: s.value for s in families["swell_cold_start_seconds"].samples if s.labels.get("le") in (None, "+Inf")}
    assert cold["swell_cold_start_seconds_count"] == 1
    assert cold["swell_cold_start_seconds_sum"] == pytest.approx(0.3)
    assert "version=0.0.4" in CONTENT_TYPE
