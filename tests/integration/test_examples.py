"""Every package in examples/ loads and serves in a real replica process, so examples never rot."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from swell.modelserver import load_truss_config
from swell.modelserver._testing import ReplicaProcess, free_port
from swell.weights._testing import FileServer, HubServer, repos_from_folder

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


def check_hf_weights(r: httpx.Response, example: Any) -> None:
    body = r.json()
    assert body["labels"][0] == "setosa" and len(body["scores"]) == len(example["inputs"])
    assert body["files"] == ["config.json", "mlp.npy"]  # README.md is in ignore_patterns


def check_weights(r: httpx.Response, example: Any) -> None:
    body = r.json()
    assert body["weights_sha256"] == load_truss_config(EXAMPLES / "weights")["weights"][0]["sha256"]
    assert [len(row) for row in body["scores"]] == [3] * len(example["inputs"])


def check_websocket(url: str, example: Any) -> None:
    """A websocket model: every example message answered on one socket, then ``bye`` closes it."""
    from websockets.exceptions import ConnectionClosedOK
    from websockets.sync.client import connect

    with connect(url, open_timeout=30) as socket:
        for n, text in enumerate(example, 1):
            socket.send(text)
            assert json.loads(socket.recv(timeout=30)) == {"echo": text, "words": len(text.split()), "said": n}
        socket.send("bye")
        with pytest.raises(ConnectionClosedOK):
            socket.recv(timeout=30)


CHECKS: dict[str, Callable[[httpx.Response, Any], None]] = {
    "echo": check_echo, "iris": check_iris, "slow-load": check_slow_load, "stream": check_stream,
    "weights": check_weights, "hf-weights": check_hf_weights,
}
# Examples spoken to over a websocket (Truss's WS /v1/websocket) instead of predict.
SOCKET_CHECKS: dict[str, Callable[[str, Any], None]] = {"websocket": check_websocket}


def serve_weights(package: Path, stack: contextlib.ExitStack, env: dict[str, str]) -> None:
    """An example with ``files/`` fetches its weights from them: serve them, point the config there.
    One with ``hub/`` (Hugging Face repos) has them served by a local Hub at ``HF_ENDPOINT``."""
    if (package / "hub").is_dir():
        env["HF_ENDPOINT"] = stack.enter_context(HubServer(repos_from_folder(package / "hub"))).endpoint
    files = package / "files"
    if not files.is_dir():
        return
    server = stack.enter_context(FileServer({p.name: p for p in files.iterdir()}))
    config = yaml.safe_load((package / "config.yaml").read_text())
    for entry in config.get("weights") or []:
        entry["source"] = server.url(entry["source"].rsplit("/", 1)[-1])
    (package / "config.yaml").write_text(yaml.safe_dump(config))


def test_every_example_has_a_check_and_a_readme() -> None:
    assert {p.name for p in PACKAGES} == set(CHECKS) | set(SOCKET_CHECKS)
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
    env = {"SWELL_EXAMPLE_WEIGHTS_MB": "2", "SWELL_WEIGHTS_CACHE": str(tmp_path / "weights")}
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
