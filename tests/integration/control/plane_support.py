"""Helpers for the control plane's integration tests: settle the loop, start replicas by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from swell.control import ControlPlane, PushResult
from swell.serving._testing import FakeBackend

MakeArchive = Callable[..., Path]


async def settle() -> None:
    """Let the loop's spawned starts and the store's thread run (bounded)."""
    for _ in range(20):
        await asyncio.sleep(0.005)


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    assert condition()


def ready_all(backend: FakeBackend) -> None:
    for replica in list(backend.replicas.values()):
        if replica.state.value == "starting":
            backend.ready(replica.id, address=f"unix:/nonexistent/{replica.id}.sock")


async def published_and_ready(
    plane: ControlPlane, backend: FakeBackend, make_archive: MakeArchive, **settings: int
) -> PushResult:
    """A published deployment with these settings, its min_replica replicas started and ready."""
    pushed = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    await plane.promotion.patch_settings("m", pushed.deployment_id, settings)
    await plane.controller.tick()
    await settle()
    ready_all(backend)
    return pushed
