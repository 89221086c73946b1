"""Promotion, activation, idle deactivation, secrets and restarts, with a fake backend and injected clocks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from swell.autoscaling import VirtualClock
from swell.config import ServerSettings
from swell.control import ApiError, ControlPlane, NotFound, PushResult
from swell.serving._testing import FakeBackend



MakeArchive = Callable[..., Path]
DAY = 86400.0


async def _settle() -> None:
    """Let the loop's spawned starts and the store's thread run (bounded)."""
    for _ in range(20):
        await asyncio.sleep(0.005)


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    assert condition()


def _ready_all(backend: FakeBackend) -> None:
    for replica in list(backend.replicas.values()):
        if replica.state.value == "starting":
            backend.ready(replica.id, address=f"unix:/nonexistent/{replica.id}.sock")


async def _published_and_ready(
    plane: ControlPlane, backend: FakeBackend, make_archive: MakeArchive, **settings: int
) -> PushResult:
    """A published deployment with these settings, its min_replica replicas started and ready."""
    pushed = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    await plane.promotion.patch_settings("m", pushed.deployment_id, settings)
    await plane.controller.tick()
    await _settle()
    _ready_all(backend)
    return pushed


async def test_promotion_warms_the_new_deployment_before_switching(
    plane: ControlPlane, backend: FakeBackend, make_archive: MakeArchive
) -> None:
    old = await _published_and_ready(plane, backend, make_archive, min_replica=2, max_replica=4, scale_down_delay=120)
    assert plane.controller.ready_count(old.deployment_id) == 2
    new = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    promotion = asyncio.create_task(plane.promotion.promote("m", new.deployment_id, "production"))
    await eventually(lambda: len(backend.alive(new.deployment_id)) == 2)
    model = plane.registry.model("m")
    assert not promotion.done() and model.environments["production"] == old.deployment_id  # not yet: warming
    _ready_all(backend)
    view = await asyncio.wait_for(promotion, 5)
    assert model.environments["production"] == new.deployment_id
    assert view["autoscaling_settings"]["min_replica"] == 2 and view["autoscaling_settings"]["scale_down_delay"] == 120
    assert plane.router("m", "environments", "production").deployment_id == new.deployment_id


async def test_promotion_that_cannot_warm_leaves_the_environment_alone(
    plane: ControlPlane, backend: FakeBackend, make_archive: MakeArchive
) -> None:
    old = await _published_and_ready(plane, backend, make_archive, min_replica=1)
    new = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    promotion = asyncio.create_task(plane.promotion.promote("m", new.deployment_id))
    await eventually(lambda: len(backend.alive(new.deployment_id)) == 1)
    broken = backend.alive(new.deployment_id)[0]
    backend.set_state(broken.id, broken.state.__class__("failed"), error="ImportError: no module named torch")
    with pytest.raises(ApiError) as info:
        await asyncio.wait_for(promotion, 5)
    assert info.value.status == 503 and "torch" in info.value.payload["reason"]
    assert plane.registry.model("m").environments["production"] == old.deployment_id


async def test_promote_overrides_settings_and_refuses_bad_ones(plane: ControlPlane, make_archive: MakeArchive) -> None:
    await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    new = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    with pytest.raises(ApiError) as info:
        await plane.promotion.promote("m", new.deployment_id, settings={"max_replica": 0})
    assert info.value.status == 422 and info.value.payload["detail"][0]["field"] == "max_replica"
    assert plane.registry.model("m").environments["production"] != new.deployment_id  # nothing half-applied
    view = await plane.promotion.promote("m", new.deployment_id, settings={"max_replica": 3})
    assert view["autoscaling_settings"]["max_replica"] == 3 and view["environments"] == ["production"]
    with pytest.raises(ApiError) as info:
        await plane.promotion.promote("m", new.deployment_id, "canary")
    assert info.value.status == 404


async def test_new_environments_can_be_promoted_into(plane: ControlPlane, make_archive: MakeArchive) -> None:
    pushed = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    await plane.lifecycle.create_environment("m", "canary")
    with pytest.raises(ApiError) as info:
        await plane.lifecycle.create_environment("m", "canary")
    assert info.value.status == 409
    with pytest.raises(ApiError) as info:
        await plane.lifecycle.create_environment("m", "no spaces")
    assert info.value.status == 422 and info.value.payload["detail"][0]["value"] == "no spaces"
    await plane.promotion.promote("m", pushed.deployment_id, "canary")
    assert plane.router("m", "environments", "canary").deployment_id == pushed.deployment_id


async def test_a_deactivated_deployment_has_no_replicas_and_says_so(
    plane: ControlPlane, backend: FakeBackend, make_archive: MakeArchive
) -> None:
    pushed = await _published_and_ready(plane, backend, make_archive, min_replica=1)
    view = await plane.lifecycle.deactivate("m", pushed.deployment_id)
    await _settle()
    assert view["status"] == "Inactive" and backend.alive(pushed.deployment_id) == []
    with pytest.raises(ApiError) as info:
        plane.router("m", "environments", "production")
    assert info.value.status == 409 and "activate" in info.value.payload["reason"]
    view = await plane.lifecycle.activate("m", pushed.deployment_id)
    await plane.controller.tick()
    await _settle()
    assert view["active"] and len(backend.alive(pushed.deployment_id)) == 1  # back to min_replica


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


async def test_deleting_what_an_environment_points_at_is_refused(plane: ControlPlane, make_archive: MakeArchive) -> None:
    first = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    with pytest.raises(ApiError) as info:
        await plane.lifecycle.delete_deployment("m", first.deployment_id)
    assert info.value.status == 409 and info.value.payload["environments"] == ["production"]
    second = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    await plane.lifecycle.delete_deployment("m", second.deployment_id)
    with pytest.raises(NotFound):
        plane.router("m", "deployment", second.deployment_id)
    await plane.lifecycle.delete_model("m")
    with pytest.raises(NotFound):
        plane.registry.model("m")


async def test_concurrent_patches_apply_whole_one_after_the_other(plane: ControlPlane, make_archive: MakeArchive) -> None:
    pushed = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    bodies = [{"max_replica": n, "concurrency_target": n} for n in range(1, 6)]
    await asyncio.gather(*(plane.promotion.patch_settings("m", pushed.deployment_id, b) for b in bodies))
    settings = plane.registry.deployments[pushed.deployment_id].settings
    assert settings.max_replica == settings.concurrency_target  # never torn between two patches


async def test_secrets_are_encrypted_at_rest_and_only_declared_ones_reach_a_replica(
    plane: ControlPlane, make_archive: MakeArchive, tmp_path: Path
) -> None:
    from sqlalchemy import text

    await plane.access.set_secret({"name": "hf_token", "value": "hunter2-value"})
    await plane.access.set_secret({"name": "other", "value": "not-for-m"})
    pushed = await plane.push(
        make_archive({"model_name": "m", "secrets": {"hf_token": None}}), model_name=None, publish=True, promote=False
    )
    async with plane.store.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT name, ciphertext FROM secrets"))).all()
    assert {r[0] for r in rows} == {"hf_token", "other"}
    assert not any(b"hunter2" in bytes(r[1]) or b"not-for-m" in bytes(r[1]) for r in rows)
    folder = plane.router("m", "deployment", pushed.deployment_id).spec.secrets_dir
    assert folder is not None and not str(folder).startswith(str(tmp_path))  # memory, not the data dir
    assert sorted(p.name for p in folder.iterdir()) == ["hf_token"]
    assert (folder / "hf_token").read_text() == "hunter2-value"
    await plane.access.set_secret({"name": "hf_token", "value": "rotated"})
    assert (folder / "hf_token").read_text() == "rotated"
    assert [s["name"] for s in await plane.access.list_secrets()] == ["hf_token", "other"]
    await plane.access.delete_secret("hf_token")
    assert not (folder / "hf_token").exists()
    with pytest.raises(ApiError) as info:
        await plane.access.set_secret({"name": "bad name!", "value": 3})
    assert {d["field"] for d in info.value.payload["detail"]} == {"name", "value"}


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
        await _settle()
        assert len(backend.alive(published.deployment_id)) == 1  # back to min_replica
    finally:
        await second.close()


async def test_a_revoked_key_stops_working_and_the_last_workspace_key_stays(plane: ControlPlane) -> None:
    created = await plane.access.create_key({"type": "workspace", "name": "ci"})
    header = f"Api-Key {created['key']}".encode()
    assert plane.keys.authenticate(header) is not None
    await plane.access.revoke_key(created["id"])
    assert plane.keys.authenticate(header) is None
    last = plane.keys.live()[0]
    with pytest.raises(ApiError) as info:
        await plane.access.revoke_key(last.id)
    assert info.value.status == 409
    with pytest.raises(ApiError) as info:
        await plane.access.create_key({"type": "admin", "model_ids": ["nope"], "colour": 1})
    assert {d["field"] for d in info.value.payload["detail"]} == {"type", "model_ids", "colour"}


async def test_a_failed_development_build_is_replaced_by_the_next_good_push(
    plane: ControlPlane, make_archive: MakeArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    import swell.control._lifecycle as plane_module
    from swell.modelserver import RequirementsInstallError

    def broken(*_args: Any, **_kwargs: Any) -> Path:
        raise RequirementsInstallError(["nosuchpackage==0"], "ERROR: No matching distribution found for nosuchpackage==0")

    monkeypatch.setattr(plane_module, "ensure_environment", broken)
    with pytest.raises(ApiError) as info:
        await plane.push(make_archive({"model_name": "m", "requirements": ["nosuchpackage==0"]}), model_name=None, publish=False, promote=False)
    assert info.value.status == 422 and "nosuchpackage" in info.value.payload["reason"]
    failed = info.value.payload["deployment_id"]
    assert plane.registry.deployments[failed].build.value == "failed"
    good = await plane.push(make_archive(), model_name="m", publish=False, promote=False)
    model = plane.registry.model("m")
    assert model.development == good.deployment_id and failed not in plane.registry.deployments
    assert model.deployments == [good.deployment_id]
