"""The corked uvicorn protocol: a response in one write, nothing held past a loop step."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from swell.http import read_body
from swell.http._httptools import (
    FLUSH_AT,
    CorkedHttpToolsProtocol,
    CorkedTransport,
)


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False
        self.paused = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.events.append("write")

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def abort(self) -> None:
        self.closing = True
        self.events.append("abort")

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("1.2.3.4", 5)}.get(name, default)


async def _step() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_writes_of_one_step_leave_as_one_write_after_it() -> None:
    raw = FakeTransport()
    corked = CorkedTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    corked.write(b"HTTP/1.1 200 OK\r\n\r\n")
    corked.write(b"")
    corked.write(b"body")
    assert raw.writes == []
    assert corked.get_write_buffer_size() == 23
    await _step()
    assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    corked.write(b"next")
    await _step()
    assert raw.writes[1:] == [b"next"]


async def test_close_flushes_first_and_abort_drops() -> None:
    raw = FakeTransport()
    corked = CorkedTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    corked.write(b"last words")
    corked.close()
    assert raw.writes == [b"last words"] and raw.events == ["write", "close"]
    await _step()  # the scheduled flush finds nothing left
    assert raw.writes == [b"last words"]

    raw = FakeTransport()
    corked = CorkedTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    corked.write(b"never sent")
    corked.abort()
    await _step()
    assert raw.writes == [] and raw.events == ["abort"]


async def test_a_large_write_goes_out_at_once_and_a_closed_transport_gets_nothing() -> None:
    raw = FakeTransport()
    corked = CorkedTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    corked.write(b"head")
    corked.write(b"x" * FLUSH_AT)
    assert raw.writes == [b"head" + b"x" * FLUSH_AT]
    raw.closing = True
    corked.write(b"late")
    await _step()
    assert raw.writes == [b"head" + b"x" * FLUSH_AT]


async def test_the_rest_passes_through() -> None:
    raw = FakeTransport()
    corked = CorkedTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    corked.pause_reading()
    assert raw.paused
    corked.resume_reading()
    assert not raw.paused
    assert corked.get_extra_info("peername") == ("1.2.3.4", 5)
    assert corked.get_extra_info("nope", 7) == 7
    assert not corked.is_closing()


async def test_write_now_goes_out_at_once_after_what_the_step_wrote() -> None:
    raw = FakeTransport()
    corked = CorkedTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    corked.write_now(b"whole")
    assert raw.writes == [b"whole"]
    corked.write(b"head")
    corked.write_now(b"rest")
    assert raw.writes == [b"whole", b"headrest"]
    await _step()  # the flush scheduled by the first write finds nothing left
    assert raw.writes == [b"whole", b"headrest"]
    raw.closing = True
    corked.write_now(b"late")
    assert raw.writes == [b"whole", b"headrest"]


def test_every_transport_method_is_forwarded_by_name() -> None:
    # No __getattr__: it would make every attribute read on the transport a slow lookup.
    assert "__getattr__" not in vars(CorkedTransport)
    for name in dir(asyncio.Transport):
        if not name.startswith("_"):
            assert name in vars(CorkedTransport), name


# ------------------------------------------------------------------ under real uvicorn


_RELEASE: list[asyncio.Event] = []


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = await read_body(scope, receive)
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(3):
            await send({"type": "http.response.body", "body": b"chunk%d" % i, "more_body": True})
            if i == 0:
                await _RELEASE[0].wait()  # set by the test once it has read the first chunk
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def server() -> AsyncIterator[int]:
    _RELEASE[:] = [asyncio.Event()]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(_app, http=CorkedHttpToolsProtocol, lifespan="off", log_config=None,
                            access_log=False, loop="asyncio")
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve(sockets=[sock]))
    while not srv.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        srv.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        sock.close()


async def test_uvicorn_answers_kept_alive_requests_in_one_piece_each(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    for body in (b'{"a": 1}', b'{"b": 22}'):
        writer.write(b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"content-length: %d\r\n" % len(body) in head
        assert await asyncio.wait_for(reader.readexactly(len(body)), 5) == body
    writer.close()


async def test_a_stream_s_chunks_are_not_held_back(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b"transfer-encoding: chunked" in head
    # The app waits for us after its first chunk: were the chunk held until its
    # next write, this would never arrive.
    first = await asyncio.wait_for(reader.readuntil(b"chunk0\r\n"), 5)
    assert first.endswith(b"chunk0\r\n")
    _RELEASE[0].set()
    rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
    assert b"chunk1" in rest and b"chunk2" in rest
    writer.close()
