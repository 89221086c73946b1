"""Every package in examples/ loads and serves in a real replica process, so examples never rot."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from swell.modelserver import load_truss_config
from swell.modelserver._testing import ReplicaProcess, free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PACKAGES = sorted(p.parent for p in EXAMPLES.glob("*/config.yaml"))


def check_echo(r: httpx.Response, example: Any) -> None:
    assert r.json() == {"echo": example}


def check_iris(r: httpx.Response, example: Any) -> None:
    body = r.json()
    assert body["predictions"] == ["setosa", "virginica"]
    assert len(body["probabilities"]) == 2
    assert all(abs(sum(p) - 1) < 1e-3 and max(p) > 0.8 for p in body["probabilities"])


def check_slow_load(r: httpx.Response, example: Any) -> None:
    body = r.json()
    assert body["weights_mb"] == 2 and len(body["weights_sha256"]) == 64
    assert body["input"] == example


def check_stream(r: httpx.Response, example: Any) -> None:
    assert r.headers["content-type"] == "application/octet-stream"
    assert len(r.text.split()) == example["max_tokens"]


CHECKS: dict[str, Callable[[httpx.Response, Any], None]] = {
    "echo": check_echo, "iris": check_iris, "slow-load": check_slow_load, "stream": check_stream,
}


def test_every_example_has_a_check_and_a_readme() -> None:
    assert {p.name for p in PACKAGES} == set(CHECKS)
    for package in PACKAGES:
        assert (package / "model" / "model.py").is_file()
        assert (package / "README.md").is_file()
        assert load_truss_config(package)["model_name"] == package.name


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_example_serves(package: Path, tmp_path: Path) -> None:
    copy = tmp_path / package.name  # a copy: loads may write under data/
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("weights.bin*"))
    example = load_truss_config(copy)["model_metadata"]["example_model_input"]
    port = free_port()
    with ReplicaProcess(copy, port=port, env={"SWELL_EXAMPLE_WEIGHTS_MB": "2"}) as replica:
        replica.wait_ready(timeout=30)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/models/{package.name}:predict", json=example, timeout=30)
        assert r.status_code == 200, r.text
        CHECKS[package.name](r, example)
        assert replica.terminate() == 0
