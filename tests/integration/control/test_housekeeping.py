"""Housekeeping: last-use times and idle deactivation, days passing on an injected wall clock."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from swell.control import ControlPlane

MakeArchive = Callable[..., Path]


DAY = 86400.0


async def test_idle_deployments_are_deactivated_after_14_and_60_days(
    plane: ControlPlane, wall: Any, make_archive: MakeArchive
) -> None:
    dev = await plane.push(make_archive(), model_name="m", publish=False, promote=False)
    prod = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    wall.advance(13 * DAY)
    await plane.housekeeping.run()
    assert plane.registry.deployments[dev.deployment_id].active
    wall.advance(1 * DAY)
    await plane.housekeeping.run()
    assert not plane.registry.deployments[dev.deployment_id].active
    assert plane.registry.deployments[prod.deployment_id].active
    # Traffic seen by the loop resets the idle time.
    wall.advance(50 * DAY)
    scaled = plane.controller.get(prod.deployment_id)
    assert scaled is not None
    scaled.last_active = plane.clock.now() + 1
    await plane.housekeeping.run()
    wall.advance(59 * DAY)
    await plane.housekeeping.run()
    assert plane.registry.deployments[prod.deployment_id].active
    wall.advance(1 * DAY)
    await plane.housekeeping.run()
    assert not plane.registry.deployments[prod.deployment_id].active
