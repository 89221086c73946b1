"""The packages in examples/ and how to check each one's answer, shared by the tests that
serve them: in a bare replica process (test_examples.py) and through ``swell serve
--backend ray`` on a two-node cluster (ray/test_ray_examples.py).

A module of its own (test files must not import each other).
"""

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
from swell.weights._testing import FileServer, HubServer, repos_from_folder

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PACKAGES = sorted(p.parent for p in EXAMPLES.glob("*/config.yaml"))
#: What the examples' replicas need in their environment for these tests (slow-load's weights: 2 MiB, not 64).
EXAMPLE_ENV = {"SWELL_EXAMPLE_WEIGHTS_MB": "2"}


def copy_example(package: Path, into: Path) -> Path:
    """A copy of an example to serve (loads may write under data/), without weights a load wrote."""
    copy = into / package.name
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("weights.bin*"))
    return copy


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


def check_websocket(url: str, example: Any, headers: dict[str, str] | None = None) -> None:
    """A websocket model: every example message answered on one socket, then ``bye`` closes it.
    ``headers``: the server's key, when the socket goes through ``swell serve``."""
    from websockets.exceptions import ConnectionClosedOK
    from websockets.sync.client import connect

    with connect(url, open_timeout=120, additional_headers=headers) as socket:
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
SOCKET_CHECKS: dict[str, Callable[..., None]] = {"websocket": check_websocket}


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
