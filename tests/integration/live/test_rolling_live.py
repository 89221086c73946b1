"""Rolling promotion against a real server and real replicas, under a steady (bounded) load:
no request fails while the traffic moves, the split shows in the API at each step, and a
deployment that answers 500s is rolled back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from swell_live import KEY, Swell  # type: ignore[import-not-found]

VERSIONED = '''
import time


class Model:
    def predict(self, model_input):
        time.sleep(0.01)
        return {{"version": {version}}}
'''

BROKEN = '''
class Model:
    def predict(self, model_input):
        raise RuntimeError("version 3 is broken")
'''

CONFIG = {"runtime": {"predict_concurrency": 4}}


@contextmanager
def steady_load(swell: Swell, url: str, results: list[tuple[int, Any]]) -> Iterator[None]:
    """Four clients calling ``url`` one request after another until the block ends (bounded in count)."""
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=swell.url, headers={"Authorization": f"Api-Key {KEY}"}, timeout=30) as http:
            for _ in range(20_000):
                if stop.is_set():
                    return
                response = http.post(url, json={})
                results.append((response.status_code, response.json() if response.status_code == 200 else response.text))

    with ThreadPoolExecutor(4) as pool:
        workers = [pool.submit(load) for _ in range(4)]
        try:
            yield
        finally:
            stop.set()
            for worker in workers:
                worker.result(timeout=60)


def watch_environment(swell: Swell, model_id: str, *, timeout: float = 120) -> tuple[dict[str, Any], list[Any]]:
    """Poll production until its rolling promotion is finished: its last view and every traffic split seen."""
    seen: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        view = swell.http.get(f"/v1/models/{model_id}/environments/production").json()
        split = [(t["deployment_id"], t["percent"]) for t in view["traffic"]]
        if not seen or seen[-1] != split:
            seen.append(split)
        if (view.get("promotion") or {}).get("phase") in ("done", "rolled_back", "failed"):
            return view, seen
        if time.monotonic() > deadline:
            pytest.fail(f"the promotion did not finish: {view}\n--- server log ---\n{swell.tail()}")
        time.sleep(0.05)


def test_rolling_promotion_under_steady_load_fails_no_request(swell: Swell, make_model: Callable[..., Path]) -> None:
    v1 = swell.push(make_model(VERSIONED.format(version=1), CONFIG), name="rolling")
    assert swell.patch(v1, min_replica=1, max_replica=2).status_code == 200
    swell.wait_for(v1, lambda v: any(r["state"] == "ready" for r in v["replicas"]), what="a v1 replica")
    v2 = swell.push(make_model(VERSIONED.format(version=2), CONFIG), name="rolling", publish=True)
    model_id, old, new = v1["model_id"], v1["deployment_id"], v2["deployment_id"]
    results: list[tuple[int, Any]] = []
    with steady_load(swell, f"/model/{model_id}/environments/production/predict", results):
        time.sleep(0.3)
        started = swell.http.post(
            f"/v1/models/{model_id}/deployments/{new}/promote",
            json={"rolling": True, "steps": [10, 50, 100], "step_seconds": 2, "max_error_rate": 0.05},
        )
        assert started.status_code == 202, started.text
        view, seen = watch_environment(swell, model_id)
        time.sleep(0.3)

    failed = [r for r in results if r[0] != 200]
    assert not failed, f"{len(failed)} of {len(results)} failed, e.g. {failed[:3]}"
    assert view["promotion"]["phase"] == "done", view
    assert view["deployment_id"] == new and view["traffic"] == [{"deployment_id": new, "percent": 100}]
    # every step was visible in the API, in order
    assert seen[0] == [(old, 100)] and seen[-1] == [(new, 100)]
    assert [(old, 90), (new, 10)] in seen and [(old, 50), (new, 50)] in seen
    assert seen.index([(old, 90), (new, 10)]) < seen.index([(old, 50), (new, 50)])
    versions = [body["version"] for _, body in results]
    assert versions[-1] == 2 and 1 in versions and 2 in versions
    events = swell.http.get(f"/v1/models/{model_id}/deployments/{new}/events").json()["events"]
    kinds = [e["kind"] for e in events]
    assert "promotion_started" in kinds and kinds.count("promotion_step") == 2 and "promoted" in kinds


def test_a_deployment_that_answers_500s_is_rolled_back(swell: Swell, make_model: Callable[..., Path]) -> None:
    v1 = swell.push(make_model(VERSIONED.format(version=1), CONFIG), name="rollback")
    assert swell.patch(v1, min_replica=1, max_replica=2).status_code == 200
    swell.wait_for(v1, lambda v: any(r["state"] == "ready" for r in v["replicas"]), what="a v1 replica")
    v3 = swell.push(make_model(BROKEN, CONFIG), name="rollback", publish=True)
    model_id, old, new = v1["model_id"], v1["deployment_id"], v3["deployment_id"]
    results: list[tuple[int, Any]] = []
    with steady_load(swell, f"/model/{model_id}/environments/production/predict", results):
        started = swell.http.post(
            f"/v1/models/{model_id}/environments/production/promote",
            json={"deployment_id": new, "rolling": True, "steps": [20, 100], "step_seconds": 30,
                  "max_error_rate": 0.05, "min_requests": 5},
        )
        assert started.status_code == 202, started.text
        view, seen = watch_environment(swell, model_id)
        after = len(results)
        time.sleep(0.5)

    promotion = view["promotion"]
    assert promotion["phase"] == "rolled_back" and "error rate" in promotion["reason"], promotion
    assert view["deployment_id"] == old and view["traffic"] == [{"deployment_id": old, "percent": 100}]
    assert [(old, 80), (new, 20)] in seen
    errors = [r for r in results if r[0] != 200]
    assert errors and all(r[0] == 500 for r in errors)  # the broken model's own answers, nothing else
    assert all(r[0] == 200 and r[1] == {"version": 1} for r in results[after + 8:])  # all back on v1
    events = swell.http.get(f"/v1/models/{model_id}/deployments/{old}/events").json()["events"]
    rolled_back = [e for e in events if e["kind"] == "promotion_rolled_back"]
    assert len(rolled_back) == 1 and "error rate" in rolled_back[0]["message"]
