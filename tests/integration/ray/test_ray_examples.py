"""Every package in examples/ served by a real ``swell serve --backend ray`` on the
two-node cluster (conftest.py): each pushed, called through the server (predict on
its production route, the websocket example on the server's websocket route) and
checked as a bare replica's answer is (examples_support, test_examples.py), and
its replicas named by node in the deployment view, on both nodes across the examples.

The weights examples fetch from servers this test starts inside the cluster's
namespace: a file server (its URL written into the package) and a local Hugging
Face Hub (``HF_ENDPOINT`` in the server's environment, which the Ray backend
passes to replicas on the nodes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from examples_support import (  # type: ignore[import-not-found]
    CHECKS,
    EXAMPLE_ENV,
    PACKAGES,
    SOCKET_CHECKS,
    copy_example,
    serve_weights,
)
from ray_live import RayCluster, require_ray  # type: ignore[import-not-found]
from swell_live import KEY, Swell, start_server, stop_server  # type: ignore[import-not-found]

from swell.modelserver import load_truss_config

require_ray()  # CI (SWELL_REQUIRE_RAY=1): these tests must run, not skip

pytestmark = pytest.mark.slow

#: Deployments kept active at once.  Each example's replica asks for 1 CPU and a worker has 2:
#: three replicas alive together cannot all be on one node, so serving the examples in a sliding
#: window of three places replicas on both nodes; the fourth CPU is left for the backend's standby.
WINDOW = 3


@pytest.fixture(scope="module")
def examples(ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Path], dict[str, str]]]:
    """Copies of the examples, their weights served inside the cluster's namespace (the
    nodes reach them on 127.0.0.1), and what the server's environment needs for them."""
    root = tmp_path_factory.mktemp("examples")
    env: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        copies = []
        for package in PACKAGES:
            copy = copy_example(package, root)
            serve_weights(copy, stack, env)
            # A replica's environment comes from its package (the server keeps its SWELL_* to itself).
            config = yaml.safe_load((copy / "config.yaml").read_text())
            config["environment_variables"] = {**(config.get("environment_variables") or {}), **EXAMPLE_ENV}
            (copy / "config.yaml").write_text(yaml.safe_dump(config))
            copies.append(copy)
        yield copies, env


@pytest.fixture(scope="module")
def swell(examples: tuple[list[Path], dict[str, str]], ray_cluster: RayCluster,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swell]:
    """``swell serve --backend ray`` on the cluster, with the examples' ``HF_ENDPOINT`` in its environment."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in examples[1].items():
            patch.setenv(name, value)
        process, server = start_server(tmp_path_factory.mktemp("swell-data-ray"),
                                       "--backend", "ray", "--ray-address", ray_cluster.address)
    server.backend, server.cluster = "ray", ray_cluster
    try:
        yield server
    finally:
        stop_server(process, server)


def _call(swell: Swell, pushed: dict[str, Any], name: str, example: Any) -> None:
    route = f"/model/{pushed['model_id']}/environments/production"
    if name in SOCKET_CHECKS:
        url = swell.url.replace("http://", "ws://", 1) + f"{route}/websocket"
        SOCKET_CHECKS[name](url, example, headers={"Authorization": f"Api-Key {KEY}"})
        return
    response = swell.http.post(f"{route}/predict", json=example, timeout=180)
    assert response.status_code == 200, f"{name}: {response.text}\n{swell.tail()}"
    CHECKS[name](response, example)


def test_every_example_serves_on_the_cluster_with_replicas_on_both_nodes(
    swell: Swell, ray_cluster: RayCluster, examples: tuple[list[Path], dict[str, str]]
) -> None:
    copies, _ = examples
    assert {c.name for c in copies} == set(CHECKS) | set(SOCKET_CHECKS)  # every example, none left out
    nodes: dict[str, set[str | None]] = {}
    active: list[dict[str, Any]] = []
    for copy in copies:
        example = load_truss_config(copy)["model_metadata"]["example_model_input"]
        pushed = swell.push(copy, name=copy.name, promote=True)
        active.append(pushed)
        # Held while active: capacity pressure never stops it to make room for the next example.
        assert swell.patch(pushed, min_replica=1).status_code == 200
        _call(swell, pushed, copy.name, example)
        replicas = swell.deployment(pushed)["replicas"]
        assert replicas, f"{copy.name}: no replica in the view after it answered"
        # The view names each replica's node (its address and Ray node id): one of the two workers.
        nodes[copy.name] = {ray_cluster.label_of(r["node"]) for r in replicas}
        assert nodes[copy.name] <= {"node_a", "node_b"}, (copy.name, replicas)
        if len(active) == WINDOW:  # done with the oldest: its CPU goes back to the cluster
            swell.settle(active.pop(0))
    print(f"examples' replicas by node: {nodes}")
    assert set().union(*nodes.values()) == {"node_a", "node_b"}, nodes
    for pushed in active:
        swell.settle(pushed)
