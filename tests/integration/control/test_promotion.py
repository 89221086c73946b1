"""Autoscaling settings and promotion, with a fake backend and injected clocks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from plane_support import eventually, published_and_ready, ready_all  # type: ignore[import-not-found]

from swell.config import AutoscalingSettings
from swell.control import ApiError, ControlPlane
from swell.serving._testing import FakeBackend

MakeArchive = Callable[..., Path]


async def test_promoted_deployment_inherits_settings(plane: ControlPlane, make_archive: MakeArchive) -> None:
    first = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    await plane.promotion.patch_settings("m", first.deployment_id, {"max_replica": 4})
    second = await plane.push(make_archive(), model_name="m", publish=True, promote=True)
    assert plane.registry.deployments[second.deployment_id].settings.max_replica == 4


async def test_patch_validates_everything_and_changes_nothing_on_error(plane: ControlPlane, make_archive: MakeArchive) -> None:
    result = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    before = plane.registry.deployments[result.deployment_id].settings
    with pytest.raises(ApiError) as info:
        await plane.promotion.patch_settings("m", result.deployment_id, {"max_replica": 2, "autoscaling_window": 5})
    assert info.value.status == 422
    detail = info.value.payload["detail"]
    assert detail == [{"field": "autoscaling_window", "value": 5, "allowed": "must be between 10 and 3600 seconds"}]
    assert plane.registry.deployments[result.deployment_id].settings == before
    with pytest.raises(ApiError) as info:
        await plane.promotion.patch_settings("m", result.deployment_id, {"max_replica": 6})
    assert info.value.payload["detail"][0]["allowed"] == "must be between 1 and 5"


@pytest.mark.parametrize(
    ("body", "status"),
    [({"max_replica": 2}, "ACCEPTED"), ({}, "UNCHANGED"), ({"max_replica": 1}, "UNCHANGED")],
)
async def test_patch_answers_accepted_or_unchanged(plane: ControlPlane, make_archive: MakeArchive, body: dict, status: str) -> None:
    result = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    answer = await plane.promotion.patch_settings("m", result.deployment_id, body)
    assert answer["status"] == status
    router = plane.controller.get(result.deployment_id).router  # type: ignore[union-attr]
    assert router.settings == AutoscalingSettings.model_validate(answer["settings"])


async def test_patch_of_a_development_deployment_is_refused(plane: ControlPlane, make_archive: MakeArchive) -> None:
    result = await plane.push(make_archive(), model_name="m", publish=False, promote=False)
    with pytest.raises(ApiError) as info:
        await plane.promotion.patch_settings("m", result.deployment_id, {"max_replica": 2})
    assert info.value.status == 422 and "publish" in info.value.payload["reason"]


async def test_promotion_warms_the_new_deployment_before_switching(
    plane: ControlPlane, backend: FakeBackend, make_archive: MakeArchive
) -> None:
    old = await published_and_ready(plane, backend, make_archive, min_replica=2, max_replica=4, scale_down_delay=120)
    assert plane.controller.ready_count(old.deployment_id) == 2
    new = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    promotion = asyncio.create_task(plane.promotion.promote("m", new.deployment_id, "production"))
    await eventually(lambda: len(backend.alive(new.deployment_id)) == 2)
    model = plane.registry.model("m")
    assert not promotion.done() and model.environments["production"] == old.deployment_id  # not yet: warming
    ready_all(backend)
    view = await asyncio.wait_for(promotion, 5)
    assert model.environments["production"] == new.deployment_id
    assert view["autoscaling_settings"]["min_replica"] == 2 and view["autoscaling_settings"]["scale_down_delay"] == 120
    assert plane.router("m", "environments", "production").deployment_id == new.deployment_id


async def test_promotion_that_cannot_warm_leaves_the_environment_alone(
    plane: ControlPlane, backend: FakeBackend, make_archive: MakeArchive
) -> None:
    old = await published_and_ready(plane, backend, make_archive, min_replica=1)
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


async def test_concurrent_patches_apply_whole_one_after_the_other(plane: ControlPlane, make_archive: MakeArchive) -> None:
    pushed = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    bodies = [{"max_replica": n, "concurrency_target": n} for n in range(1, 6)]
    await asyncio.gather(*(plane.promotion.patch_settings("m", pushed.deployment_id, b) for b in bodies))
    settings = plane.registry.deployments[pushed.deployment_id].settings
    assert settings.max_replica == settings.concurrency_target  # never torn between two patches
