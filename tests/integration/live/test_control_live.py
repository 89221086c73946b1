"""The control plane against a real server and real replicas: promotion under load,
deactivation, development reload, secrets, scoped keys, and a restart after kill -9."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from swell_live import KEY, Swell, start_server, stop_server  # type: ignore[import-not-found]

VERSIONED = '''
import time


class Model:
    def predict(self, model_input):
        time.sleep(float(model_input.get("sleep", 0.01)))
        return {{"version": {version}}}
'''


def _ready(view: dict[str, Any], n: int = 1) -> bool:
    return sum(r["state"] == "ready" for r in view["replicas"]) >= n


def test_promotion_under_steady_load_fails_no_request(swell: Swell, make_model: Callable[..., Path]) -> None:
    config = {"runtime": {"predict_concurrency": 4}}
    v1 = swell.push(make_model(VERSIONED.format(version=1), config), name="promo")
    assert swell.patch(v1, min_replica=2, max_replica=2, scale_down_delay=60).status_code == 200
    swell.wait_for(v1, lambda v: _ready(v, 2), what="two v1 replicas")
    url = f"/model/{v1['model_id']}/environments/production/predict"
    results: list[tuple[int, Any, float]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=swell.url, headers={"Authorization": f"Api-Key {KEY}"}, timeout=30) as http:
            for _ in range(5000):  # bounded; stopped long before
                if stop.is_set():
                    return
                response = http.post(url, json={})
                body = response.json() if response.status_code == 200 else response.text
                results.append((response.status_code, body, time.monotonic()))

    with ThreadPoolExecutor(4) as pool:
        workers = [pool.submit(load) for _ in range(4)]
        time.sleep(0.5)
        v2 = swell.push(make_model(VERSIONED.format(version=2), config), name="promo", promote=True)
        switched = time.monotonic()
        time.sleep(1.0)
        stop.set()
        for worker in workers:
            worker.result(timeout=60)

    failed = [r for r in results if r[0] != 200]
    assert not failed, f"{len(failed)} of {len(results)} failed, e.g. {failed[:3]}"
    versions = [body["version"] for _, body, _ in results]
    assert 1 in versions and 2 in versions
    assert all(body["version"] == 2 for _, body, at in results if at > switched + 0.2)
    view = swell.deployment(v2)
    assert view["environments"] == ["production"] and _ready(view, 2)  # warmed to the old size
    assert view["autoscaling_settings"]["min_replica"] == 2  # and inherited its settings


def test_deactivate_answers_409_until_activated(swell: Swell, make_model: Callable[..., Path]) -> None:
    pushed = swell.push(make_model(VERSIONED.format(version=1)), name="sleeper")
    swell.patch(pushed, min_replica=1)
    swell.wait_for(pushed, _ready, what="a replica")
    base = f"/v1/models/{pushed['model_id']}/deployments/{pushed['deployment_id']}"
    assert swell.http.post(f"{base}/deactivate").json()["status"] == "Inactive"
    refused = swell.http.post(swell.predict_path(pushed), json={})
    assert refused.status_code == 409 and "activate" in refused.json()["reason"]
    swell.wait_for(pushed, lambda v: v["replicas"] == [], what="no replicas")
    assert swell.http.post(f"{base}/activate").json()["active"] is True
    swell.wait_for(pushed, _ready, what="min_replica again")
    assert swell.http.post(swell.predict_path(pushed), json={}).json() == {"version": 1}


def test_development_reload_keeps_queued_requests(swell: Swell, make_model: Callable[..., Path]) -> None:
    config = {"runtime": {"predict_concurrency": 1}}
    first = swell.push(make_model(VERSIONED.format(version=1), config), name="devloop", publish=False)
    url = f"/model/{first['model_id']}/development/predict"
    assert swell.http.post(url, json={}).json() == {"version": 1}
    with ThreadPoolExecutor(6) as pool:
        calls = [pool.submit(swell.http.post, url, json={"sleep": 0.3}) for _ in range(6)]
        time.sleep(0.4)  # one runs, the rest wait in the queue
        second = swell.push(make_model(VERSIONED.format(version=2), config), name="devloop", publish=False)
        answers = [c.result(timeout=60) for c in calls]
    assert second["deployment_id"] == first["deployment_id"]
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    assert {a.json()["version"] for a in answers} <= {1, 2}
    assert swell.http.post(url, json={}).json() == {"version": 2}


def test_secrets_reach_the_model_as_truss_gives_them(swell: Swell, make_model: Callable[..., Path]) -> None:
    value = "s3cr3t-" + os.urandom(4).hex()
    assert swell.http.post("/v1/secrets", json={"name": "api_token", "value": value}).status_code == 200
    source = '''
class Model:
    def __init__(self, **kwargs):
        self._secrets = kwargs["secrets"]

    def predict(self, model_input):
        return {"token": self._secrets["api_token"]}
'''
    pushed = swell.push(make_model(source, {"secrets": {"api_token": None}}), name="secretive")
    assert swell.http.post(swell.predict_path(pushed), json={}).json() == {"token": value}
    listed = swell.http.get("/v1/secrets").json()
    assert "api_token" in [s["name"] for s in listed["secrets"]] and value not in str(listed)
    assert value not in swell.log.read_text(errors="replace")


def test_invoke_keys_only_call_their_models(swell: Swell, make_model: Callable[..., Path]) -> None:
    mine = swell.push(make_model(VERSIONED.format(version=1)), name="invoked")
    other = swell.push(make_model(VERSIONED.format(version=2)), name="not-invoked")
    created = swell.http.post("/v1/api_keys", json={"type": "invoke", "model_ids": ["invoked"]})
    assert created.status_code == 201, created.text
    invoker = {"Authorization": f"Api-Key {created.json()['key']}"}
    assert swell.http.post(swell.predict_path(mine), json={}, headers=invoker).status_code == 200
    assert swell.http.post(swell.predict_path(other), json={}, headers=invoker).status_code == 403
    assert swell.http.get("/v1/models", headers=invoker).status_code == 403
    assert swell.http.delete(f"/v1/api_keys/{created.json()['id']}").json()["revoked"] is True
    assert swell.http.post(swell.predict_path(mine), json={}, headers=invoker).status_code == 401


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its (dead) parent's reaper counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_restart_after_kill_9_leaves_no_orphan_and_restores_min_replica(
    tmp_path: Path, make_model: Callable[..., Path]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    process, server = start_server(data)
    try:
        pushed = server.push(make_model(VERSIONED.format(version=1)), name="durable")
        assert server.patch(pushed, min_replica=1, scale_down_delay=120).status_code == 200
        view = server.wait_for(pushed, _ready, what="a replica")
        pids = [r["pid"] for r in view["replicas"] if r["pid"]]
        assert pids
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        server.http.close()
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids), "a replica outlived its server"

    process, server = start_server(data)
    try:
        view = server.wait_for(pushed, _ready, what="min_replica after the restart")
        assert view["autoscaling_settings"]["min_replica"] == 1 and view["environments"] == ["production"]
        assert server.http.post(server.predict_path(pushed), json={}).json() == {"version": 1}
    finally:
        stop_server(process, server)


def test_traffic_is_recorded_for_advise(swell: Swell, make_model: Callable[..., Path]) -> None:
    pushed = swell.push(make_model(VERSIONED.format(version=1)), name="recorded")
    for _ in range(3):
        assert swell.http.post(swell.predict_path(pushed), json={}).status_code == 200
    url = f"/v1/models/{pushed['model_id']}/deployments/{pushed['deployment_id']}/traffic"
    deadline = time.monotonic() + 10
    traffic = swell.http.get(url).json()
    while sum(traffic["arrivals"]) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
        traffic = swell.http.get(url).json()
    assert sum(traffic["arrivals"]) == 3 and traffic["interval"] == 1.0
    assert len(traffic["arrivals"]) == len(traffic["concurrency"]) and traffic["start"] > 1.7e9


@pytest.mark.slow
def test_a_server_on_postgresql_keeps_its_models_across_a_restart(
    tmp_path: Path, make_model: Callable[..., Path], postgres_database: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    process, server = start_server(data, "--database-url", postgres_database)
    try:
        pushed = server.push(make_model(VERSIONED.format(version=7)), name="on-postgres")
        assert server.patch(pushed, max_replica=2).json()["status"] == "ACCEPTED"
    finally:
        stop_server(process, server)
    assert not (data / "swell.db").exists()  # nothing went to SQLite
    process, server = start_server(data, "--database-url", postgres_database)
    try:
        view = server.deployment(pushed)
        assert view["autoscaling_settings"]["max_replica"] == 2 and view["environments"] == ["production"]
        assert server.http.post(server.predict_path(pushed), json={}).json() == {"version": 7}
    finally:
        stop_server(process, server)


def test_a_bad_database_url_stops_the_server_with_one_clear_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", "from swell.cli import main; main()", "serve", "--port", "0",
         "--data-dir", str(tmp_path), "--database-url", "postgresql+asyncpg://nobody@/x?host=/nonexistent"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "SWELL_API_KEY": KEY},
    )
    assert run.returncode != 0
    assert "cannot open" in run.stderr and "Traceback" not in run.stderr


ASYNC_ECHO = '''
class Model:
    async def predict(self, model_input):
        return {"got": model_input}
'''


def test_a_model_named_as_truss_names_it_is_served_by_id(swell: Swell, make_model: Callable[..., Path]) -> None:
    """Truss's own test packages are named "Test Async": free text, kept as written; URLs use the id."""
    package = make_model(ASYNC_ECHO, {"model_name": "Test Async", "runtime": {"predict_concurrency": 1}})
    pushed = swell.push(package)  # the name comes from config.yaml, as `truss push` takes it
    assert pushed["model_name"] == "Test Async"
    answer = swell.http.post(f"/model/{pushed['model_id']}/environments/production/predict", json={"x": 1}, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"got": {"x": 1}}

    again = swell.push(package, name="  Test Async ")  # the same name (trimmed): a new deployment of the same model
    assert again["model_id"] == pushed["model_id"] and again["deployment_id"] != pushed["deployment_id"]
    model = swell.http.get(f"/v1/models/{pushed['model_id']}").json()
    assert model["name"] == "Test Async" and len(model["deployments"]) == 2
    assert all(d["model_name"] == "Test Async" for d in model["deployments"])
    listed = [m for m in swell.http.get("/v1/models").json()["models"] if m["name"] == "Test Async"]
    assert [m["id"] for m in listed] == [pushed["model_id"]]
    by_name = swell.http.get("/v1/models/Test%20Async")  # the name as written still finds it
    assert by_name.status_code == 200 and by_name.json()["id"] == pushed["model_id"]
