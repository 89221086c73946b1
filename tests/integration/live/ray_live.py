"""A real multi-node Ray cluster on this machine, inside a loopback-only network
namespace, for the tests that run ``swell serve --backend ray`` (the live
serving suite's Ray leg and tests/integration/ray).

Ray probes 8.8.8.8:53 for its address and listens on every interface: the
cluster, the Swell server and the test's own client all live in a fresh
network namespace that has only ``lo`` (the fixture's thread enters it and
every process it starts inherits it; the thread goes back to the machine's
namespace afterwards).  One cluster per module: Ray starts slowly.

A module of its own (test files must not import conftest); the conftests
import its fixtures.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: Settings every Ray process of these tests gets: no token auth (Ray 2.60
#: turns it on for a local ray.init), no usage reports.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
#: Notice a dead node in ~3 s instead of Ray's default ~30 s.
FAST_HEALTH_CHECKS = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000,
                      "health_check_failure_threshold": 3, "health_check_timeout_ms": 1000}
_CLONE_NEWNET = 0x40000000


def require_ray() -> None:
    """Skip without Ray; in CI (``SWELL_REQUIRE_RAY=1``) a missing Ray fails instead."""
    if os.environ.get("SWELL_REQUIRE_RAY") == "1":
        import ray  # noqa: F401
    else:
        pytest.importorskip("ray", reason="ray cannot be imported; pip install -e '.[test]' installs it")


class RayCluster:
    """A head (no CPU: the Swell server's machine) and worker nodes with labels."""

    def __init__(self, cache: Path) -> None:
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False,
                            "_system_config": FAST_HEALTH_CHECKS},
        )
        self.address = self.cluster.address
        self.cache = cache
        self.workers: dict[str, Any] = {}

    def add_worker(self, label: str, **resources: Any) -> Any:
        """A worker node with ``{label: 100}`` as its own custom resource."""
        node = self.cluster.add_node(
            node_ip_address="127.0.0.1", resources={label: 100}, **{"num_cpus": 2, **resources}
        )
        self.workers[label] = node
        return node

    def label_of(self, node_text: str | None) -> str | None:
        """Which worker a replica's ``node`` (the deployment view) names."""
        for label, node in self.workers.items():
            if node_text and node.node_id[:12] in node_text:
                return label
        return None

    def remove_worker(self, label: str) -> None:
        """Take a worker node out of the cluster (its processes stop)."""
        self.cluster.remove_node(self.workers.pop(label))

    def kill_raylet(self, label: str) -> None:
        """SIGKILL the node's raylet: the node is lost, as if its machine died."""
        node = self.workers.pop(label)
        for process in node.all_processes["raylet"]:
            process.process.kill()

    def shutdown(self) -> None:
        self.cluster.shutdown()


@pytest.fixture(scope="module")
def loopback_namespace() -> Iterator[None]:
    """This thread (and all it starts) in a new network namespace with only ``lo`` up."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(_CLONE_NEWNET) != 0:
            pytest.fail(f"unshare(CLONE_NEWNET) failed ({os.strerror(ctypes.get_errno())}): the Ray tests "
                        "need root (or CAP_SYS_ADMIN) to run Ray in a loopback-only namespace")
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        yield
    finally:
        if libc.setns(home, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "could not return to the machine's network namespace")
        os.close(home)


@pytest.fixture(scope="module")
def ray_cluster(loopback_namespace: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """A head and two workers (``node_a``, ``node_b``, 2 CPUs each) for one test module."""
    require_ray()
    saved = {k: os.environ.get(k) for k in (*RAY_ENV, "SWELL_RAY_CACHE")}
    cache = tmp_path_factory.mktemp("ray-node-cache")
    os.environ.update({**RAY_ENV, "SWELL_RAY_CACHE": str(cache)})
    cluster = RayCluster(cache)
    try:
        cluster.add_worker("node_a")
        cluster.add_worker("node_b")
        cluster.cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
