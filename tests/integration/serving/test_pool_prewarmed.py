"""The prewarmed fork server as the replicas' pool, with real processes: a
replica forked from it finds numpy already imported and logs ``[prewarmed]``;
one spawned (no fork server) imports it itself and logs ``[spawned]``; the
cold-start breakdown says which."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
import yaml

from swell.config import load_model_config
from swell.serving import Replica, ReplicaSpec, ReplicaState
from swell.serving._cold_start import cold_start_of
from swell.serving.backends import ProcessBackend

pytestmark = [pytest.mark.timeout(60)]

# Records, before importing numpy, whether the process already had it.
NUMPY_MODEL = """
import sys

HAD_NUMPY = "numpy" in sys.modules

import numpy as np


class Model:
    def load(self):
        self.w = np.ones(3)

    def predict(self, model_input):
        return {"had_numpy": HAD_NUMPY, "sum": float(self.w.sum())}
"""


def _spec(root: Path) -> ReplicaSpec:
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.py").write_text(textwrap.dedent(NUMPY_MODEL))
    (root / "config.yaml").write_text(yaml.safe_dump({"model_name": "np"}))
    config, _ = load_model_config(root)
    return ReplicaSpec(deployment_id="dep1", package_dir=root, config=config, python=sys.executable)


async def _ready(backend: ProcessBackend, spec: ReplicaSpec) -> Replica:
    states: list[ReplicaState] = []
    replica = await backend.start(spec, lambda r: states.append(r.state))
    deadline = time.monotonic() + 40
    while ReplicaState.READY not in states:
        assert ReplicaState.FAILED not in states, replica.error
        assert time.monotonic() < deadline, states
        await asyncio.sleep(0.05)
    return replica


async def _predict(replica: Replica) -> dict[str, object]:
    transport = httpx.AsyncHTTPTransport(uds=replica.address.removeprefix("unix:"))
    async with httpx.AsyncClient(transport=transport, base_url="http://replica", timeout=20) as client:
        response = await client.post("/v1/models/model:predict", json={})
        return dict(response.json())


@pytest.mark.parametrize("warm", [True, False], ids=["prewarmed", "spawned"])
def test_replica_from_the_pool_has_the_heavy_imports_done(tmp_path: Path, warm: bool) -> None:
    async def body() -> None:
        backend = ProcessBackend(log_dir=tmp_path / "logs", warm_start=warm, prewarm_modules=("numpy",))
        try:
            if warm:
                assert await backend.prewarm()
                assert backend._fork_server is not None and backend._fork_server.preloaded == ["numpy"]
            replica = await _ready(backend, _spec(tmp_path / "pkg"))
            answer = await _predict(replica)
            assert answer == {"had_numpy": warm, "sum": 3.0}
            mode = "prewarmed" if warm else "spawned"
            cold = cold_start_of(replica)
            assert cold is not None and cold.start == mode
            assert cold.process is not None and cold.load is not None and cold.weights == 0.0
            log = backend.log_path(replica).read_text()
            assert f"[{mode}] model.load() completed in" in log
        finally:
            await backend.close()

    asyncio.run(asyncio.wait_for(body(), 50))
