"""A real multi-node Ray cluster on this machine, inside a loopback-only network namespace.

Ray probes 8.8.8.8:53 for its address and listens on every interface: the
cluster, the Swell server and the test's own client all live in a fresh
network namespace that has only ``lo`` (the fixture's thread enters it and
every process it starts inherits it; the thread goes back to the machine's
namespace afterwards).  One cluster per module: Ray starts slowly.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "live"))  # swell_live: the live tests' helpers

from ray_live import RAY_ENV, RayCluster

_CLONE_NEWNET = 0x40000000


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
