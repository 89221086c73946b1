"""The opt-in extras (``burst``, ``trend``) as live settings: the control loop, with a fake
backend and a virtual clock, scales as the simulator's replay of the same traffic does."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from serving_harness import settle, setup, tick  # type: ignore[import-not-found]

from swell.config import AutoscalingSettings
from swell.serving import DeploymentRouter, ReplicaHandle
from swell.sim import ColdStart, SimConfig, replay

COLD = 30  # seconds from start to ready, for both worlds
SERVICE = 10  # seconds one request takes
BURST = 20  # requests arriving at once, a minute after the first


def _arrive(router: DeploymentRouter, n: int = 1) -> list[asyncio.Task[ReplicaHandle]]:
    """``n`` requests reach the router: counted as ``serve`` counts them, then queued for a slot."""
    router.arrivals += n
    return [asyncio.create_task(router.acquire()) for _ in range(n)]


def _settings(burst: bool) -> AutoscalingSettings:
    return AutoscalingSettings(autoscaling_window=60, scale_down_delay=600, max_replica=10, burst=burst)


def _simulated(burst: bool) -> int:
    """Replicas the simulator wants at the burst: one request at 0 (a cold start), BURST at 60."""
    arrivals = np.array([0.0] + [60.0] * BURST)
    config = SimConfig(settings=_settings(burst), cold_start=ColdStart("fixed", COLD), timeline=True)
    timeline = replay(arrivals, np.full(arrivals.size, float(SERVICE)), "swell", config).timeline
    assert timeline is not None
    return int(timeline.replicas[np.searchsorted(timeline.t, 60.0)])


async def _live(burst: bool) -> int:
    """The same traffic through the control loop: replicas it wants at the first tick after the burst."""
    controller, router, backend, clock = setup(_settings(burst))
    [first] = _arrive(router)
    await settle()
    for _ in range(COLD):
        await tick(controller, clock)
    backend.ready("r0")  # a 30 s cold start: the loop's estimate
    handle = await first
    for _ in range(SERVICE):
        await tick(controller, clock)
    router.release(handle)
    for _ in range(60 - COLD - SERVICE):
        await tick(controller, clock)
    waiting = _arrive(router, BURST)
    await settle()
    await tick(controller, clock)
    replicas = len(backend.alive("dep1"))
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    return replicas


async def test_burst_on_scales_for_the_backlog_as_the_simulator_does() -> None:
    live, simulated = await _live(True), _simulated(True)
    assert live == simulated == 10  # everything in the system at once, up to max_replica


async def test_burst_off_waits_for_the_window_live_and_simulated() -> None:
    live, simulated = await _live(False), _simulated(False)
    assert live < 10 and simulated < 10


@pytest.mark.parametrize("burst", [False, True])
async def test_the_extras_read_the_deployments_own_estimates(burst: bool) -> None:
    controller, router, backend, clock = setup(_settings(burst).model_copy(update={"trend": True}))
    scaled = controller.get("dep1")
    assert scaled is not None
    [task] = _arrive(router)
    await settle()
    for _ in range(12):
        await tick(controller, clock)
    backend.ready("r0")
    router.release(await task)
    await tick(controller, clock)
    extras = scaled.extras()
    assert (extras.burst, extras.trend) == (burst, True)
    assert extras.cold_start == pytest.approx(12)
    assert extras.service_time == pytest.approx(scaled.busy / router.arrivals) == pytest.approx(12)  # its wait for the cold start
    assert extras.predict_concurrency == 1


def test_extras_off_cost_nothing() -> None:
    controller, _, _, _ = setup(_settings(False))
    scaled = controller.get("dep1")
    assert scaled is not None and not scaled.extras().active
