"""The Ray tests' cluster (a module of its own: test files must not import conftest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Settings every Ray process of these tests gets: no token auth (Ray 2.60
#: turns it on for a local ray.init), no usage reports.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
#: Notice a dead node in ~3 s instead of Ray's default ~30 s.
FAST_HEALTH_CHECKS = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000,
                      "health_check_failure_threshold": 3, "health_check_timeout_ms": 1000}


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
