"""Every package in examples/ loads and serves in a real replica process, so examples never rot.
(On a Ray cluster through ``swell serve``: ray/test_ray_examples.py.)"""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest
from examples_support import (
    CHECKS,
    EXAMPLE_ENV,
    PACKAGES,
    SOCKET_CHECKS,
    copy_example,
    serve_weights,
)

from swell.modelserver import load_truss_config
from swell.modelserver._testing import ReplicaProcess, free_port


def test_every_example_has_a_check_and_a_readme() -> None:
    assert {p.name for p in PACKAGES} == set(CHECKS) | set(SOCKET_CHECKS)
    for package in PACKAGES:
        assert (package / "model" / "model.py").is_file()
        assert (package / "README.md").is_file()
        assert load_truss_config(package)["model_name"] == package.name


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_example_serves(package: Path, tmp_path: Path) -> None:
    copy = copy_example(package, tmp_path)
    example = load_truss_config(copy)["model_metadata"]["example_model_input"]
    port = free_port()
    env = {**EXAMPLE_ENV, "SWELL_WEIGHTS_CACHE": str(tmp_path / "weights")}
    with contextlib.ExitStack() as stack:
        serve_weights(copy, stack, env)  # before the replica reads its config
        replica = stack.enter_context(ReplicaProcess(copy, port=port, env=env))
        replica.wait_ready(timeout=30)
        if package.name in SOCKET_CHECKS:
            SOCKET_CHECKS[package.name](f"ws://127.0.0.1:{port}/v1/websocket", example)
            assert replica.terminate() == 0
            return
        r = httpx.post(f"http://127.0.0.1:{port}/v1/models/{package.name}:predict", json=example, timeout=30)
        assert r.status_code == 200, r.text
        CHECKS[package.name](r, example)
        assert replica.terminate() == 0
