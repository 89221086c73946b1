"""Replicas that die while serving, on a real server with real replica processes.

A crash on one input is a clear 502 naming the replica, and the deployment
recovers; a model that keeps dying soon after it is ready is ``Unhealthy``
with its last error while a healthy deployment on the same server serves on;
an idempotent model's request survives its replica's kill -9; a load that
hangs past the model's own limit fails with that limit named.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from replica_chaos import Swell, running_server, write_model  # type: ignore[import-not-found]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

WORKER = """
import os
import time


class Model:
    def predict(self, model_input):
        if model_input.get("crash"):
            os._exit(3)  # a segfault in native code, as the process sees it
        time.sleep(min(float(model_input.get("sleep", 0)), 10))
        return {"pid": os.getpid(), "i": model_input.get("i")}
"""

# Ready, then dead half a second later: a crash loop as users meet it (a
# background thread that dies, a native library that aborts after warm-up).
DIES_AFTER_READY = """
import os
import sys
import threading
import time


class Model:
    def load(self):
        def die():
            time.sleep(0.5)
            print("fatal: the GPU worker thread died", file=sys.stderr, flush=True)
            os._exit(7)

        threading.Thread(target=die, daemon=True).start()

    def predict(self, model_input):
        return model_input
"""

HANGS_IN_LOAD = """
import time


class Model:
    def load(self):
        time.sleep(3600)

    def predict(self, model_input):
        return model_input
"""


@pytest.fixture(scope="module")
def swell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swell]:
    with running_server(tmp_path_factory.mktemp("swell-data")) as server:
        yield server


def push(swell: Swell, tmp_path: Path, name: str, source: str, **runtime: object) -> dict[str, object]:
    config = {"model_name": name, "runtime": {"predict_concurrency": 1, **runtime}}
    return swell.push(write_model(tmp_path / name, source, config), name=name)


def test_crash_on_one_input_is_a_502_naming_the_replica_and_the_deployment_recovers(
    swell: Swell, tmp_path: Path
) -> None:
    pushed = push(swell, tmp_path, "poisoned", WORKER)
    path = swell.predict_path(pushed)
    assert swell.http.post(path, json={"i": 0}).status_code == 200
    replica = swell.deployment(pushed)["replicas"][0]
    response = swell.http.post(path, json={"crash": True})
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["error"] == "replica failed" and body["replica"] == replica["id"]
    assert f"replica {replica['id']} failed while serving this request" in body["reason"]
    assert "runtime.predict_idempotent" in body["reason"]  # why it was not sent elsewhere
    after = swell.http.post(path, json={"i": 1})  # a new replica, at once (a first death)
    assert after.status_code == 200 and after.json()["i"] == 1 and after.json()["pid"] != replica["pid"]
    view = swell.wait_for(pushed, lambda v: v["status"] == "Active", timeout=30, what="Active again")
    assert view["error"] and replica["id"] in view["error"] and "exited with code 3" in view["error"]


def test_crash_loop_is_unhealthy_with_the_last_error_while_others_serve(swell: Swell, tmp_path: Path) -> None:
    healthy = push(swell, tmp_path, "steady", WORKER)
    healthy_path = swell.predict_path(healthy)
    assert swell.http.post(healthy_path, json={"i": 0}).status_code == 200
    looping = push(swell, tmp_path, "looping", DIES_AFTER_READY)
    assert swell.patch(looping, min_replica=1, max_replica=1).status_code == 200

    # The healthy deployment answers throughout, and quickly.
    stop = threading.Event()
    answered: list[tuple[int, float]] = []

    def call_healthy() -> None:
        with httpx.Client(base_url=swell.url, headers=dict(swell.http.headers), timeout=30) as client:
            i = 0
            while not stop.is_set():
                started = time.monotonic()
                response = client.post(healthy_path, json={"i": i})
                answered.append((response.status_code, time.monotonic() - started))
                assert response.json()["i"] == i
                i += 1
                time.sleep(0.02)

    caller = threading.Thread(target=call_healthy)
    caller.start()
    try:
        view = swell.wait_for(looping, lambda v: v["status"] == "Unhealthy", timeout=60, what="Unhealthy")
        assert "failed while serving" in view["error"] and "exited with code 7" in view["error"]
        assert "the GPU worker thread died" in view["error"]  # the tail of its log
        # Back-off: the gaps between replacements grow (at once, 1 s, 2 s, 4 s ...).
        deadline = time.monotonic() + 60
        while "next start in 4 s" not in swell.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        log = swell.log.read_text()
        assert "next start in 2 s" in log and "next start in 4 s" in log, swell.tail()
        starts = len(re.findall(r"looping: replica \S+ failed \d+ s after becoming ready", log))
        assert starts <= 6, f"{starts} deaths: no back-off?"
        assert swell.deployment(looping)["status"] in ("Unhealthy", "Active")  # Active: its 0.5 s alive
    finally:
        stop.set()
        caller.join(timeout=60)
    assert answered and all(status == 200 for status, _ in answered), answered[:5]
    assert max(seconds for _, seconds in answered) < 5.0, max(answered, key=lambda a: a[1])
    assert swell.deployment(healthy)["status"] == "Active"
    assert swell.patch(looping, min_replica=0).status_code == 200  # stop the loop


def test_idempotent_request_survives_its_replica_being_killed(swell: Swell, tmp_path: Path) -> None:
    pushed = push(swell, tmp_path, "idempotent", WORKER, predict_idempotent=True)
    assert swell.patch(pushed, min_replica=2, max_replica=2).status_code == 200
    swell.wait_for(
        pushed, lambda v: sum(r["state"] == "ready" for r in v["replicas"]) == 2, timeout=60, what="2 ready replicas"
    )
    path = swell.predict_path(pushed)
    outcome: list[httpx.Response] = []
    caller = threading.Thread(target=lambda: outcome.append(swell.http.post(path, json={"sleep": 3, "i": 42})))
    caller.start()
    view = swell.wait_for(pushed, lambda v: v["in_flight"] == 1, timeout=30, what="the request in flight")
    victim = next(r for r in view["replicas"] if r["in_flight"] == 1)
    os.kill(victim["pid"], signal.SIGKILL)
    caller.join(timeout=60)
    assert not caller.is_alive(), "the request hung"
    response = outcome[0]
    assert response.status_code == 200, response.text
    assert response.json()["i"] == 42 and response.json()["pid"] != victim["pid"]
    view = swell.wait_for(
        pushed, lambda v: sum(r["state"] == "ready" for r in v["replicas"]) == 2, timeout=60, what="replaced"
    )
    assert victim["id"] not in {r["id"] for r in view["replicas"]}
    assert "killed by SIGKILL" in view["error"]
    assert swell.patch(pushed, min_replica=0).status_code == 200


def test_load_that_hangs_past_the_models_limit_fails_with_that_limit(swell: Swell, tmp_path: Path) -> None:
    pushed = push(swell, tmp_path, "hangs", HANGS_IN_LOAD, load_timeout_seconds=2)
    started = time.monotonic()
    response = swell.http.post(swell.predict_path(pushed), json={})
    assert response.status_code == 503, response.text
    assert time.monotonic() - started < 30
    assert "runtime.load_timeout_seconds" in response.json()["reason"]
    view = swell.wait_for(pushed, lambda v: v["status"] == "Unhealthy", timeout=10, what="Unhealthy")
    assert "did not finish loading within 2 s" in view["error"]
