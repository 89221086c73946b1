"""Cold starts through a real ``swell serve``: the breakdown in the view, the
metrics, the log and ``swell status --replicas``; the wait header; the 202 for
callers that ask not to wait; a load that stalls fails, a slow one that shows
progress does not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "live"))
from swell_live import KEY, Swell, start_server, stop_server  # type: ignore[import-not-found]

pytestmark = [pytest.mark.timeout(90)]

STALL = 3.0

# Loads for ~2 stall periods, printing as it goes: slow, but making progress.
SLOW_CHATTY = """
import time

class Model:
    def load(self):
        for i in range(12):
            print(f"loading shard {i}", flush=True)
            time.sleep(0.5)

    def predict(self, model_input):
        return {"ok": True}
"""

# Hangs in load() without a word.
SILENT_HANG = """
import time

class Model:
    def load(self):
        time.sleep(60)

    def predict(self, model_input):
        return {"ok": True}
"""

QUICK = """
import time

class Model:
    def load(self):
        time.sleep(0.5)

    def predict(self, model_input):
        return {"ok": True}
"""


@pytest.fixture(scope="module")
def swell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swell]:
    process, server = start_server(
        tmp_path_factory.mktemp("swell-data"), "--load-stall-seconds", str(STALL)
    )
    try:
        yield server
    finally:
        stop_server(process, server)


def _package(root: Path, source: str) -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.py").write_text(textwrap.dedent(source))
    (root / "config.yaml").write_text(yaml.safe_dump({"runtime": {"predict_concurrency": 1}}))
    return root


def _push(swell: Swell, tmp_path: Path, source: str, name: str) -> dict[str, Any]:
    pushed = swell.push(_package(tmp_path / name, source), name=name)
    response = swell.patch(pushed, scale_down_delay=60)
    assert response.status_code == 200, response.text
    return pushed


def test_slow_load_with_progress_is_served_and_its_cold_start_is_shown(swell: Swell, tmp_path: Path) -> None:
    pushed = _push(swell, tmp_path, SLOW_CHATTY, "chatty")
    started = time.monotonic()
    response = swell.http.post(swell.predict_path(pushed), json={})
    took = time.monotonic() - started
    assert response.status_code == 200, response.text
    waited = float(response.headers["x-swell-cold-start-wait"])
    assert 0 < waited <= took
    assert took > STALL  # it loaded for longer than the stall limit, and was not failed

    view = swell.deployment(pushed)
    [replica] = [r for r in view["replicas"] if r["state"] == "ready"]
    cold = replica["cold_start"]
    assert cold["load_seconds"] >= 5.0
    assert cold["total_seconds"] >= cold["load_seconds"]
    assert cold["weights_seconds"] == 0.0 and cold["pending_seconds"] is not None
    assert cold["start"] in ("prewarmed", "forked", "spawned")

    # The next request finds a ready replica: no cold-start header.
    warm = swell.http.post(swell.predict_path(pushed), json={})
    assert warm.status_code == 200 and "x-swell-cold-start-wait" not in warm.headers

    metrics = swell.http.get("/metrics").text
    assert f'swell_cold_start_phase_seconds_count{{model="chatty",deployment="{pushed["deployment_id"]}",phase="load"}} 1.0' in metrics

    log = swell.log.read_text()
    assert f"replica {replica['id']} ready in" in log and "load() " in log
    replica_log = next((swell.log.parent / "logs" / pushed["deployment_id"]).glob(f"{replica['id']}.log")).read_text()
    assert f"[{cold['start']}] model.load() completed in" in replica_log

    env = {**os.environ, "SWELL_URL": swell.url, "SWELL_API_KEY": KEY}
    cli = [sys.executable, "-c", "from swell.cli import main; main()", "status", "chatty", "--replicas"]
    as_json = subprocess.run([*cli, "--json"], env=env, capture_output=True, text=True, timeout=30, check=True)
    [dep] = json.loads(as_json.stdout)["models"][0]["deployments"]
    assert dep["replicas"][0]["cold_start"]["load_seconds"] == cold["load_seconds"]
    table = subprocess.run(cli, env={**env, "COLUMNS": "160"}, capture_output=True, text=True, timeout=30, check=True)
    assert replica["id"] in table.stdout and "weights" in table.stdout


def test_load_that_makes_no_progress_fails_after_the_stall_limit(swell: Swell, tmp_path: Path) -> None:
    pushed = _push(swell, tmp_path, SILENT_HANG, "silent")
    started = time.monotonic()
    response = swell.http.post(swell.predict_path(pushed), json={})
    took = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert "no progress" in response.json()["reason"]
    assert took < 30  # the stall limit, not the 1800 s total, ended it
    view = swell.deployment(pushed)
    assert "no progress" in (view["error"] or "")


def test_caller_that_asks_not_to_wait_gets_202_then_is_served_once_active(swell: Swell, tmp_path: Path) -> None:
    pushed = _push(swell, tmp_path, QUICK, "quick")
    response = swell.http.post(swell.predict_path(pushed), json={}, headers={"Prefer": "respond-async"})
    assert response.status_code == 202, response.text
    assert int(response.headers["retry-after"]) >= 1
    status_url = response.json()["status_url"]
    assert response.headers["location"] == status_url
    assert status_url == f"/v1/models/{pushed['model_id']}/deployments/{pushed['deployment_id']}"
    # The 202 woke it: it becomes Active with nobody waiting on a connection.
    deadline = time.monotonic() + 30
    while swell.http.get(status_url).json()["status"] != "Active":
        assert time.monotonic() < deadline, swell.tail()
        time.sleep(0.1)
    again = swell.http.post(swell.predict_path(pushed) + "?wait=false", json={})
    assert again.status_code == 200 and again.json() == {"ok": True}
