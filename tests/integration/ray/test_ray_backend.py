"""``swell serve --backend ray`` against a real multi-node Ray cluster (conftest.py)."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from ray_live import RayCluster  # type: ignore[import-not-found]
from swell_live import Swell, start_server, stop_server  # type: ignore[import-not-found]

if os.environ.get("SWELL_REQUIRE_RAY") == "1":  # CI: these tests must run, not skip
    import ray  # noqa: F401
else:
    pytest.importorskip("ray", reason="ray cannot be imported; pip install -e '.[test]' installs it")

pytestmark = pytest.mark.slow

WHERE = '''
import os
import time


class Model:
    def __init__(self, **kwargs):
        self._secrets = kwargs.get("secrets")

    def predict(self, model_input):
        time.sleep(min(float(model_input.get("sleep", 0)), 10))
        return {
            "pid": os.getpid(),
            "i": model_input.get("i"),
            "port": int(os.environ["SWELL_REPLICA_PORT"]),
            "token_visible": "SWELL_REPLICA_TOKEN" in os.environ,
            "secret": self._secrets["greeting"] if model_input.get("secret") else None,
        }
'''


@pytest.fixture(scope="module")
def swell(ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swell]:
    process, server = start_server(
        tmp_path_factory.mktemp("swell-data"), "--backend", "ray", "--ray-address", ray_cluster.address
    )
    try:
        yield server
    finally:
        stop_server(process, server)


@pytest.fixture
def make_model(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1000))

    def make(source: str = WHERE, config: dict[str, Any] | None = None) -> Path:
        root = tmp_path / f"pkg{next(counter)}"
        (root / "model").mkdir(parents=True)
        (root / "model" / "model.py").write_text(textwrap.dedent(source))
        (root / "config.yaml").write_text(yaml.safe_dump(config or {"runtime": {"predict_concurrency": 1}}))
        return root

    return make


def _ready(view: dict[str, Any], count: int = 1) -> bool:
    return sum(1 for r in view["replicas"] if r["state"] == "ready") >= count


def test_predict_runs_on_a_worker_node_and_the_replica_refuses_other_callers(
    swell: Swell, ray_cluster: RayCluster, make_model: Callable[..., Path]
) -> None:
    config = {"runtime": {"predict_concurrency": 1}, "secrets": {"greeting": None}}
    secret = swell.http.post("/v1/secrets", json={"name": "greeting", "value": "hello from the server"})
    assert secret.status_code in (200, 201), secret.text
    pushed = swell.push(make_model(WHERE, config), name="where")
    response = swell.http.post(swell.predict_path(pushed), json={"i": 1, "secret": True})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["i"] == 1 and answer["secret"] == "hello from the server"
    assert not answer["token_visible"], "model code must not see the replica's token"
    view = swell.deployment(pushed)
    (replica,) = view["replicas"]
    assert ray_cluster.label_of(replica["node"]) in ("node_a", "node_b"), replica  # never the head: it has no CPU
    # The replica's port is open on the node's address; without the router's token it answers 401.
    direct = f"http://127.0.0.1:{answer['port']}"
    refused = httpx.post(f"{direct}/v1/models/model:predict", json={"i": 2})
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
    assert httpx.get(f"{direct}/health/ready").status_code == 401
    forged = httpx.post(f"{direct}/v1/models/model:predict", json={}, headers={"x-swell-replica-token": "guess"})
    assert forged.status_code == 401
    # No secret and no token is written on the node in clear.
    for path in ray_cluster.cache.rglob("*"):
        if path.is_file() and path.stat().st_size < 1 << 20:
            data = path.read_bytes()
            assert b"hello from the server" not in data, path
