"""Rolling promotion in the control plane: warm, split, step, roll back, store; a fake backend and a
virtual clock (the live test in tests/integration/live/test_rolling_live.py runs real replicas)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from plane_support import eventually, published_and_ready, ready_all  # type: ignore[import-not-found]

from swell.autoscaling import VirtualClock
from swell.config import ServerSettings
from swell.control import ApiError, ControlPlane
from swell.serving._testing import FakeBackend

MakeArchive = Callable[..., Path]
FAST = {"steps": [10, 50, 100], "step_seconds": 60, "max_error_rate": 0.05, "min_requests": 10}


def shares(plane: ControlPlane, n: int = 100) -> dict[str, int]:
    """Where ``n`` requests to production go (the front door's lookup, as a predict makes it)."""
    counts: dict[str, int] = {}
    for _ in range(n):
        target = plane.router("m", "environments", "production").deployment_id
        counts[target] = counts.get(target, 0) + 1
    return counts


def answer(plane: ControlPlane, deployment_id: str, status: int, n: int) -> None:
    """Count ``n`` answers of ``status`` on the deployment's router, as served requests would."""
    responses = plane.controller.get(deployment_id).router.responses  # type: ignore[union-attr]
    responses[status] = responses.get(status, 0) + n


async def rolling_setup(plane: ControlPlane, backend: FakeBackend, make_archive: MakeArchive) -> tuple[str, str]:
    old = await published_and_ready(plane, backend, make_archive, min_replica=1)
    new = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    return old.deployment_id, new.deployment_id


async def test_rolling_promotion_warms_then_steps_then_points_at_the_new_deployment(
    plane: ControlPlane, backend: FakeBackend, make_archive: MakeArchive, client: httpx.AsyncClient
) -> None:
    clock: VirtualClock = plane.clock  # type: ignore[assignment]
    old, new = await rolling_setup(plane, backend, make_archive)
    model = plane.registry.model("m")
    assert not model.splits and shares(plane) == {old: 100}
    response = await client.post(
        f"/v1/models/{model.id}/deployments/{new}/promote",
        json={"rolling": True, **FAST}, headers={"Authorization": "Api-Key k1"},
    )
    assert response.status_code == 202, response.text
    view = response.json()
    assert view["phase"] == "warming" and view["percent"] == 0 and view["plan"]["steps"] == [10, 50, 100]
    await eventually(lambda: len(backend.alive(new)) == 1)  # warming: a replica starts, no traffic moves yet
    assert shares(plane) == {old: 100}
    ready_all(backend)
    await eventually(lambda: model.promotions["production"]["percent"] == 10)
    assert shares(plane) == {old: 90, new: 10}  # exactly the share, request by request

    env = (await client.get(f"/v1/models/{model.id}/environments/production", headers={"Authorization": "Api-Key k1"})).json()
    assert env["deployment_id"] == old and env["traffic"] == [
        {"deployment_id": old, "percent": 90}, {"deployment_id": new, "percent": 10},
    ]
    assert env["promotion"]["phase"] == "shifting" and env["promotion"]["step"] == 0
    assert plane.views.deployment_summary(plane.registry.deployments[new])["traffic"] == {"production": 10}
    assert plane.views.deployment_summary(plane.registry.deployments[old])["traffic"] == {"production": 90}

    answer(plane, new, 200, 50)
    clock.advance(60)
    await eventually(lambda: model.promotions["production"]["percent"] == 50)
    assert shares(plane) == {old: 50, new: 50}
    with pytest.raises(ApiError) as info:  # one promotion of an environment at a time
        await plane.promotion.promote("m", old, "production")
    assert info.value.status == 409 and "under way" in info.value.payload["error"]

    clock.advance(60)
    await eventually(lambda: model.promotions["production"]["phase"] == "done")
    assert model.environments["production"] == new and not model.splits
    assert shares(plane) == {new: 100}
    kinds = [e["kind"] for e in await plane.events.history(new)]
    assert kinds.count("promotion_step") == 2 and "promotion_started" in kinds and kinds[-1] == "promoted"
    assert "promotion_step" in [e["kind"] for e in await plane.events.history(old)]  # `swell events` from either side


async def test_rolls_back_when_the_error_rate_passes_the_threshold(
    plane: ControlPlane, backend: FakeBackend, make_archive: MakeArchive
) -> None:
    old, new = await rolling_setup(plane, backend, make_archive)
    model = plane.registry.model("m")
    answer(plane, new, 500, 1000)  # errors before the promotion are not its window's
    await plane.promotion.promote("m", new, rolling=FAST)
    await eventually(lambda: len(backend.alive(new)) == 1)
    ready_all(backend)
    await eventually(lambda: model.promotions["production"]["percent"] == 10)
    answer(plane, new, 200, 8)
    answer(plane, new, 500, 2)  # 2 of 10 = 20% > 5%
    await eventually(lambda: model.promotions["production"]["phase"] == "rolled_back")
    promotion = model.promotions["production"]
    assert promotion["percent"] == 0 and "2/10" in promotion["reason"] and "max_error_rate" in promotion["reason"]
    assert model.environments["production"] == old and not model.splits and shares(plane) == {old: 100}
    events = await plane.events.history(new)
    assert events[-1]["kind"] == "promotion_rolled_back" and "2/10" in events[-1]["message"]
    assert plane.controller.get(new).floor_until == 0.0  # type: ignore[union-attr]  # the new one may scale down
    # a new attempt may start once the last one is over
    await plane.promotion.promote("m", new, rolling=FAST)
    assert model.promotions["production"]["phase"] == "warming"


async def test_a_new_deployment_that_cannot_load_fails_the_promotion_and_moves_no_traffic(
    plane: ControlPlane, backend: FakeBackend, make_archive: MakeArchive
) -> None:
    old, new = await rolling_setup(plane, backend, make_archive)
    model = plane.registry.model("m")
    await plane.promotion.promote("m", new, rolling={})
    await eventually(lambda: len(backend.alive(new)) == 1)
    broken = backend.alive(new)[0]
    backend.set_state(broken.id, broken.state.__class__("failed"), error="ImportError: no module named torch")
    await eventually(lambda: model.promotions["production"]["phase"] == "failed")
    assert "torch" in model.promotions["production"]["reason"] and model.environments["production"] == old


async def test_deactivating_the_new_deployment_rolls_back(
    plane: ControlPlane, backend: FakeBackend, make_archive: MakeArchive
) -> None:
    old, new = await rolling_setup(plane, backend, make_archive)
    model = plane.registry.model("m")
    await plane.promotion.promote("m", new, rolling=FAST)
    await eventually(lambda: len(backend.alive(new)) == 1)
    ready_all(backend)
    await eventually(lambda: bool(model.splits))
    await plane.lifecycle.deactivate("m", new)
    assert shares(plane) == {old: 100}  # at once: the split never picks a deactivated deployment
    await eventually(lambda: model.promotions["production"]["phase"] == "rolled_back")
    assert "deactivated" in model.promotions["production"]["reason"] and not model.splits


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"steps": [50, 10]}, "steps"),
        ({"step_seconds": 0}, "step_seconds"),
        ({"max_error_rate": 1.5}, "max_error_rate"),
        ({"min_requests": "many"}, "min_requests"),
    ],
)
async def test_bad_plans_are_refused_naming_field_value_and_what_is_allowed(
    plane: ControlPlane, backend: FakeBackend, make_archive: MakeArchive, client: httpx.AsyncClient,
    body: dict[str, Any], field: str,
) -> None:
    old, new = await rolling_setup(plane, backend, make_archive)
    response = await client.post(
        f"/v1/models/{plane.registry.model('m').id}/environments/production/promote",
        json={"deployment_id": new, "rolling": True, **body}, headers={"Authorization": "Api-Key k1"},
    )
    assert response.status_code == 422, response.text
    (detail,) = response.json()["detail"]
    assert detail["field"] == field and detail["value"] == body[field] and detail["allowed"]
    assert plane.registry.model("m").environments["production"] == old and not plane.registry.model("m").promotions


async def test_rolling_needs_a_deployment_to_roll_from(plane: ControlPlane, make_archive: MakeArchive) -> None:
    pushed = await plane.push(make_archive(), model_name="m", publish=True, promote=False)  # production: this one
    with pytest.raises(ApiError) as info:
        await plane.promotion.promote("m", pushed.deployment_id, rolling={})
    assert info.value.status == 409 and "without rolling" in info.value.payload["reason"]
    with pytest.raises(ApiError) as info:
        await plane.promotion.promote("m", pushed.deployment_id, "staging", rolling={})
    assert info.value.status == 409 and "no deployment" in info.value.payload["reason"]


async def test_a_restart_during_the_promotion_settles_it_as_rolled_back(
    tmp_path: Path, make_archive: MakeArchive, wall: Any, database_url: str
) -> None:
    settings = ServerSettings(data_dir=tmp_path / "data", max_replica_cap=5, database_url=database_url)
    backend = FakeBackend()
    plane = ControlPlane(settings, backend, clock=VirtualClock(), wall_clock=wall, api_key="k1")
    await plane.start(background=False)
    try:
        old, new = await rolling_setup(plane, backend, make_archive)
        await plane.promotion.promote("m", new, rolling=FAST)
        await eventually(lambda: len(backend.alive(new)) == 1)
        ready_all(backend)
        model = plane.registry.model("m")
        await eventually(lambda: model.promotions["production"]["percent"] == 10)
    finally:
        await plane.close()  # the store still says "shifting", as a crash would leave it

    again = ControlPlane(settings, FakeBackend(), clock=VirtualClock(), wall_clock=wall, api_key="k1")
    await again.start(background=False)
    try:
        model = again.registry.model("m")
        promotion = model.promotions["production"]
        assert promotion["phase"] == "rolled_back" and "server stopped" in promotion["reason"]
        assert promotion["deployment_id"] == new and promotion["plan"]["steps"] == [10, 50, 100]
        assert model.environments["production"] == old and not model.splits
        events = await again.events.history(new)
        assert events[-1]["kind"] == "promotion_rolled_back"
    finally:
        await again.close()


async def test_deleting_the_model_mid_way_ends_the_promotion_quietly(
    plane: ControlPlane, backend: FakeBackend, make_archive: MakeArchive
) -> None:
    old, new = await rolling_setup(plane, backend, make_archive)
    model = plane.registry.model("m")
    await plane.promotion.promote("m", new, rolling=FAST)
    await eventually(lambda: len(backend.alive(new)) == 1)
    ready_all(backend)
    await eventually(lambda: bool(model.splits))
    await plane.lifecycle.delete_model("m")
    await eventually(lambda: not plane.promotion._rolling)
    assert model.promotions["production"]["phase"] == "rolled_back" and "deleted" in model.promotions["production"]["reason"]


async def test_a_plain_promotion_that_warmed_while_a_rolling_one_began_is_refused(
    plane: ControlPlane, backend: FakeBackend, make_archive: MakeArchive
) -> None:
    old, new = await rolling_setup(plane, backend, make_archive)
    other = (await plane.push(make_archive(), model_name="m", publish=True, promote=False)).deployment_id
    model = plane.registry.model("m")
    plain = asyncio.create_task(plane.promotion.promote("m", other, "production"))  # warms `other` first
    await eventually(lambda: len(backend.alive(other)) == 1)
    await plane.promotion.promote("m", new, "production", rolling=FAST)  # begins while `other` warms
    ready_all(backend)
    with pytest.raises(ApiError) as info:
        await plain
    assert info.value.status == 409 and "under way" in info.value.payload["error"]
    assert model.environments["production"] == old  # the rolling promotion still moves from old
    assert set(shares(plane)) <= {old, new}


async def test_two_rolling_promotions_begun_at_once_run_one_at_a_time(
    plane: ControlPlane, backend: FakeBackend, make_archive: MakeArchive
) -> None:
    old, new = await rolling_setup(plane, backend, make_archive)
    other = (await plane.push(make_archive(), model_name="m", publish=True, promote=False)).deployment_id
    results = await asyncio.gather(
        plane.promotion.promote("m", new, "production", rolling=FAST, settings={"max_replica": 2}),
        plane.promotion.promote("m", other, "production", rolling=FAST, settings={"max_replica": 2}),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, ApiError)]
    assert len(refused) == 1 and refused[0].status == 409, results
    assert plane.registry.model("m").environments["production"] == old
