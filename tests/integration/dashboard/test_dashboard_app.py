"""The dashboard in front of the real app and plane (fake replicas): sign-in, the same-site
checks on edits, the API's own answers through it, and /docs served offline."""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from swell.autoscaling import VirtualClock
from swell.config import ServerSettings
from swell.control import ControlPlane, SwellApp
from swell.dashboard import Dashboard
from swell.serving._testing import FakeBackend

KEY = "dash-key"
URL = "http://testserver"


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    settings = ServerSettings(data_dir=tmp_path / "data", max_replica_cap=5)
    p = ControlPlane(settings, FakeBackend(), clock=VirtualClock(), api_key=KEY)
    await p.start(background=False)
    yield p
    await p.close()


@pytest.fixture
async def client(plane: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=Dashboard(SwellApp(plane)))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url=URL) as c:
        yield c


async def sign_in(client: httpx.AsyncClient, key: str = KEY) -> str:
    """Signs in; the session's CSRF token (from the page)."""
    response = await client.post("/ui/signin", data={"key": key}, headers={"origin": URL})
    assert response.status_code == 303, response.text
    page = (await client.get("/")).text
    match = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert match is not None, page
    return match[1]


async def test_sign_in_sets_a_strict_httponly_cookie_without_the_key(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert 'id="signin"' in page.text
    response = await client.post("/ui/signin", data={"key": KEY}, headers={"origin": URL})
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and KEY not in cookie
    assert "Secure" not in cookie  # plain http here; https sets it
    assert "<h1>Models</h1>" in (await client.get("/")).text


async def test_an_invoke_key_or_a_wrong_key_gets_a_sentence(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/api_keys", json={"type": "invoke"}, headers={"authorization": f"Api-Key {KEY}"})
    invoke = created.json()["key"]
    response = await client.post("/ui/signin", data={"key": invoke})
    assert response.status_code == 403 and "invoke key" in response.text and "set-cookie" not in response.headers
    response = await client.post("/ui/signin", data={"key": "nope"})
    assert response.status_code == 401 and "not a live API key" in response.text


async def test_sign_in_from_another_site_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/ui/signin", data={"key": KEY}, headers={"origin": "https://evil.example"})
    assert response.status_code == 403 and "set-cookie" not in response.headers


async def test_edits_need_the_csrf_token_and_this_origin(client: httpx.AsyncClient) -> None:
    csrf = await sign_in(client)
    body = {"name": "from-dashboard"}
    assert (await client.post("/ui/api/v1/models", json=body)).status_code == 403  # no token
    response = await client.post(
        "/ui/api/v1/models", json=body, headers={"x-csrf-token": csrf, "origin": "https://evil.example"}
    )
    assert response.status_code == 403
    response = await client.post("/ui/api/v1/models", json=body, headers={"x-csrf-token": "wrong"})
    assert response.status_code == 403
    response = await client.post("/ui/api/v1/models", json=body, headers={"x-csrf-token": csrf, "origin": URL})
    assert response.status_code == 201, response.text
    assert (await client.get("/ui/api/v1/models")).json()["models"][0]["name"] == "from-dashboard"


async def test_the_api_answers_through_the_dashboard_as_it_does_directly(client: httpx.AsyncClient) -> None:
    csrf = await sign_in(client)
    direct = await client.post("/v1/models", json={"name": 7}, headers={"authorization": f"Api-Key {KEY}"})
    through = await client.post("/ui/api/v1/models", json={"name": 7}, headers={"x-csrf-token": csrf})
    assert through.status_code == direct.status_code == 422
    assert through.json() == direct.json()


async def test_revoking_the_key_ends_its_sessions(client: httpx.AsyncClient, plane: ControlPlane) -> None:
    created = await client.post("/v1/api_keys", json={"type": "workspace"}, headers={"authorization": f"Api-Key {KEY}"})
    await sign_in(client, created.json()["key"])
    assert (await client.get("/ui/fragment/index")).status_code == 200
    await client.delete(f"/v1/api_keys/{created.json()['id']}", headers={"authorization": f"Api-Key {KEY}"})
    assert (await client.get("/ui/fragment/index")).status_code == 401
    assert 'id="signin"' in (await client.get("/")).text


async def test_sign_out_needs_the_token_and_clears_the_cookie(client: httpx.AsyncClient) -> None:
    csrf = await sign_in(client)
    assert (await client.post("/ui/signout", data={"csrf": "wrong"})).status_code == 403
    response = await client.post("/ui/signout", data={"csrf": csrf})
    assert response.status_code == 303 and "Max-Age=0" in response.headers["set-cookie"]
    assert (await client.get("/ui/fragment/index")).status_code == 401


async def test_docs_work_offline_every_asset_from_this_server(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 303  # sign in first: the page reads /openapi.json
    await sign_in(client)
    page = await client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"|url: *\'([^\']+)\'', page.text)
    assets = {a or b for a, b in urls}
    assert {"/openapi.json", "/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css"} <= assets
    for asset in assets:
        absolute = urljoin(URL + "/docs", asset)
        assert urlsplit(absolute).netloc == "testserver", f"{asset} is not served by this server"
        response = await client.get(absolute)
        assert response.status_code == 200 and response.content, asset
    assert "cdn." not in page.text and "https://" not in page.text


async def test_static_files_stay_inside_their_folder(client: httpx.AsyncClient) -> None:
    assert (await client.get("/ui/static/dash.js")).status_code == 200
    for path in ("/ui/static/../_app.py", "/ui/static/%2e%2e/_app.py", "/docs/static/../../__init__.py", "/ui/static/swagger/LICENSE"):
        response = await client.get(path)
        assert response.status_code != 200 and "import" not in response.text, path


async def test_predict_and_the_api_with_a_key_are_untouched(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models", headers={"authorization": f"Api-Key {KEY}"})
    assert response.status_code == 200
    assert (await client.get("/v1/models")).status_code == 401  # a session cookie is not an API key
    assert (await client.get("/health")).status_code == 200


async def test_the_pages_show_a_pushed_deployment(client: httpx.AsyncClient, tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.py").write_text("class Model:\n    def predict(self, x):\n        return x\n")
    (root / "config.yaml").write_text("model_name: shown\n")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(root, arcname=".")
    pushed = await client.post(
        "/v1/models/push", params={"publish": "true"}, content=buffer.getvalue(),
        headers={"authorization": f"Api-Key {KEY}"},
    )
    assert pushed.status_code == 201, pushed.text
    model_id, deployment_id = pushed.json()["model_id"], pushed.json()["deployment_id"]
    await sign_in(client)
    index = (await client.get("/ui/fragment/index")).text
    assert f'data-deployment="{deployment_id}"' in index and 'data-status="Scaled to zero"' in index
    page = (await client.get(f"/ui/models/{model_id}/deployments/{deployment_id}")).text
    assert page.count("<svg") == 5 and 'id="async-queue"' in page and 'id="setting-max_replica"' in page
    fragment = await client.get(f"/ui/fragment/models/{model_id}/deployments/{deployment_id}")
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert (await client.get(f"/ui/models/{model_id}/deployments/nope")).status_code == 404
    csrf = await sign_in(client)
    quiet = await client.post(f"/ui/advise/models/{model_id}/deployments/{deployment_id}", headers={"x-csrf-token": csrf})
    assert quiet.status_code == 409 and "no traffic recorded" in quiet.json()["reason"]


async def test_advise_needs_the_csrf_token_and_traffic(client: httpx.AsyncClient) -> None:
    csrf = await sign_in(client)
    created = await client.post("/ui/api/v1/models", json={"name": "quiet"}, headers={"x-csrf-token": csrf})
    assert created.status_code == 201
    assert (await client.post("/ui/advise/models/quiet/deployments/nope")).status_code == 403
    missing = await client.post("/ui/advise/models/quiet/deployments/nope", headers={"x-csrf-token": csrf})
    assert missing.status_code == 404
