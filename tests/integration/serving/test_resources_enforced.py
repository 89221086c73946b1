"""Resources with real replica processes: a model over its memory limit is
stopped and reported (cgroup where writable, RLIMIT_AS otherwise), replicas
that do not fit wait as pending and start when room frees, a replica that can
never fit fails at once, and GPUs are given through CUDA_VISIBLE_DEVICES where
``nvidia-smi`` exists (skipped where it does not)."""

from __future__ import annotations

import asyncio
import shutil
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from swell.config import load_model_config
from swell.serving import Replica, ReplicaSpec, ReplicaState
from swell.serving.backends import ProcessBackend
from swell.serving.backends.process._resources import (
    AffinityRlimit,
    Capacity,
    detect_enforcer,
    machine_capacity,
)

pytestmark = [pytest.mark.timeout(60)]
S = ReplicaState

HOG = """
class Model:
    def load(self):
        self.hog = bytearray(400 * 1024 * 1024)  # touched: resident, not just reserved
        for i in range(0, len(self.hog), 4096):
            self.hog[i] = 1

    def predict(self, model_input):
        return {}
"""

ENV = """
import os

class Model:
    def predict(self, model_input):
        return {"cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}
"""


def _package(root: Path, source: str, resources: dict[str, Any]) -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.py").write_text(textwrap.dedent(source))
    (root / "config.yaml").write_text(yaml.safe_dump({"model_name": root.name, "resources": resources}))
    return root


def _spec(package: Path, deployment_id: str = "dep1") -> ReplicaSpec:
    config, _ = load_model_config(package)
    return ReplicaSpec(deployment_id=deployment_id, package_dir=package, config=config, python=sys.executable)


class Seen:
    def __init__(self) -> None:
        self.replicas: dict[str, Replica] = {}
        self.states: dict[str, list[ReplicaState]] = {}

    def __call__(self, replica: Replica) -> None:
        self.replicas[replica.id] = replica
        self.states.setdefault(replica.id, []).append(replica.state)

    async def until(self, replica_id: str, *states: ReplicaState, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not set(self.states.get(replica_id, ())) & set(states):
            assert time.monotonic() < deadline, f"{replica_id} never reached {states}: {self.states}"
            await asyncio.sleep(0.05)


def _run(body: Any) -> None:
    asyncio.run(asyncio.wait_for(body, 50))


@pytest.mark.parametrize("how", ["detected", "rlimit"])
def test_model_over_its_memory_limit_is_stopped_and_reported(tmp_path: Path, how: str) -> None:
    enforcer = detect_enforcer() if how == "detected" else AffinityRlimit()

    async def body() -> None:
        backend = ProcessBackend(log_dir=tmp_path / "logs", enforcer=enforcer, failed_grace_seconds=1.0)
        seen = Seen()
        try:
            spec = _spec(_package(tmp_path / "hog", HOG, {"memory": "128Mi"}))
            replica = await backend.start(spec, seen)
            await seen.until(replica.id, S.FAILED)
            assert "exceeded its memory limit of 128Mi" in (replica.error or ""), replica.error
            # The backend lives on: the next replica starts and serves.
            ok = await backend.start(_spec(_package(tmp_path / "ok", ENV, {"memory": "256Mi"}), "dep2"), seen)
            await seen.until(ok.id, S.READY)
        finally:
            await backend.close()

    _run(body())


def test_replicas_that_do_not_fit_wait_pending_and_start_when_room_frees(tmp_path: Path) -> None:
    async def body() -> None:
        capacity = Capacity(cpu=2.0, memory=machine_capacity(gpus=()).memory)
        backend = ProcessBackend(log_dir=tmp_path / "logs", capacity=capacity)
        seen = Seen()
        try:
            spec = _spec(_package(tmp_path / "one-cpu", ENV, {"cpu": "1"}))
            first, second, third = [await backend.start(spec, seen) for _ in range(3)]
            assert first.state.alive and S.PENDING not in (first.state, second.state)
            assert third.state is S.PENDING
            assert third.reason == "waiting for resources: needs 1 CPU, 0 of 2 free"
            assert third in backend.list()
            await seen.until(first.id, S.READY)
            await backend.stop(first, 5.0)
            await seen.until(third.id, S.READY)  # placed once the first one's CPU was free
            # A pending replica that is stopped never starts.
            fourth = await backend.start(spec, seen)
            assert fourth.state is S.PENDING
            await backend.stop(fourth, 0)
            assert seen.states[fourth.id] == [S.STOPPED] and fourth not in backend.list()
            # One that could never fit fails at once, saying why.
            huge = await backend.start(_spec(_package(tmp_path / "huge", ENV, {"cpu": "64"}), "dep3"), seen)
            assert huge.state is S.FAILED and "64 CPU (the machine has 2)" in (huge.error or "")
        finally:
            await backend.close()

    _run(body())


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="no nvidia-smi on this machine")
def test_gpu_replica_gets_the_gpus_nvidia_smi_reports(tmp_path: Path) -> None:
    async def body() -> None:
        backend = ProcessBackend(log_dir=tmp_path / "logs")
        seen = Seen()
        try:
            capacity = machine_capacity()
            assert capacity.gpus, capacity.gpu_note
            replica = await backend.start(_spec(_package(tmp_path / "gpu", ENV, {"use_gpu": True})), seen)
            await seen.until(replica.id, S.READY)
            transport = httpx.AsyncHTTPTransport(uds=replica.address.removeprefix("unix:"))
            async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
                answer = (await client.post("/v1/models/model:predict", json={})).json()
            assert answer["cuda"] == str(capacity.gpus[0].index)
            # Asking for more GPUs than there are fails at once, naming what there is.
            many = len(capacity.gpus) + 1
            too_many = await backend.start(
                _spec(_package(tmp_path / "many", ENV, {"accelerator": f"H100:{many}"}), "dep2"), seen
            )
            assert too_many.state is S.FAILED and "GPU" in (too_many.error or "")
        finally:
            await backend.close()

    _run(body())
