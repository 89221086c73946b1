"""Every timestamp the API shows has one format: ISO 8601 UTC with milliseconds.

The walk reads every GET route of the OpenAPI document (path parameters filled
from one model, deployment, environment, key, secret and async request) plus the
routes that create something, so a new route that shows a time is checked too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

MakeArchive = Callable[..., Path]
KEY = {"Authorization": "Api-Key k1"}
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
DATE_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def timestamps(value: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of every field that is, or looks like, a timestamp."""
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}"
            if key.endswith("_at") or key == "time":
                yield path, item
            else:
                yield from timestamps(item, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from timestamps(item, f"{where}[{i}]")
    elif isinstance(value, str) and DATE_LIKE.match(value):
        yield where, value


async def test_every_route_shows_times_as_iso_utc_with_milliseconds(
    client: httpx.AsyncClient, make_archive: MakeArchive, wall: Any
) -> None:
    wall.advance(0.25)  # a time with a fraction: whole seconds would hide a second format
    answers: dict[str, Any] = {}

    async def call(method: str, path: str, **kwargs: Any) -> Any:
        response = await client.request(method, path, headers=KEY, **kwargs)
        assert response.status_code < 300, (method, path, response.text)
        answers[f"{method} {path}"] = body = response.json()
        return body

    pushed = await call("POST", "/v1/models/push", params={"publish": "true", "model_name": "m"}, content=make_archive().read_bytes())
    model_id, deployment_id = pushed["model_id"], pushed["deployment_id"]
    await call("POST", "/v1/models", json={"name": "other"})
    await call("POST", f"/v1/models/{model_id}/environments", json={"name": "canary"})
    await call("POST", f"/v1/models/{model_id}/environments/canary/promote", json={"deployment_id": deployment_id})
    await call("POST", f"/v1/models/{model_id}/deployments/{deployment_id}/deactivate")
    await call("POST", f"/v1/models/{model_id}/deployments/{deployment_id}/activate")
    key = await call("POST", "/v1/api_keys", json={"type": "invoke", "name": "ci"})
    await call("POST", "/v1/secrets", json={"name": "token", "value": "s3cret"})
    queued = await call("POST", f"/model/{model_id}/deployment/{deployment_id}/async_predict", json={"model_input": {}})

    filled = {
        "model_id": model_id,
        "deployment_id": deployment_id,
        "environment": "canary",
        "key_id": key["id"],
        "name": "token",
        "request_id": queued["request_id"],
    }
    schema = (await client.get("/openapi.json", headers=KEY)).json()
    for template, operations in schema["paths"].items():
        if "get" in operations:
            await call("GET", template.format(**filled))
    assert f"GET /async_request/{queued['request_id']}" in answers

    seen = [(route, path, value) for route, body in answers.items() for path, value in timestamps(body)]
    wrong = [(route, path, value) for route, path, value in seen if value is not None and not ISO_MS.match(str(value))]
    assert not wrong, wrong
    shown = {path.rsplit(".", 1)[-1] for _, path, value in seen if value is not None}
    # The walk reached the times of models, deployments, keys, secrets and async requests.
    assert {"created_at", "updated_at", "expires_at"} <= shown, shown
