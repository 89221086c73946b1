"""A websocket through the router, with a fake replica leg: the slot it holds, the closes it
passes on, the 1001 of a draining replica and the 1011 of a dead one, the refusals."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from test_router import make_router, ready, settle, supervisor  # type: ignore[import-not-found]
from websockets.protocol import State

from swell.autoscaling import VirtualClock
from swell.serving import DeploymentRouter
from swell.serving import _websocket as websocket_module
from swell.serving._websocket import OpenSockets, ReplicaRefused, close_reason, sendable

_END = object()
SCOPE = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b"q=1", "subprotocols": [],
         "extensions": {"websocket.http.response": {}}}


class FakeUpstream:
    """The replica's end of the socket: echoes what it is sent."""

    def __init__(self) -> None:
        self.subprotocol = None
        self.state = State.OPEN
        self.protocol = SimpleNamespace(close_rcvd=None)
        self.transport = SimpleNamespace(abort=self._abort)
        self.closed_with: tuple[int, str] | None = None
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()

    def _abort(self) -> None:
        self.state = State.CLOSED
        self._inbox.put_nowait(_END)

    async def send(self, message: str | bytes) -> None:
        self._inbox.put_nowait(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed_with is None:
            self.closed_with = (code, reason)
        self._abort()

    def __aiter__(self) -> FakeUpstream:
        return self

    async def __anext__(self) -> str | bytes:
        message = await self._inbox.get()
        if message is _END:
            raise StopAsyncIteration
        return message  # type: ignore[no-any-return]

    def replica_closes(self, code: int, reason: str) -> None:
        self.protocol.close_rcvd = SimpleNamespace(code=code, reason=reason)
        self._abort()


class Caller:
    """The caller's side: ASGI receive and send."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "websocket.close":
            self.inbox.put_nowait({"type": "websocket.disconnect", "code": message["code"]})

    def last(self) -> dict[str, Any]:
        return self.sent[-1]


@pytest.fixture
def upstream(monkeypatch: pytest.MonkeyPatch) -> FakeUpstream:
    fake = FakeUpstream()
    opened: list[tuple[str, str]] = []

    async def open_replica_socket(replica: Any, target: str, headers: Any, subprotocols: Any) -> FakeUpstream:
        opened.append((replica.id, target))
        return fake

    monkeypatch.setattr(websocket_module, "open_replica_socket", open_replica_socket)
    fake.opened = opened  # type: ignore[attr-defined]
    return fake


async def _open(router: DeploymentRouter, caller: Caller) -> asyncio.Task[None]:
    task = asyncio.ensure_future(router.websocket(SCOPE, caller.inbox.get, caller.send, None))
    await settle()
    return task


async def test_an_open_socket_holds_one_slot_and_frames_go_both_ways(upstream: FakeUpstream) -> None:
    router = make_router(VirtualClock())
    ready(router, "a")
    caller = Caller()
    task = await _open(router, caller)
    assert caller.sent[0]["type"] == "websocket.accept"
    assert upstream.opened == [("a", "/v1/websocket?q=1")]  # type: ignore[attr-defined]
    assert router.in_flight == 1 and router.handles["a"].in_flight == 1
    caller.inbox.put_nowait({"type": "websocket.receive", "text": "hi"})
    caller.inbox.put_nowait({"type": "websocket.receive", "bytes": b"\x01"})
    await settle()
    assert caller.sent[1:] == [{"type": "websocket.send", "text": "hi"}, {"type": "websocket.send", "bytes": b"\x01"}]
    caller.inbox.put_nowait({"type": "websocket.disconnect", "code": 1006})  # abnormal: no code a frame can carry
    await asyncio.wait_for(task, 5)
    assert upstream.closed_with == (1000, "") and router.in_flight == 0 and router.responses == {101: 1}


async def test_the_replica_close_passes_on_and_a_dead_replica_is_1011(upstream: FakeUpstream) -> None:
    for closes, expected in ((True, (4000, "done")), (False, (1011, "replica a failed"))):
        router = make_router(VirtualClock())
        ready(router, "a")
        caller = Caller()
        upstream.__init__()  # type: ignore[misc]
        task = await _open(router, caller)
        if closes:
            upstream.replica_closes(4000, "done")
        else:
            upstream._abort()  # the connection went without a close frame
        await asyncio.wait_for(task, 5)
        assert (caller.last()["type"], caller.last()["code"], caller.last()["reason"]) == ("websocket.close", *expected)
        assert router.in_flight == 0


async def test_a_draining_replica_closes_its_sockets_1001_after_the_grace(upstream: FakeUpstream) -> None:
    router = make_router(VirtualClock())
    router.drain_grace = 0.0
    ready(router, "a")
    handle = router.handles["a"]
    caller = Caller()
    task = await _open(router, caller)
    assert router.drain(handle) is False  # the open socket is in flight
    await asyncio.wait_for(task, 5)
    close = caller.last()
    assert (close["type"], close["code"], close["reason"]) == ("websocket.close", 1001, "replica a is draining")
    assert upstream.closed_with == (1001, "replica a is draining")
    assert supervisor(router).drained_ids == ["a"]  # now it may stop


async def test_undrained_replica_keeps_its_sockets() -> None:
    closed: list[tuple[int, str]] = []

    class Session:
        def close(self, code: int, reason: str) -> None:
            closed.append((code, reason))

    session = Session()
    sockets = OpenSockets()
    sockets.sessions.add(session)  # type: ignore[arg-type]
    sockets.going_away(0.0, "draining")
    sockets.staying()
    await settle()
    assert closed == []
    sockets.going_away(0.0, "draining")
    await settle()
    assert closed == [(1001, "draining")]


async def test_refusals_are_the_handshake_answer(upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    router = make_router(VirtualClock())
    supervisor(router).unavailable = "the model failed to load: boom"
    caller = Caller()
    await asyncio.wait_for(router.websocket(SCOPE, caller.inbox.get, caller.send, None), 5)
    assert caller.sent[0]["type"] == "websocket.http.response.start" and caller.sent[0]["status"] == 503
    assert json.loads(caller.sent[1]["body"])["reason"] == "the model failed to load: boom"

    async def refuse(*args: Any) -> None:
        raise ReplicaRefused(404, b'{"detail":"Not Found"}')

    monkeypatch.setattr(websocket_module, "open_replica_socket", refuse)
    ready(router, "a")
    caller = Caller()
    await asyncio.wait_for(router.websocket(SCOPE, caller.inbox.get, caller.send, None), 5)
    assert [m.get("status") for m in caller.sent] == [404, None] and router.in_flight == 0


@pytest.mark.parametrize(("code", "sent"), [(1000, 1000), (1001, 1001), (1011, 1011), (4321, 4321),
                                            (1005, 1000), (1006, 1000), (1015, 1000), (2000, 1000)])
def test_only_codes_a_close_frame_may_carry_are_sent(code: int, sent: int) -> None:
    assert sendable(code) == sent


def test_a_close_reason_fits_a_frame() -> None:
    assert close_reason("short") == "short"
    long = close_reason("é" * 100)
    assert len(long.encode()) <= 123 and long.endswith("...")


async def test_a_caller_that_hangs_up_while_queued_leaves_the_queue(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    from swell.serving import _router

    monkeypatch.setattr(_router, "_WATCH_AFTER", 0.0)
    router = make_router(VirtualClock())  # no replica: the handshake waits
    caller = Caller()
    caller.inbox.put_nowait({"type": "websocket.connect"})
    task = asyncio.ensure_future(router.websocket(SCOPE, caller.inbox.get, caller.send, None))
    await settle()
    assert router.queued == 1 and supervisor(router).woken == [0]
    caller.inbox.put_nowait({"type": "websocket.disconnect", "code": 1006})
    await asyncio.wait_for(task, 5)
    assert router.queued == 0 and caller.sent == [] and router.responses == {499: 1}
    ready(router, "a")
    assert router.in_flight == 0 and upstream.opened == []  # type: ignore[attr-defined]
