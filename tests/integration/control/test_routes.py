"""The management routes through ASGI (no sockets): documented, answering, and their error bodies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

MakeArchive = Callable[..., Path]
KEY = {"Authorization": "Api-Key k1"}


async def test_push_patch_and_read_back(client: httpx.AsyncClient, make_archive: MakeArchive) -> None:
    archive = make_archive({"model_name": "iris"})
    response = await client.post(
        "/v1/models/push", params={"publish": "true"}, content=archive.read_bytes(), headers=KEY
    )
    assert response.status_code == 201, response.text
    pushed = response.json()
    assert {"model_id", "deployment_id", "model_name"} <= pushed.keys()
    url = f"/v1/models/iris/deployments/{pushed['deployment_id']}/autoscaling_settings"
    bad = await client.patch(url, json={"min_replica": 3, "max_replica": 2}, headers=KEY)
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["field"] == "min_replica"
    assert (await client.get(url, headers=KEY)).json()["max_replica"] == 1
    not_json = await client.patch(url, content=b"{", headers=KEY)
    assert not_json.status_code == 422
    good = await client.patch(url, json={"max_replica": 2}, headers=KEY)
    assert good.json()["status"] == "ACCEPTED"
    view = (await client.get(f"/v1/models/{pushed['model_id']}/deployments/{pushed['deployment_id']}", headers=KEY)).json()
    assert view["status"] == "Scaled to zero" and view["autoscaling_settings"]["max_replica"] == 2
    listing = (await client.get("/v1/models", headers=KEY)).json()
    assert listing["models"][0]["name"] == "iris"
    metrics = await client.get("/metrics", headers=KEY)
    assert "swell_queue_length" in metrics.text


ROUTES = {
    ("GET", "/v1/models"), ("POST", "/v1/models"), ("POST", "/v1/models/push"),
    ("GET", "/v1/models/{model_id}"), ("DELETE", "/v1/models/{model_id}"),
    ("GET", "/v1/models/{model_id}/deployments"),
    ("GET", "/v1/models/{model_id}/deployments/{deployment_id}"),
    ("DELETE", "/v1/models/{model_id}/deployments/{deployment_id}"),
    ("POST", "/v1/models/{model_id}/deployments/{deployment_id}/activate"),
    ("POST", "/v1/models/{model_id}/deployments/{deployment_id}/deactivate"),
    ("POST", "/v1/models/{model_id}/deployments/{deployment_id}/promote"),
    ("GET", "/v1/models/{model_id}/deployments/{deployment_id}/autoscaling_settings"),
    ("PATCH", "/v1/models/{model_id}/deployments/{deployment_id}/autoscaling_settings"),
    ("GET", "/v1/models/{model_id}/deployments/{deployment_id}/traffic"),
    ("GET", "/v1/models/{model_id}/deployments/{deployment_id}/logs"),
    ("GET", "/v1/models/{model_id}/deployments/{deployment_id}/events"),
    ("GET", "/v1/models/{model_id}/environments"), ("POST", "/v1/models/{model_id}/environments"),
    ("GET", "/v1/models/{model_id}/environments/{environment}"),
    ("POST", "/v1/models/{model_id}/environments/{environment}/promote"),
    ("GET", "/v1/api_keys"), ("POST", "/v1/api_keys"), ("DELETE", "/v1/api_keys/{key_id}"),
    ("GET", "/v1/secrets"), ("POST", "/v1/secrets"), ("DELETE", "/v1/secrets/{name}"),
    ("POST", "/model/{model_id}/environments/{environment}/async_predict"),
    ("POST", "/model/{model_id}/deployment/{deployment_id}/async_predict"),
    ("POST", "/model/{model_id}/development/async_predict"),
    ("GET", "/async_request/{request_id}"), ("DELETE", "/async_request/{request_id}"),
    ("GET", "/v1/webhook_secret"),
}


async def test_openapi_documents_exactly_the_management_routes(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json", headers=KEY)).json()
    documented = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    assert documented == ROUTES
    for method, path in ROUTES:  # and each one answers (with a key) rather than 404 for the route itself
        filled = path.format(model_id="nope", deployment_id="d", environment="e", key_id="k", name="n", request_id="r")
        response = await client.request(method, filled, headers=KEY)
        assert response.status_code != 405, (method, path)
        if response.status_code == 404:
            assert "no route" not in response.json().get("reason", ""), (method, path)


async def test_unknown_routes_and_methods_say_what_was_wrong(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/nothing-here", headers=KEY)
    assert missing.status_code == 404 and "/v1/nothing-here" in missing.json()["reason"]
    wrong = await client.delete("/v1/models", headers=KEY)
    assert wrong.status_code == 405
    assert "DELETE" in wrong.json()["reason"] and "GET" in wrong.json()["reason"]


async def test_a_body_json_reads_as_utf16_with_a_lone_surrogate_is_422_not_500(client: httpx.AsyncClient) -> None:
    # Found by the API fuzz in CI: the JSON parser guesses UTF-16 from the leading
    # NUL, decodes a lone surrogate, and the error body echoing it could not be encoded.
    response = await client.post(
        "/v1/models/m/deployments/d/promote",
        content=b"\x00g\xda\xf8\x00u\x00w",
        headers={**KEY, "content-type": "application/json"},
    )
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["field"] == "body" and "JSON" in detail["allowed"]


async def test_openapi_declares_the_key_schemes_so_swagger_can_try_it_out(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json", headers=KEY)).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {**schemes["ApiKey"], "type": "apiKey", "in": "header", "name": "Authorization"}
    assert schemes["Bearer"] == {**schemes["Bearer"], "type": "http", "scheme": "bearer"}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert operation["security"] == [{"ApiKey": []}, {"Bearer": []}], (method, path)
    # What Swagger sends after Authorize, in either form, is what the server accepts.
    for value in ("Api-Key k1", "Bearer k1"):
        assert (await client.get("/v1/models", headers={"Authorization": value})).status_code == 200


async def test_the_extras_are_settings_off_by_default_patchable_and_validated(
    client: httpx.AsyncClient, make_archive: MakeArchive
) -> None:
    archive = make_archive({"model_name": "extras"})
    pushed = (await client.post(
        "/v1/models/push", params={"publish": "true"}, content=archive.read_bytes(), headers=KEY
    )).json()
    url = f"/v1/models/extras/deployments/{pushed['deployment_id']}/autoscaling_settings"
    view_url = f"/v1/models/{pushed['model_id']}/deployments/{pushed['deployment_id']}"
    assert "burst" not in (await client.get(url, headers=KEY)).json()  # off: Baseten's body, unchanged
    bad = await client.patch(url, json={"burst": "yes", "max_replica": 3}, headers=KEY)
    assert bad.status_code == 422
    [error] = bad.json()["detail"]
    assert error["field"] == "burst" and error["value"] == "yes" and "true or false" in error["allowed"]
    good = await client.patch(url, json={"burst": True, "scale_down_delay": 600}, headers=KEY)
    assert good.json()["status"] == "ACCEPTED" and good.json()["settings"]["burst"] is True
    view = (await client.get(view_url, headers=KEY)).json()
    assert view["autoscaling_settings"]["burst"] is True and view["autoscaling_settings"]["max_replica"] == 1
    assert "trend" not in view["autoscaling_settings"]
    off = await client.patch(url, json={"burst": False}, headers=KEY)
    assert "burst" not in off.json()["settings"]
