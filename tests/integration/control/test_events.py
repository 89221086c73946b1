"""Events: the control loop's decisions with their reasons and the replicas' lifecycle, kept in the store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swell.autoscaling import VirtualClock
from swell.config import ServerSettings
from swell.control import ControlPlane
from swell.control._events import EventLog
from swell.serving._testing import FakeBackend

MakeArchive = Callable[..., Path]


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.005)


def _ready_all(backend: FakeBackend) -> None:
    for replica in list(backend.replicas.values()):
        if replica.state.value == "starting":
            backend.ready(replica.id, address=f"unix:/nonexistent/{replica.id}.sock")


async def _kinds(plane: ControlPlane, deployment_id: str) -> list[tuple[str, str]]:
    return [(row["kind"], row["message"]) for row in await plane.events.history(deployment_id)]


async def test_a_scale_cycle_is_told_with_reasons_and_survives_a_restart(
    tmp_path: Path, wall: Any, make_archive: MakeArchive, database_url: str
) -> None:
    settings = ServerSettings(data_dir=tmp_path / "data", max_replica_cap=5, database_url=database_url)
    backend = FakeBackend()
    plane = ControlPlane(settings, backend, clock=VirtualClock(), wall_clock=wall, api_key="k1")
    await plane.start(background=False)
    try:
        pushed = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
        dep = pushed.deployment_id
        await plane.promotion.patch_settings("m", dep, {"min_replica": 2, "max_replica": 3, "scale_down_delay": 0})
        await plane.controller.tick()
        await _settle()
        _ready_all(backend)
        await plane.promotion.patch_settings("m", dep, {"min_replica": 0})
        plane.clock.advance(120)  # type: ignore[attr-defined]
        await plane.controller.tick()
        await _settle()
        await plane.lifecycle.deactivate("m", dep)
        events = await _kinds(plane, dep)
        kinds = [kind for kind, _ in events]
        assert kinds.count("settings_changed") == 2
        up = next(message for kind, message in events if kind == "scale_up")
        assert up.startswith("scale up 0 → 2: avg concurrency 0.00 over 60 s") and "clamped by min_replica 2" in up
        assert kinds.count("replica_started") == 2 and kinds.count("replica_ready") == 2
        down = next(message for kind, message in events if kind == "scale_down")
        assert down.startswith("scale to zero: demand has stayed at or below 0 for 0 s")
        assert kinds.count("replica_draining") == 2 and kinds[-1] == "deactivated"
        assert kinds.index("scale_up") < kinds.index("replica_ready") < kinds.index("scale_down")
        rows = await plane.events.history(dep)
        ready = next(row for row in rows if row["kind"] == "replica_ready")
        assert set(ready["details"]["cold_start"]) >= {"total_seconds", "load_seconds"}
        assert ready["details"]["replica_id"] in ready["message"]
        assert [row["id"] for row in rows] == sorted(row["id"] for row in rows)
    finally:
        await plane.close()
    again = ControlPlane(settings, FakeBackend(), clock=VirtualClock(), wall_clock=wall)
    await again.start(background=False)
    try:
        assert await _kinds(again, dep) == events
        assert await again.events.history(dep, since=wall() + 1) == []
    finally:
        await again.close()


async def test_events_are_bounded_per_deployment(plane: ControlPlane) -> None:
    log = EventLog(plane.store, plane.wall, keep=50)
    for n in range(250):
        log.record("d1", "scale_up", f"event {n}")
        log.record("d2", "scale_up", f"other {n}")
        if n % 60 == 0:
            await log.flush()
    await log.flush()
    rows = await log.history("d1", limit=1000)
    assert 50 <= len(rows) <= 50 + 100 and rows[-1]["message"] == "event 249"
    assert len(await log.history("d2", limit=1000)) <= 150


async def test_followers_get_each_written_event_once(plane: ControlPlane) -> None:
    with plane.events.follow("d1") as queue:
        plane.events.record("d1", "scale_up", "one")
        plane.events.record("d2", "scale_up", "elsewhere")
        await plane.events.flush()
        got = queue.get_nowait()
        assert got["message"] == "one" and got["id"] > 0 and queue.empty()


async def test_deleting_a_deployment_deletes_its_events(
    plane: ControlPlane, make_archive: MakeArchive
) -> None:
    first = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    second = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    for pushed in (first, second):
        await plane.promotion.patch_settings("m", pushed.deployment_id, {"max_replica": 2})
    await plane.lifecycle.delete_deployment("m", second.deployment_id)
    assert await plane.events.history(second.deployment_id) == []
    assert [row["kind"] for row in await plane.events.history(first.deployment_id)] == ["settings_changed"]
    await plane.lifecycle.delete_model("m")
    assert await plane.events.history(first.deployment_id) == []
