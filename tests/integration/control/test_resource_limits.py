"""Limits a hostile client meets: package bombs (unpacked size and file count), the async
input quota per key and in all, JSON nested too deep."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from swell.autoscaling import VirtualClock
from swell.config import ServerSettings
from swell.control import ControlPlane, SwellApp
from swell.serving._testing import FakeBackend

MakeArchive = Callable[..., Path]
KEY = {"Authorization": "Api-Key k1"}
GIB = 1024**3


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    settings = ServerSettings(
        data_dir=tmp_path / "data",
        max_package_bytes=1024 * 1024,
        max_package_files=20,
        async_max_bytes_per_key=1000,
        async_max_bytes=1500,
    )
    plane = ControlPlane(settings, FakeBackend(), clock=VirtualClock(), api_key="k1")
    await plane.start(background=False)
    yield plane
    await plane.close()


@pytest.fixture
async def http(limited: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=SwellApp(limited))
    async with httpx.AsyncClient(transport=transport, base_url="http://swell") as client:
        yield client


def package(files: dict[str, bytes], *, declared: dict[str, int] | None = None) -> bytes:
    """A tar.gz of a model package plus ``files``; ``declared`` files only have a header saying
    how large they are (and a little data): what a bomb's first bytes look like."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        base = {
            "config.yaml": b"model_name: bomb\n",
            "model/model.py": b"class Model:\n    def predict(self, x):\n        return x\n",
        }
        for name, data in {**base, **files}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, size in (declared or {}).items():
            info = tarfile.TarInfo(name)
            info.size = size
            tar.fileobj.write(info.tobuf())  # type: ignore[union-attr]
            tar.fileobj.write(b"\0" * 1024 * 1024)  # type: ignore[union-attr]
    return gzip.compress(raw.getvalue(), compresslevel=1)


def nothing_unpacked(plane: ControlPlane) -> bool:
    packages = plane.data_dir / "packages"
    return not packages.exists() or list(packages.iterdir()) == []


async def test_a_small_archive_that_unpacks_to_3_gib_is_refused_from_its_header(
    limited: ControlPlane, http: httpx.AsyncClient
) -> None:
    bomb = package({}, declared={"weights.bin": 3 * GIB})
    assert len(bomb) < 3 * 1024 * 1024
    answer = await http.post("/v1/models/push", content=bomb, headers=KEY)
    assert answer.status_code == 413, answer.text
    body = answer.json()
    assert body["error"] == "package too large" and body["limit"] == 1024 * 1024
    assert "--max-package-mb" in body["reason"]
    assert nothing_unpacked(limited) and limited.registry.models == {}


async def test_zeros_that_unpack_past_the_limit_are_refused(limited: ControlPlane, http: httpx.AsyncClient) -> None:
    bomb = package({f"data/{i}.bin": b"\0" * 300_000 for i in range(4)})  # 1.2 MB in ~1.5 KB
    answer = await http.post("/v1/models/push", content=bomb, headers=KEY)
    assert answer.status_code == 413, answer.text
    assert nothing_unpacked(limited)


async def test_too_many_files_are_refused(limited: ControlPlane, http: httpx.AsyncClient) -> None:
    answer = await http.post("/v1/models/push", content=package({f"f/{i}": b"" for i in range(30)}), headers=KEY)
    assert answer.status_code == 413, answer.text
    assert "more than 20 files" in answer.json()["reason"] and "--max-package-files" in answer.json()["reason"]
    assert nothing_unpacked(limited)


async def test_a_package_within_the_limits_is_pushed(http: httpx.AsyncClient) -> None:
    answer = await http.post("/v1/models/push", content=package({"data/a.bin": b"\0" * 100_000}), headers=KEY)
    assert answer.status_code == 201, answer.text


async def invoke_key(http: httpx.AsyncClient) -> dict[str, str]:
    created = await http.post("/v1/api_keys", json={"type": "invoke"}, headers=KEY)
    assert created.status_code == 201, created.text
    return {"Authorization": f"Api-Key {created.json()['key']}"}


async def test_async_inputs_have_a_quota_per_key_and_in_all(limited: ControlPlane, http: httpx.AsyncClient) -> None:
    pushed = await http.post("/v1/models/push", params={"publish": "true"}, content=package({}), headers=KEY)
    assert pushed.status_code == 201, pushed.text
    path = f"/model/bomb/deployment/{pushed.json()['deployment_id']}/async_predict"
    a, b = await invoke_key(http), await invoke_key(http)

    def body(size: int) -> dict[str, Any]:
        return {"model_input": "x" * (size - 2)}  # its JSON is `size` bytes

    first = await http.post(path, json=body(400), headers=a)
    assert (await http.post(path, json=body(400), headers=a)).status_code == 201
    over_key = await http.post(path, json=body(400), headers=a)
    assert over_key.status_code == 429, over_key.text
    assert over_key.headers["retry-after"] == "5"
    assert over_key.json()["error"] == "async quota exceeded"
    assert "this API key has 800 bytes" in over_key.json()["reason"] and "--async-max-mb-per-key" in over_key.json()["reason"]

    assert (await http.post(path, json=body(400), headers=b)).status_code == 201
    over_all = await http.post(path, json=body(400), headers=b)
    assert over_all.status_code == 429
    assert "the server holds 1200 bytes" in over_all.json()["reason"] and "--async-max-mb" in over_all.json()["reason"]

    too_big = await http.post(path, json=body(1200), headers=await invoke_key(http))
    assert too_big.status_code == 413 and too_big.json()["error"] == "async input too large"

    # a request that finishes gives its bytes back
    canceled = await http.delete(f"/async_request/{first.json()['request_id']}", headers=a)
    assert canceled.status_code == 200, canceled.text
    assert limited.async_queue.held() == 800
    assert (await http.post(path, json=body(400), headers=b)).status_code == 201


@pytest.mark.parametrize("depth", [2_000, 100_000])
async def test_json_nested_too_deep_is_a_400_on_every_parsing_route(
    limited: ControlPlane, http: httpx.AsyncClient, depth: int
) -> None:
    pushed = await http.post("/v1/models/push", content=package({}), headers=KEY)
    deployment = pushed.json()["deployment_id"]
    deep = "[" * depth + "]" * depth
    for method, path, text in [
        ("POST", "/model/bomb/development/async_predict", '{"model_input": %s}' % deep),
        ("POST", "/v1/secrets", deep),
        ("POST", "/v1/api_keys", '{"name": %s}' % deep),
        ("PATCH", f"/v1/models/bomb/deployments/{deployment}/autoscaling_settings", '{"min_replica": %s}' % deep),
        ("POST", "/v1/models/bomb/environments", '{"name": %s}' % deep),
    ]:
        answer = await http.request(method, path, content=text, headers={**KEY, "content-type": "application/json"})
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json() == {
            "error": "invalid JSON",
            "reason": "the body's JSON is nested too deep (more than about 1,000 levels)",
        }
