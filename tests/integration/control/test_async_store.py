"""Async requests in the store (SQLite, then PostgreSQL): kept before they are accepted, found
again by a new server, cancelled, expired, failed when their deployment is gone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from swell.autoscaling import VirtualClock
from swell.config import ServerSettings
from swell.control import ControlPlane
from swell.control._async import AsyncPredictRequest
from swell.control._registry import NotFound
from swell.control import ApiError
from swell.serving._testing import FakeBackend


MakeArchive = Callable[..., Path]


def request(**fields: Any) -> AsyncPredictRequest:
    return AsyncPredictRequest.model_validate({"model_input": {"x": 1}, **fields})


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def status_becomes(plane: ControlPlane, key: Any, request_id: str, want: str) -> dict[str, Any]:
    """The request's view once its status is ``want`` (the writes are the database's pace)."""
    for _ in range(500):
        view = await plane.async_request(key, request_id)
        if view["status"] == want:
            return view
        await asyncio.sleep(0.01)
    raise AssertionError(f"request {request_id} stayed {view['status']}, not {want}")


async def new_plane(settings: ServerSettings, wall: Any) -> ControlPlane:
    plane = ControlPlane(settings, FakeBackend(), clock=VirtualClock(), wall_clock=wall, api_key="k1")
    await plane.start(background=False)
    return plane


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> ServerSettings:
    return ServerSettings(data_dir=tmp_path / "data", max_replica_cap=5, database_url=database_url)


def workspace_key(plane: ControlPlane) -> Any:
    key = plane.keys.authenticate(b"Api-Key k1")
    assert key is not None
    return key


async def submitted(
    settings: ServerSettings, wall: Any, make_archive: MakeArchive, **fields: Any
) -> tuple[ControlPlane, str, Any, str]:
    """A started plane with model ``m`` published and one async request for it:
    (plane, deployment id, workspace key, request id)."""
    plane = await new_plane(settings, wall)
    pushed = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    key = workspace_key(plane)
    accepted = await plane.async_predict(key, "m", "deployment", pushed.deployment_id, request(**fields))
    return plane, pushed.deployment_id, key, accepted["request_id"]


async def test_accepted_request_is_kept_and_resumed_by_the_next_server(
    settings: ServerSettings, make_archive: MakeArchive, wall: Any
) -> None:
    first, deployment_id, key, request_id = await submitted(settings, wall, make_archive, priority=0)
    await settle()
    view = await first.async_request(key, request_id)
    assert view["status"] == "QUEUED" and view["priority"] == 0 and view["webhook_status"] == "NO_WEBHOOK_PROVIDED"
    # It waits in the deployment's lane, where it counts as demand: a replica is starting.
    assert first.controller.get(deployment_id).router.queued == 1  # type: ignore[union-attr]
    await first.close()

    second = await new_plane(settings, wall)
    try:
        assert second.async_queue.unfinished == 1
        router = second.controller.get(deployment_id).router  # type: ignore[union-attr]
        await settle()
        assert router.queued == 1
        assert (await second.async_request(key, request_id))["status"] == "QUEUED"
    finally:
        await second.close()


async def test_queued_request_cancels_and_a_second_cancel_is_409(
    settings: ServerSettings, make_archive: MakeArchive, wall: Any
) -> None:
    plane, deployment_id, key, request_id = await submitted(settings, wall, make_archive)
    try:
        await settle()
        answer = await plane.cancel_async_request(key, request_id)
        assert answer == {"request_id": request_id, "canceled": True, "status": "CANCELED"}
        assert plane.controller.get(deployment_id).router.queued == 0  # type: ignore[union-attr]
        with pytest.raises(ApiError) as again:
            await plane.cancel_async_request(key, request_id)
        assert again.value.status == 409 and again.value.payload["status"] == "CANCELED"
        view = await plane.async_request(key, request_id)
        assert view["status"] == "CANCELED" and view["errors"][0]["code"] == "CANCELED"
    finally:
        await plane.close()


async def test_request_whose_queue_time_passed_while_the_server_was_down_expires(
    settings: ServerSettings, make_archive: MakeArchive, wall: Any
) -> None:
    first, _, key, request_id = await submitted(settings, wall, make_archive, max_time_in_queue_seconds=60)
    await first.close()
    wall.advance(61)
    second = await new_plane(settings, wall)
    try:
        view = await status_becomes(second, key, request_id, "EXPIRED")
        assert view["errors"][0]["code"] == "TIMEOUT_IN_QUEUE"
        assert second.async_queue.unfinished == 0
    finally:
        await second.close()


async def test_request_for_a_deactivated_deployment_fails_clearly_after_a_restart(
    settings: ServerSettings, make_archive: MakeArchive, wall: Any
) -> None:
    first, deployment_id, key, request_id = await submitted(settings, wall, make_archive)
    await first.async_queue.close()  # the server dies with the request queued ...
    await first.lifecycle.deactivate("m", deployment_id)  # ... in a state where it was deactivated
    await first.close()
    second = await new_plane(settings, wall)
    try:
        view = await status_becomes(second, key, request_id, "FAILED")
        assert "deactivated" in view["errors"][0]["message"]
    finally:
        await second.close()


async def test_unknown_or_foreign_requests_are_not_found(
    settings: ServerSettings, make_archive: MakeArchive, wall: Any
) -> None:
    plane, deployment_id, key, request_id = await submitted(settings, wall, make_archive)
    try:
        await plane.lifecycle.create_model("other")
        created = await plane.access.create_key({"type": "invoke", "model_ids": ["other"]})
        foreign = plane.keys.authenticate(f"Api-Key {created['key']}".encode())
        assert foreign is not None
        with pytest.raises(NotFound):
            await plane.async_request(foreign, request_id)
        with pytest.raises(NotFound):
            await plane.async_request(key, "nope")
        with pytest.raises(ApiError) as forbidden:
            await plane.async_predict(foreign, "m", "deployment", deployment_id, request())
        assert forbidden.value.status == 403
    finally:
        await plane.close()


async def test_a_store_that_fails_the_write_accepts_nothing_and_says_503(
    plane: ControlPlane, make_archive: MakeArchive
) -> None:
    import httpx
    from sqlalchemy import text

    from swell.control import SwellApp

    pushed = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    async with plane.store.engine.begin() as conn:  # a real database error on the next insert
        await conn.execute(text("DROP TABLE async_requests"))
    transport = httpx.ASGITransport(app=SwellApp(plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://swell") as client:
        answer = await client.post(
            f"/model/m/deployment/{pushed.deployment_id}/async_predict",
            json={"model_input": {}},
            headers={"Authorization": "Api-Key k1"},
        )
    assert answer.status_code == 503 and answer.json()["error"] == "store unavailable"
    assert "nothing was changed" in answer.json()["reason"]
    assert plane.async_queue.unfinished == 0
