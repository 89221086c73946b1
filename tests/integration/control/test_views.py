"""The JSON views of deployments."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from swell.control import ControlPlane

MakeArchive = Callable[..., Path]


async def test_deployment_view_shows_status_settings_and_replicas(plane: ControlPlane, make_archive: MakeArchive) -> None:
    result = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    view = plane.views.deployment_view(plane.registry.deployments[result.deployment_id])
    assert view["status"] == "Scaled to zero" and view["replicas"] == []
    assert view["autoscaling_settings"]["max_replica"] == 1 and view["environments"] == ["production"]
