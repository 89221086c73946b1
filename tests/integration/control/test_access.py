"""API keys and secrets: the first start makes a key, only hashes and ciphertexts are stored, revocation, declared secrets only."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from swell.autoscaling import VirtualClock
from swell.config import ServerSettings
from swell.control import ApiError, ControlPlane, SwellApp
from swell.serving._testing import FakeBackend

MakeArchive = Callable[..., Path]


def _plane(data: Path, api_key: str | None = None) -> ControlPlane:
    return ControlPlane(ServerSettings(data_dir=data), FakeBackend(), clock=VirtualClock(), api_key=api_key)


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


async def test_first_start_creates_one_key_and_stores_only_its_hash(tmp_path: Path) -> None:
    plane = _plane(tmp_path)
    await plane.start(background=False)
    key = plane.new_key
    await plane.close()
    assert key and key.startswith("sw_")
    dump = "\n".join(sqlite3.connect(tmp_path / "swell.db").iterdump())
    assert key not in dump and "api_keys" in dump
    again = _plane(tmp_path)
    await again.start(background=False)
    try:
        assert again.new_key is None  # not created twice
        assert again.keys.authenticate(f"Api-Key {key}".encode()) is not None
    finally:
        await again.close()


async def test_env_key_and_an_older_keys_json_become_workspace_keys(tmp_path: Path) -> None:
    import hashlib

    legacy = {"keys": [{"id": "k_1", "sha256": hashlib.sha256(b"old-key").hexdigest(), "created_at": 5.0}]}
    (tmp_path / "keys.json").write_text(json.dumps(legacy))
    plane = _plane(tmp_path, api_key="from-env")
    await plane.start(background=False)
    try:
        assert plane.new_key is None
        assert plane.keys.authenticate(b"Api-Key from-env") is not None
        assert plane.keys.authenticate(b"Bearer old-key") is not None
        assert not (tmp_path / "keys.json").exists() and (tmp_path / "keys.json.imported").exists()
    finally:
        await plane.close()


async def test_a_restricted_invoke_key_gets_403_for_other_models_revealing_nothing(
    plane: ControlPlane, client: httpx.AsyncClient, make_archive: Callable[..., Path]
) -> None:
    a = await plane.push(make_archive(), model_name="a", publish=True, promote=False)
    b = await plane.push(make_archive(), model_name="b", publish=True, promote=False)
    dev_b = await plane.push(make_archive(), model_name="b", publish=False, promote=False)
    await plane.lifecycle.deactivate(b.model_id, b.deployment_id)  # its 409 would name it
    key = (await plane.access.create_key({"type": "invoke", "name": "only-a", "model_ids": ["a"]}))["key"]
    headers = {"Authorization": f"Api-Key {key}"}
    paths = [
        f"/model/{ref}/{route}"
        for ref in ("b", b.model_id, "no-such-model")
        for route in ("environments/production/predict", "development/predict", f"deployment/{b.deployment_id}/predict",
                      "environments/staging/predict")
    ]
    for path in paths:
        for verb in ("predict", "async_predict"):
            response = await client.post(path.replace("/predict", f"/{verb}"), headers=headers, json={"model_input": {}})
            ref = path.split("/")[2]
            assert response.status_code == 403, (path, response.text)
            assert response.json() == {"error": "forbidden", "reason": f"this key may not call model {ref!r}"}
            assert dev_b.deployment_id not in response.text
    allowed = plane.keys.authenticate(f"Api-Key {key}".encode())
    assert plane.router("a", "deployment", a.deployment_id, allowed).deployment_id == a.deployment_id


async def test_bad_keys_are_counted_on_metrics(client: httpx.AsyncClient) -> None:
    for i in range(5):
        assert (await client.get("/v1/models", headers={"Authorization": f"Api-Key guess-{i}"})).status_code == 401
        assert (await client.post("/model/m/development/predict", headers={"Authorization": "Api-Key x"})).status_code == 401
    metrics = (await client.get("/metrics", headers={"Authorization": "Api-Key k1"})).text
    assert "# TYPE swell_auth_failures_total counter" in metrics
    assert any(line.split()[:1] == ["swell_auth_failures_total"] and float(line.split()[1]) == 10 for line in metrics.splitlines())


async def test_a_client_that_keeps_sending_bad_keys_is_answered_429_and_others_are_not(plane: ControlPlane) -> None:
    app = SwellApp(plane)
    guesser = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("203.0.113.7", 4000)), base_url="http://swell")
    other = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("198.51.100.9", 4000)), base_url="http://swell")
    async with guesser, other:
        # A real caller behind the guesser's address, known before the guessing starts.
        assert (await guesser.get("/v1/models", headers={"Authorization": "Api-Key k1"})).status_code == 200
        burst = plane.settings.auth_failure_burst
        for i in range(burst):
            assert (await guesser.get("/v1/models", headers={"Authorization": f"Api-Key guess-{i}"})).status_code == 401
        held = await guesser.post("/model/m/development/predict", headers={"Authorization": "Api-Key guess-x"})
        assert held.status_code == 429
        assert int(held.headers["retry-after"]) >= 1
        assert held.json()["error"] == "too many requests without a live API key"
        # The known caller still gets through; another address is not held; nothing was checked for the guess.
        assert (await guesser.get("/v1/models", headers={"Authorization": "Api-Key k1"})).status_code == 200
        assert (await other.get("/v1/models", headers={"Authorization": "Api-Key guess"})).status_code == 401
        metrics = (await other.get("/metrics", headers={"Authorization": "Api-Key k1"})).text
    assert plane.keys.failures == burst + 1
    assert any(line.split() == ["swell_auth_throttled_total", "1.0"] for line in metrics.splitlines()), metrics
