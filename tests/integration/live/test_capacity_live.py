"""Capacity pressure through a real ``swell serve`` with real replica processes: fourteen
small models pushed and called one after the other on a machine that holds four of them
at a time.  Every call is answered: idle replicas of the models called longest ago are
stopped to make room, and the events and the deployment view say which and why."""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from swell_live import Swell, start_server, stop_server  # type: ignore[import-not-found]

pytestmark = [pytest.mark.timeout(420)]

MODELS = 14
SMALL = """
class Model:
    def predict(self, model_input):
        return {"model": MODEL}
"""


@pytest.fixture(scope="module")
def swell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swell]:
    # No standby: each replica is forked on demand, so its own resources are all it holds.
    process, server = start_server(tmp_path_factory.mktemp("swell-data"), "--pool-size", "0")
    try:
        yield server
    finally:
        stop_server(process, server)


def small_model(root: Path, index: int) -> Path:
    # Each asks for every core this machine has: with the default cpu_overcommit of 4, four
    # replicas fit at a time, whatever the core count (as `cpu: "1"` does on a 1-core machine).
    cores = len(os.sched_getaffinity(0))
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.py").write_text(f"MODEL = {index}\n" + textwrap.dedent(SMALL))
    (root / "config.yaml").write_text(yaml.safe_dump({"resources": {"cpu": str(cores)}}))
    return root


def reclaims(swell: Swell, pushed: dict[str, Any], *, of: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``capacity_reclaimed`` events of ``pushed``'s deployment (those that stopped a replica of ``of``, if given)."""
    base = f"/v1/models/{pushed['model_id']}/deployments/{pushed['deployment_id']}"
    return [
        e for e in swell.http.get(base + "/events").json()["events"]
        if e["kind"] == "capacity_reclaimed" and (of is None or e["details"]["replica_deployment_id"] == of["deployment_id"])
    ]


def test_fourteen_small_models_called_in_turn_all_answer(swell: Swell, tmp_path: Path) -> None:
    pushed: list[dict[str, Any]] = []
    answers: dict[int, Any] = {}
    deadline = time.monotonic() + 360
    for index in range(MODELS):
        pushed.append(swell.push(small_model(tmp_path / f"small{index}", index), name=f"small{index}"))
        response = swell.http.post(swell.predict_path(pushed[index]), json={}, timeout=90)
        assert response.status_code == 200, f"model {index}: {response.text}\n{swell.tail()}"
        answers[index] = response.json()["model"]
        assert time.monotonic() < deadline, f"{index + 1} models in 360 s\n{swell.tail()}"
    assert answers == {i: i for i in range(MODELS)}

    # The first ten gave way, each to a model called after it. (Least recently used is judged
    # at the control loop's 1 s tick: models called within one tick may give way in any order.)
    for index in range(MODELS - 4):
        [reclaimed] = reclaims(swell, pushed[index], of=pushed[index])
        message = reclaimed["message"]
        assert message.startswith(f"stopped idle replica {reclaimed['details']['replica_id']} of small{index}/"), message
        assert "above min_replica 0) to make room for small" in message and "CPU" in message and "free" in message
        later = [j for j in range(index + 1, MODELS) if f"to make room for small{j}/{pushed[j]['deployment_id']}" in message]
        assert len(later) == 1, message
        assert message in [e["message"] for e in reclaims(swell, pushed[later[0]], of=pushed[index])]
        view = swell.deployment(pushed[index])
        assert view["capacity_reclaimed"]["message"] == message
        assert view["status"] == "Scaled to zero" and view["replicas_total"] == 0  # it did not take the room back
    for index in range(MODELS - 4, MODELS):
        assert swell.deployment(pushed[index])["status"] == "Active"
    assert "to make room for small4/" in swell.log.read_text()

    # Called again, the first model serves too: one of the four that hold the room gives way.
    response = swell.http.post(swell.predict_path(pushed[0]), json={}, timeout=90)
    assert response.status_code == 200 and response.json() == {"model": 0}, response.text
    gave_way = [
        index for index in range(MODELS - 4, MODELS)
        if f"to make room for small0/{pushed[0]['deployment_id']}"
        in (swell.deployment(pushed[index]).get("capacity_reclaimed") or {}).get("message", "")
    ]
    assert len(gave_way) == 1, gave_way
