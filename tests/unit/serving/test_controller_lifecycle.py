"""The loop's hooks for the control plane: promotion holds, development reloads, schedules, traffic."""

from __future__ import annotations

import math
from pathlib import Path

from serving_harness import settle, setup  # type: ignore[import-not-found]

from swell.config import AutoscalingSettings, ModelConfig
from swell.serving import ReplicaSpec


async def test_a_hold_keeps_replicas_until_it_expires() -> None:
    wall = [1_800_000_000.0]
    controller, _router, backend, clock = setup(AutoscalingSettings(max_replica=3, scale_down_delay=0), wall_clock=lambda: wall[0])
    controller.hold("dep1", 2, until=math.inf)
    await settle()
    assert len(backend.alive("dep1")) == 2
    for replica in backend.alive("dep1"):
        backend.ready(replica.id)
    controller.hold("dep1", 2, until=clock.now() + 5)
    for _ in range(4):
        clock.advance(1)
        await controller.tick()
        await settle()
    assert len(backend.alive("dep1")) == 2  # held while the window fills
    for _ in range(3):
        clock.advance(1)
        await controller.tick()
        await settle()
    assert backend.alive("dep1") == []  # then the rule decides again: no traffic, zero


async def test_reload_replaces_running_replicas_with_the_new_spec() -> None:
    wall = [1_800_000_000.0]
    controller, router, backend, _clock = setup(AutoscalingSettings(max_replica=2), wall_clock=lambda: wall[0])
    controller.hold("dep1", 1)
    await settle()
    old = backend.alive("dep1")[0]
    backend.ready(old.id)
    new_spec = ReplicaSpec("dep1", Path("/v2"), ModelConfig(), python="python")
    assert controller.reload("dep1", new_spec) == 1
    await settle()
    assert old.id in backend.stopped and router.spec is new_spec
    assert [r.id for r in backend.alive("dep1")] != [old.id] and len(backend.alive("dep1")) == 1


async def test_a_schedule_holds_min_replica_during_its_window() -> None:
    # 2027-01-15 08:59:00 UTC; the schedule holds 2 replicas from 09:00 to 10:00.
    wall = [1_800_003_540.0 - (1_800_003_540.0 % 86400) + 8 * 3600 + 59 * 60]
    settings = AutoscalingSettings.model_validate(
        {"max_replica": 3, "scale_down_delay": 0, "schedules": [{"start": "09:00", "end": "10:00", "min_replica": 2}]}
    )
    controller, _router, backend, clock = setup(settings, wall_clock=lambda: wall[0])
    clock.advance(1)
    await controller.tick()
    await settle()
    assert backend.alive("dep1") == []
    wall[0] += 120  # 09:01
    clock.advance(1)
    await controller.tick()
    await settle()
    assert len(backend.alive("dep1")) == 2


async def test_each_tick_records_arrivals_for_advise() -> None:
    wall = [1_800_000_000.0]
    controller, router, _backend, clock = setup(AutoscalingSettings(), wall_clock=lambda: wall[0])
    router.arrivals += 3  # as serve() counts them
    clock.advance(1)
    await controller.tick()
    scaled = controller.get("dep1")
    assert scaled is not None
    history = scaled.history.as_dict()
    assert sum(history["arrivals"]) == 3 and history["start"] == 1_800_000_000
