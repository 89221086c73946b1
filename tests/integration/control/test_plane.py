"""The plane as a whole: the predict lookup, and everything surviving a restart."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from plane_support import settle  # type: ignore[import-not-found]

from swell.autoscaling import VirtualClock
from swell.config import ServerSettings
from swell.control import ControlPlane, NotFound
from swell.serving._testing import FakeBackend

MakeArchive = Callable[..., Path]


async def test_unknown_names_are_not_found(plane: ControlPlane, make_archive: MakeArchive) -> None:
    with pytest.raises(NotFound):
        plane.router("nope", "development", None)
    await plane.push(make_archive(), model_name="m", publish=False, promote=False)
    with pytest.raises(NotFound):
        plane.router("m", "environments", "production")  # nothing published yet
    with pytest.raises(NotFound):
        plane.router("m", "environments", "canary")


async def test_everything_survives_a_restart(
    tmp_path: Path, make_archive: MakeArchive, wall: Any, database_url: str
) -> None:
    settings = ServerSettings(data_dir=tmp_path / "data", max_replica_cap=5, database_url=database_url)
    first = ControlPlane(settings, FakeBackend(), clock=VirtualClock(), wall_clock=wall, api_key="k1")
    await first.start(background=False)
    published = await first.push(make_archive(), model_name="m", publish=True, promote=False)
    dev = await first.push(make_archive(), model_name="m", publish=False, promote=False)
    await first.promotion.patch_settings("m", published.deployment_id, {"min_replica": 1, "max_replica": 3})
    await first.lifecycle.create_environment("m", "canary")
    invoke = await first.access.create_key({"type": "invoke", "model_ids": ["m"]})
    await first.access.set_secret({"name": "s", "value": "v"})
    await first.lifecycle.deactivate("m", dev.deployment_id)
    await first.close()

    backend = FakeBackend()
    second = ControlPlane(settings, backend, clock=VirtualClock(), wall_clock=wall)
    await second.start(background=False)
    try:
        model = second.registry.model("m")
        assert model.environments == {"production": published.deployment_id, "staging": None, "canary": None}
        assert model.development == dev.deployment_id and not second.registry.deployments[dev.deployment_id].active
        assert second.registry.deployments[published.deployment_id].settings.max_replica == 3
        key = second.keys.authenticate(f"Api-Key {invoke['key']}".encode())
        assert key is not None and key.model_ids == [model.id] and not key.can_manage()
        assert second.keys.authenticate(b"Api-Key k1") is not None
        assert [s["name"] for s in await second.access.list_secrets()] == ["s"]
        await second.controller.tick()
        await settle()
        assert len(backend.alive(published.deployment_id)) == 1  # back to min_replica
    finally:
        await second.close()
