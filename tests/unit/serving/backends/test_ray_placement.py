"""The Ray backend's pure rules: resources as actor options, pending reasons, package archives."""

from __future__ import annotations

from pathlib import Path

import pytest

from swell.config import Resources
from swell.modelserver._node import cached, unpack
from swell.serving.backends.ray._package import pack
from swell.serving.backends.ray._placement import (
    NodeView,
    actor_options,
    death_message,
    free_by_node,
    job_env,
    node_label,
    pending_reason,
    resource_demand,
)

GIB = 1024**3


@pytest.mark.parametrize(
    ("written", "options"),
    [
        ({}, {"num_cpus": 1.0}),
        ({"cpu": "500m"}, {"num_cpus": 0.5}),
        ({"cpu": "2", "memory": "1Gi"}, {"num_cpus": 2.0, "memory": GIB}),
        ({"use_gpu": True}, {"num_cpus": 1.0, "num_gpus": 1}),
        ({"accelerator": "A10G:2"}, {"num_cpus": 1.0, "num_gpus": 2, "accelerator_type": "A10G"}),
    ],
)
def test_actor_options_follow_what_the_package_wrote(written: dict[str, object], options: dict[str, object]) -> None:
    assert actor_options(Resources(**written)) == options


def _node(total: dict[str, float], available: dict[str, float] | None = None, alive: bool = True) -> NodeView:
    return NodeView("ab" * 20, "10.0.0.7", alive, total, total if available is None else available)


@pytest.mark.parametrize(
    ("options", "nodes", "reason"),
    [
        ({"num_cpus": 1, "num_gpus": 1}, [_node({"CPU": 4})],
         "needs 1 GPU; no node of the cluster has any (waiting for a node that does to join)"),
        ({"num_cpus": 1, "num_gpus": 1}, [_node({"CPU": 4, "GPU": 1}, {"CPU": 4, "GPU": 0})],
         "needs 1 GPU; no node has one free"),
        ({"num_cpus": 8}, [_node({"CPU": 4})],
         "needs 8 CPU; no node of the cluster has that much (waiting for a node that does to join)"),
        ({"num_cpus": 2}, [_node({"CPU": 4}, {"CPU": 1})], "needs 2 CPU; no node has that much free"),
        ({"num_cpus": 1}, [_node({"CPU": 4}, alive=False)],
         "needs 1 CPU; the cluster has no live node (waiting for one to join)"),
        ({"num_cpus": 1, "memory": 2 * GIB}, [_node({"CPU": 1, "memory": 4 * GIB}, {"CPU": 0, "memory": 4 * GIB}),
                                              _node({"CPU": 1, "memory": 4 * GIB}, {"CPU": 1, "memory": GIB})],
         "needs 1 CPU, 2 GiB of memory; no single node has all of it free"),
        ({"num_cpus": 1}, [_node({"CPU": 4}, {"CPU": 3})], "waiting for Ray to place it (a node has 1 CPU free)"),
    ],
)
def test_pending_reason_says_what_is_missing(options: dict[str, object], nodes: list[NodeView], reason: str) -> None:
    assert pending_reason(options, nodes) == reason


def test_a_replica_on_a_node_gets_the_server_s_weights_sources_and_not_the_rest_of_its_environment() -> None:
    server = {
        "HF_ENDPOINT": "http://127.0.0.1:8766",  # the Hub mirror the weights come from
        "SWELL_WEIGHTS_PARALLEL": "4",
        "SWELL_WEIGHTS_CACHE": "/var/swell/weights",  # the node has its own cache
        "HF_TOKEN": "hf_secret",  # the server's credentials stay on the server
        "AWS_SECRET_ACCESS_KEY": "s3cret",
        "PATH": "/server/bin",
        "SWELL_API_KEY": "key",
    }
    package = {"MODE": "fast", "SWELL_WEIGHTS_PARALLEL": "2"}
    router = {"MODE": "router's"}
    assert job_env(server, package, router) == {
        "HF_ENDPOINT": "http://127.0.0.1:8766", "SWELL_WEIGHTS_PARALLEL": "2", "MODE": "router's",
    }


def test_a_lost_node_is_named_in_the_error() -> None:
    node = node_label("f" * 56, "10.0.0.7")
    assert node == "10.0.0.7 (node ffffffffffff)"
    message = death_message(node, "The actor died because its node has died. Node Id: ffff\n  details")
    assert message.startswith("the Ray node 10.0.0.7 (node ffffffffffff) was lost: The actor died")
    assert "\n" not in message
    assert death_message(node, "worker exited").startswith("its Ray actor on 10.0.0.7")


def test_package_archive_is_content_addressed_and_unpacked_once(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "model" / "__pycache__").mkdir(parents=True)
    (package / "config.yaml").write_text("model_name: x\n")
    (package / "model" / "model.py").write_text("class Model: ...\n")
    (package / "model" / "__pycache__" / "model.pyc").write_bytes(b"junk")
    digest, data = pack(package)
    (package / "model" / "model.py").touch()  # a new mtime: the same content, the same hash
    assert pack(package) == (digest, data)
    cache = tmp_path / "cache"
    assert cached(cache, digest) is None
    target = unpack(data, cache, digest)
    assert (target / "model" / "model.py").read_text() == "class Model: ...\n"
    assert not (target / "model" / "__pycache__").exists()
    assert cached(cache, digest) == target == unpack(data, cache, digest)
    with pytest.raises(ValueError, match="does not match"):
        unpack(data + b"x", cache, digest)


def test_capacity_pressure_sees_what_a_replica_holds_and_each_live_node_has_free_by_its_label() -> None:
    options = {**actor_options(Resources(cpu="2", memory="1Gi")), "resources": {"node_a": 1}}
    assert resource_demand(options) == {"CPU": 2.0, "memory": float(GIB), "node_a": 1.0}
    live = NodeView("cd" * 20, "10.0.0.8", True, {"CPU": 4.0}, {"CPU": 1.5})
    gone = NodeView("ef" * 20, "10.0.0.9", False, {"CPU": 4.0}, {"CPU": 4.0})
    assert free_by_node([live, gone]) == {node_label("cd" * 20, "10.0.0.8"): {"CPU": 1.5}}
