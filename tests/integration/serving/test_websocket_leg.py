"""The router's leg of a websocket: ``open_replica_socket`` against a real replica process,
on a Unix socket (the process backend) and on a TCP port behind the replica token (the
Ray backend's way), and the replica's own answers (Truss's ``WS /v1/websocket``)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from swell.modelserver._testing import ReplicaProcess, free_port
from swell.serving import Replica
from swell.serving._websocket import ReplicaRefused, open_replica_socket

ECHO = '''
from fastapi import WebSocket


class Model:
    async def websocket(self, websocket: WebSocket):
        greeting = websocket.query_params.get("greeting", "echo")
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(f"{greeting}: {text} ({websocket.headers.get('x-caller', '-')})")
'''


def _package(root: Path, model: str) -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.py").write_text(textwrap.dedent(model))
    (root / "config.yaml").write_text("model_name: leg\n")
    return root


@pytest.fixture
def echo_dir(tmp_path: Path) -> Path:
    return _package(tmp_path / "echo", ECHO)


async def test_unix_socket_leg_passes_query_and_headers(echo_dir: Path) -> None:
    process = ReplicaProcess(echo_dir)
    try:
        process.wait_ready()
        replica = Replica("r-1", "d-1", address=f"unix:{process.uds}")
        headers = [(b"x-caller", b"tester"), (b"authorization", b"Api-Key secret"), (b"host", b"front")]
        upstream = await open_replica_socket(replica, "/v1/websocket?greeting=hi", headers, [])
        await upstream.send("one")
        assert await upstream.recv() == "hi: one (tester)"
        await upstream.close()
    finally:
        process.close()


async def test_tcp_leg_needs_the_replica_token(echo_dir: Path) -> None:
    port = free_port()
    process = ReplicaProcess(echo_dir, port=port, env={"SWELL_REPLICA_TOKEN": "t0ken"})
    try:
        process.wait_ready()
        address = f"http://127.0.0.1:{port}"
        upstream = await open_replica_socket(Replica("r-1", "d-1", address=address, token="t0ken"), "/v1/websocket", [], [])
        await upstream.send("two")
        assert await upstream.recv() == "echo: two (-)"
        await upstream.close()
        with pytest.raises(ReplicaRefused) as refused:
            await open_replica_socket(Replica("r-1", "d-1", address=address, token="wrong"), "/v1/websocket", [], [])
        assert refused.value.status == 401
    finally:
        process.close()


async def test_the_replica_refuses_what_it_cannot_serve(tmp_path: Path) -> None:
    process = ReplicaProcess(_package(tmp_path / "predict", "class Model:\n    def predict(self, x):\n        return x\n"))
    try:
        process.wait_ready()
        replica = Replica("r-1", "d-1", address=f"unix:{process.uds}")
        with pytest.raises(ReplicaRefused) as refused:
            await open_replica_socket(replica, "/v1/elsewhere", [], [])
        assert refused.value.status == 404
        upstream = await open_replica_socket(replica, "/v1/websocket", [], [])  # Truss accepts, then says why
        with pytest.raises(ConnectionClosed):
            await upstream.recv()
        assert upstream.close_code == 1003 and "WebSocket is not implemented" in (upstream.close_reason or "")
    finally:
        process.close()
    gone = Replica("r-2", "d-1", address=f"unix:{tmp_path}/no-such.sock")
    with pytest.raises(ReplicaRefused) as failed:
        await open_replica_socket(gone, "/v1/websocket", [], [])
    assert failed.value.status == 502 and b"r-2" in failed.value.body
