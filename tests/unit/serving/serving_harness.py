"""A controller and one router over a fake backend and a virtual clock, for the unit tests of
serving (a module of its own: test files must not import each other or conftest)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swell.autoscaling import VirtualClock
from swell.config import AutoscalingSettings, ModelConfig, ServerSettings
from swell.serving import Controller, DeploymentRouter, ReplicaSpec
from swell.serving._testing import FakeBackend

DEFAULT_SETTINGS = AutoscalingSettings(autoscaling_window=10, scale_down_delay=0, max_replica=3)


async def settle() -> None:
    """Let spawned starts and callbacks run (no time passes)."""
    for _ in range(10):
        await asyncio.sleep(0)


def setup(
    settings: AutoscalingSettings | None = None,
    *,
    slots: int = 1,
    wall_clock: Callable[[], float] = time.time,
    **server: Any,
) -> tuple[Controller, DeploymentRouter, FakeBackend, VirtualClock]:
    """Deployment ``dep1`` (model ``m``) under a controller with a 1 s tick and no drain grace."""
    clock = VirtualClock(100.0)
    backend = FakeBackend()
    controller = Controller(
        backend,
        settings=ServerSettings(tick_seconds=1.0, drain_grace_seconds=0, **server),
        clock=clock,
        wall_clock=wall_clock,
    )
    config = ModelConfig.model_validate({"runtime": {"predict_concurrency": slots}})
    scaled = controller.add(
        "dep1",
        name="m",
        spec=ReplicaSpec("dep1", Path("/nowhere"), config, python="python"),
        settings=settings or DEFAULT_SETTINGS,
    )
    return controller, scaled.router, backend, clock


async def tick(controller: Controller, clock: VirtualClock, seconds: float = 1.0) -> None:
    clock.advance(seconds)
    await controller.tick()
    await settle()


class Recorder:
    """An ASGI ``send`` that keeps what it is sent."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])
