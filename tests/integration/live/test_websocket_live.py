"""Truss websocket models through a real ``swell serve``: a real ``websockets`` client on
Baseten's ``…/websocket`` routes, through the router to a replica process and back.

The socket wakes a deployment at zero, holds one replica slot while open (the
deployment's in-flight count, which the autoscaler reads), needs a key like
predict, closes with 1001 when its deployment is deactivated, with 1011 when its
replica dies, and a model without ``websocket`` answers with Truss's close reason.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from swell_live import KEY, Swell  # type: ignore[import-not-found]
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

# As a Truss user writes a websocket model: fastapi's WebSocket, Truss's method name.
ECHO_MODEL = '''
import fastapi


class Model:
    def __init__(self, **kwargs):
        pass

    async def websocket(self, websocket: fastapi.WebSocket):
        try:
            while True:
                message = await websocket.receive()
                if message.get("text") == "boom":
                    raise ValueError("the model failed")
                if message.get("text") == "bye":
                    return
                if message.get("bytes") is not None:
                    await websocket.send_bytes(message["bytes"][::-1])
                elif message.get("text") is not None:
                    await websocket.send_text("echo: " + message["text"])
                else:
                    return
        except fastapi.WebSocketDisconnect:
            pass
'''

MAX_MESSAGE = 100 << 20  # Truss's limit, on every hop

PREDICT_MODEL = '''
class Model:
    def predict(self, model_input):
        return {"predict": model_input}
'''


@pytest.fixture(scope="module")
def echo(swell: Swell, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("websocket-model")
    (root / "model").mkdir()
    (root / "model" / "model.py").write_text(ECHO_MODEL)
    (root / "config.yaml").write_text("model_name: websocket-echo\nruntime: {predict_concurrency: 2}\n")
    return swell.push(root, name="websocket-echo", publish=True, promote=True)


def _url(swell: Swell, route: str) -> str:
    return swell.url.replace("http://", "ws://", 1) + route


@contextmanager
def _socket(swell: Swell, route: str, key: str | None = KEY, scheme: str = "Api-Key") -> Iterator[ClientConnection]:
    headers = {"Authorization": f"{scheme} {key}"} if key else {}
    with connect(_url(swell, route), additional_headers=headers, open_timeout=120, close_timeout=10,
                 max_size=MAX_MESSAGE) as socket:
        yield socket


def _closed(socket: ClientConnection, timeout: float = 60) -> ConnectionClosed:
    """The close the server sends (waits for it, at most ``timeout`` s)."""
    try:
        while True:
            socket.recv(timeout=timeout)
    except ConnectionClosed as closed:
        return closed
    raise AssertionError("unreachable")


def _in_flight(swell: Swell, pushed: dict[str, Any], count: int, what: str) -> dict[str, Any]:
    return swell.wait_for(pushed, lambda v: v["in_flight"] == count, timeout=30, what=what)


def test_echo_wakes_a_deployment_scaled_to_zero(swell: Swell, make_model: Callable[..., Path]) -> None:
    cold = swell.push(make_model(ECHO_MODEL), name="websocket-cold", publish=False)  # development: min_replica 0
    assert swell.deployment(cold)["replicas"] == []
    with _socket(swell, f"/model/{cold['model_id']}/development/websocket") as socket:
        assert socket.response is not None and socket.response.headers.get("x-swell-cold-start-wait")
        socket.send("hello")
        assert socket.recv(timeout=30) == "echo: hello"
        socket.send(b"\x00\x01\x02")
        assert socket.recv(timeout=30) == b"\x02\x01\x00"
        big = bytes(range(256)) * (80 << 12)  # 20 MiB: over uvicorn's default 16 MiB, under Truss's 100 MiB
        socket.send(big)
        assert socket.recv(timeout=60) == big[::-1]
        # One slot of the replica's concurrency while open: the autoscaler sees it in flight.
        view = _in_flight(swell, cold, 1, "the open socket in flight")
        assert [r["in_flight"] for r in view["replicas"]] == [1]
        socket.send("bye")  # the model returns: Truss closes with 1000
        closed = _closed(socket)
        assert closed.rcvd is not None and closed.rcvd.code == 1000
    _in_flight(swell, cold, 0, "the closed socket out of flight")


def test_every_route_shape_and_its_key(swell: Swell, echo: dict[str, Any]) -> None:
    model, deployment = echo["model_id"], echo["deployment_id"]
    routes = (f"/model/{model}/environments/production/websocket", f"/model/{model}/deployment/{deployment}/websocket")
    for route in routes:
        for scheme in ("Api-Key", "Bearer"):
            with _socket(swell, route, scheme=scheme) as socket:
                socket.send(route)
                assert socket.recv(timeout=30) == "echo: " + route
    for key in (None, "not-a-key"):
        with pytest.raises(InvalidStatus) as refused:
            with _socket(swell, routes[0], key=key):
                pass
        assert refused.value.response.status_code == 401
        assert b"Api-Key" in (refused.value.response.body or b"")
    with pytest.raises(InvalidStatus) as missing:
        with _socket(swell, f"/model/{model}/environments/production/websocket/more"):
            pass
    assert missing.value.response.status_code == 404 and b"websocket route" in (missing.value.response.body or b"")
    with pytest.raises(InvalidStatus) as unknown:
        with _socket(swell, "/model/nosuchmodel/environments/production/websocket"):
            pass
    assert unknown.value.response.status_code == 404


def test_a_model_error_closes_1011_and_the_client_can_close_first(swell: Swell, echo: dict[str, Any]) -> None:
    route = f"/model/{echo['model_id']}/environments/production/websocket"
    with _socket(swell, route) as socket:
        socket.send("boom")
        closed = _closed(socket)
        assert closed.rcvd is not None and closed.rcvd.code == 1011
        assert closed.rcvd.reason == "Internal Server Error (in model/chainlet)."
    with _socket(swell, route) as socket:
        socket.send("x")
        assert socket.recv(timeout=30) == "echo: x"
    # the client's own close (leaving the block) gives the slot back
    _in_flight(swell, echo, 0, "closed sockets out of flight")


def test_a_predict_model_answers_with_a_close_reason(swell: Swell, make_model: Callable[..., Path]) -> None:
    pushed = swell.push(make_model(PREDICT_MODEL), name="websocket-none", publish=False)
    with _socket(swell, f"/model/{pushed['model_id']}/development/websocket") as socket:
        closed = _closed(socket)
    assert closed.rcvd is not None and closed.rcvd.code == 1003
    assert "WebSocket is not implemented" in closed.rcvd.reason and "websocket" in closed.rcvd.reason
    _in_flight(swell, pushed, 0, "the refused socket out of flight")


def test_deactivating_closes_the_socket_with_1001(swell: Swell, make_model: Callable[..., Path]) -> None:
    pushed = swell.push(make_model(ECHO_MODEL), name="websocket-drain")
    base = f"/v1/models/{pushed['model_id']}/deployments/{pushed['deployment_id']}"
    with _socket(swell, f"/model/{pushed['model_id']}/deployment/{pushed['deployment_id']}/websocket") as socket:
        socket.send("before")
        assert socket.recv(timeout=30) == "echo: before"
        assert swell.http.post(f"{base}/deactivate").json()["status"] == "Inactive"
        socket.send("during the grace")  # the replica drains: the socket still works for the grace
        assert socket.recv(timeout=30) == "echo: during the grace"
        closed = _closed(socket, timeout=60)  # after the server's drain grace (5 s here)
    assert closed.rcvd is not None and closed.rcvd.code == 1001 and "draining" in closed.rcvd.reason
    swell.wait_for(pushed, lambda v: v["replicas"] == [] and v["in_flight"] == 0, what="the replica stopped")


def test_a_replica_that_dies_closes_the_socket_with_1011(swell: Swell, make_model: Callable[..., Path]) -> None:
    pushed = swell.push(make_model(ECHO_MODEL), name="websocket-crash", publish=False)
    with _socket(swell, f"/model/{pushed['model_id']}/development/websocket") as socket:
        socket.send("up")
        assert socket.recv(timeout=30) == "echo: up"
        pid = swell.deployment(pushed)["replicas"][0]["pid"]
        os.kill(pid, signal.SIGKILL)
        closed = _closed(socket)
    assert closed.rcvd is not None and closed.rcvd.code == 1011 and "failed" in closed.rcvd.reason
    _in_flight(swell, pushed, 0, "the dropped socket out of flight")


def test_the_autoscaler_counts_an_open_socket(swell: Swell, make_model: Callable[..., Path]) -> None:
    pushed = swell.push(make_model(ECHO_MODEL), name="websocket-scaled")
    settings = {"min_replica": 0, "scale_down_delay": 0, "concurrency_target": 1, "autoscaling_window": 10}
    assert swell.patch(pushed, **settings).status_code == 200
    route = f"/model/{pushed['model_id']}/deployment/{pushed['deployment_id']}/websocket"
    with _socket(swell, route) as socket:
        socket.send("held")
        assert socket.recv(timeout=30) == "echo: held"
        # The rule's own reading of the deployment: one request in flight, one replica kept.
        view = swell.wait_for(
            pushed, lambda v: (v["last_decision"] or {}).get("average_concurrency", 0) >= 0.99, what="the rule seeing it"
        )
        assert view["last_decision"]["target"] == 1 and len(view["replicas"]) == 1
        socket.send("still here")
        assert socket.recv(timeout=30) == "echo: still here"
    swell.wait_for(pushed, lambda v: v["replicas"] == [], what="scale to zero once the socket closed")
