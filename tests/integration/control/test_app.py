"""The front door through ASGI (no sockets): health, keys, predict errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from swell.control import ControlPlane, SwellApp

MakeArchive = Callable[..., Path]
KEY = {"Authorization": "Api-Key k1"}


async def test_health_needs_no_key(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/model/m/environments/production/predict"),
        ("POST", "/model/m/development/predict"),
        ("GET", "/v1/models"),
        ("GET", "/metrics"),
        ("PATCH", "/v1/models/m/deployments/d/autoscaling_settings"),
    ],
)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Api-Key wrong"}, {"Authorization": "k1"}])
async def test_every_route_but_health_needs_a_key(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> None:
    response = await client.request(method, path, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


async def test_predict_errors_are_json(client: httpx.AsyncClient, make_archive: MakeArchive) -> None:
    missing = await client.post("/model/nope/environments/production/predict", headers=KEY, content=b"{}")
    assert missing.status_code == 404 and "nope" in missing.json()["reason"]
    bad_route = await client.post("/model/nope/whatever/predict", headers=KEY)
    assert bad_route.status_code == 404
    await client.post("/v1/models/push", params={"publish": "true"}, content=make_archive().read_bytes(), headers=KEY)
    bad_timeout = await client.post(
        "/model/m/environments/production/predict", headers={**KEY, "X-Swell-Timeout": "soon"}, content=b"{}"
    )
    assert bad_timeout.status_code == 400 and bad_timeout.json()["error"] == "invalid timeout"
    wrong_method = await client.get("/model/m/environments/production/predict", headers=KEY)
    assert wrong_method.status_code == 405




async def test_async_predict_is_served_by_the_model_dispatcher_alone(
    plane: ControlPlane, make_archive: MakeArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One parse of the path, one look-up of the deployment: async_predict is not handed on to the
    management app (which would parse the path and look the deployment up again)."""
    app = SwellApp(plane)
    await plane.push(make_archive(), model_name="m", publish=True, promote=True)
    lookups: list[tuple[str, str, str | None]] = []
    find = plane.router

    def counted(model_ref: str, kind: str, ref: str | None, *rest: object) -> object:
        lookups.append((model_ref, kind, ref))
        return find(model_ref, kind, ref, *rest)  # type: ignore[arg-type]

    async def management(*_args: object) -> None:
        raise AssertionError("async_predict reached the management app")

    monkeypatch.setattr(plane, "router", counted)
    monkeypatch.setattr(app, "management", management)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://swell") as client:
        accepted = await client.post(
            "/model/m/environments/production/async_predict", json={"model_input": {"x": 1}}, headers=KEY
        )
        refused = await client.post("/model/m/environments/production/async_predict", json={"priority": 1}, headers=KEY)
    assert accepted.status_code == 201 and accepted.json()["request_id"], accepted.text
    assert refused.status_code == 422 and refused.json()["detail"][0]["field"] == "body.model_input"
    assert lookups == [("m", "environments", "production")]  # the refused body was never looked up
