"""The UDS hop's client against a tiny in-process HTTP server on a Unix socket."""

from __future__ import annotations

import asyncio
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from swell.serving import ReplicaGone, ReplicaPool

Handler = Callable[[bytes], list[Any]]


class Server:
    """Reads one request at a time; answers with the handler's byte pieces.

    A piece that is an :class:`asyncio.Event` is waited for (the model still
    working); ``None`` drops the connection there (the replica dies).
    """

    def __init__(self, path: Path, handler: Handler, close_after: int | None = None) -> None:
        self.path = path
        self.handler = handler
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, str(self.path))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.requests.append(body)
                for piece in self.handler(body):
                    if isinstance(piece, asyncio.Event):
                        await piece.wait()
                        continue
                    if piece is None:
                        writer.close()
                        return
                    writer.write(piece)
                    await writer.drain()
                served += 1
                if self.close_after is not None and served >= self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def sock_dir() -> AsyncIterator[Path]:
    with tempfile.TemporaryDirectory(prefix="swt-") as tmp:  # short: AF_UNIX paths are limited
        yield Path(tmp)


def echo(body: bytes) -> list[bytes]:
    return [b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body), body]


HEAD = b"POST /v1/models/model:predict HTTP/1.1\r\nhost: r\r\ncontent-length: %d\r\n\r\n"


async def test_content_length_response_and_keep_alive(sock_dir: Path) -> None:
    server = Server(sock_dir / "r.sock", echo)
    await server.start()
    pool = ReplicaPool(f"unix:{server.path}")
    for i in range(5):
        body = b'{"i": %d}' % i
        response = await pool.request(HEAD % len(body), body)
        assert response.status == 200 and not response.chunked
        assert await response.body() == body
        assert (b"content-type", b"application/json") in response.headers
    assert server.connections == 1
    pool.close()
    await server.close()


async def test_chunked_response_streams_piece_by_piece(sock_dir: Path) -> None:
    def stream(_body: bytes) -> list[bytes]:
        return [
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n",
            b"5\r\nhello\r\n",
            b"6\r\n world\r\n",
            b"0\r\n\r\n",
        ]

    server = Server(sock_dir / "r.sock", stream)
    await server.start()
    pool = ReplicaPool(f"unix:{server.path}")
    response = await pool.request(HEAD % 0, b"")
    assert response.chunked
    chunks = []
    while (chunk := await response.next_chunk()) is not None:
        chunks.append(chunk)
    assert b"".join(chunks) == b"hello world"
    # the connection is reused after a streamed answer too
    response = await pool.request(HEAD % 0, b"")
    while await response.next_chunk() is not None:
        pass
    assert server.connections == 1
    pool.close()
    await server.close()


async def test_reconnects_when_the_replica_closed_an_idle_connection(sock_dir: Path) -> None:
    server = Server(sock_dir / "r.sock", echo, close_after=1)
    await server.start()
    pool = ReplicaPool(f"unix:{server.path}")
    for i in range(3):
        response = await pool.request(HEAD % 1, b"x")
        assert await response.body() == b"x"
        await asyncio.sleep(0)  # let the close arrive (or not): both must work
    assert server.connections == 3
    pool.close()
    await server.close()


async def test_refused_connection_is_replica_gone(sock_dir: Path) -> None:
    pool = ReplicaPool(f"unix:{sock_dir / 'missing.sock'}")
    with pytest.raises(ReplicaGone) as info:
        await pool.request(HEAD % 0, b"")
    assert not info.value.sent  # never reached a replica: safe to send elsewhere


async def test_eof_before_answer_is_replica_gone(sock_dir: Path) -> None:
    server = Server(sock_dir / "r.sock", lambda body: [], close_after=1)
    await server.start()
    pool = ReplicaPool(f"unix:{server.path}")
    with pytest.raises(ReplicaGone) as info:
        await pool.request(HEAD % 1, b"x")
    assert info.value.sent  # the replica read it: it may have run
    pool.close()
    await server.close()


async def test_replica_dying_on_a_reused_connection_may_have_run_it(sock_dir: Path) -> None:
    # The pool tries a fresh connection once when a kept-alive one fails
    # without an answer; that one is refused (the replica is gone), but the
    # first try reached it: the error must not say "never sent".
    path = sock_dir / "r.sock"
    served = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.readexactly(int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]))
            served += 1
            if served == 2:  # dies on the second request, and its socket with it
                server.close()
                path.unlink()
                writer.close()
                return
            for piece in echo(body):
                writer.write(piece)

    server = await asyncio.start_unix_server(serve, str(path))
    pool = ReplicaPool(f"unix:{path}")
    response = await pool.request(HEAD % 1, b"a")
    assert await response.body() == b"a"
    with pytest.raises(ReplicaGone) as info:
        await pool.request(HEAD % 1, b"b")
    assert info.value.sent and served == 2
    pool.close()


async def test_write_refused_by_a_closed_replica_is_never_sent(sock_dir: Path) -> None:
    # The replica closed its end (killed) before the router's loop noticed:
    # the kernel refuses the write (EPIPE), so the request never reached it.
    path = sock_dir / "r.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    listener.setblocking(False)
    pool = ReplicaPool(f"unix:{path}")
    first = asyncio.create_task(pool.request(HEAD % 1, b"a"))
    for _ in range(20):
        await asyncio.sleep(0)
    peer, _ = listener.accept()
    peer.setblocking(True)
    assert peer.recv(4096).endswith(b"a")
    peer.sendall(b"".join(echo(b"a")))
    response = await first
    assert await response.body() == b"a"  # the connection is back in the pool
    peer.close()
    listener.close()  # no loop iteration since: the pooled connection looks open
    with pytest.raises(ReplicaGone) as info:
        await pool.request(HEAD % 1, b"b")
    assert not info.value.sent
    pool.close()


async def test_large_body_is_sent_whole(sock_dir: Path) -> None:
    server = Server(sock_dir / "r.sock", echo)
    await server.start()
    pool = ReplicaPool(f"unix:{server.path}")
    body = b"a" * 300_000
    response = await pool.request(HEAD % len(body), body)
    assert await response.body() == body
    pool.close()
    await server.close()


async def test_abort_after_the_stream_ended_keeps_the_pooled_connection(sock_dir: Path) -> None:
    # The router aborts when its caller goes away, possibly after the replica
    # finished the stream; by then the connection is back in the pool (maybe
    # carrying another request), so abort must leave it alone.
    def stream(_body: bytes) -> list[bytes]:
        return [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", b"5\r\nhello\r\n", b"0\r\n\r\n"]

    server = Server(sock_dir / "r.sock", stream)
    await server.start()
    pool = ReplicaPool(f"unix:{server.path}")
    response = await pool.request(HEAD % 0, b"")
    async with asyncio.timeout(5):
        while not response.complete:
            await asyncio.sleep(0)
    response.abort()  # the caller hung up before reading the buffered chunk
    again = await pool.request(HEAD % 0, b"")
    async with asyncio.timeout(5):
        while await again.next_chunk() is not None:
            pass
    assert server.connections == 1
    pool.close()
    await server.close()


class Abandoned:
    """An ``on_abandon`` hook that remembers how each abandoned exchange ended."""

    def __init__(self) -> None:
        self.ended: list[BaseException | None] = []
        self.event = asyncio.Event()

    def __call__(self, error: BaseException | None) -> None:
        self.ended.append(error)
        self.event.set()

    async def wait(self) -> None:
        async with asyncio.timeout(5):
            await self.event.wait()


async def _given_up(pool: ReplicaPool, body: bytes) -> None:
    """A caller that gives up while the replica still works on its request."""
    request = asyncio.ensure_future(pool.request(HEAD % len(body), body))
    for _ in range(50):  # until the request is on the wire
        await asyncio.sleep(0)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request


async def test_an_abandoned_answer_is_read_to_its_end_and_the_connection_kept(sock_dir: Path) -> None:
    working = asyncio.Event()
    server = Server(sock_dir / "r.sock", lambda body: [working, *echo(body)])
    await server.start()
    pool = ReplicaPool(f"unix:{server.path}")
    pool.on_abandon = abandoned = Abandoned()
    await _given_up(pool, b"x")
    assert abandoned.ended == []  # the replica is still working: its slot is still taken
    working.set()
    await abandoned.wait()
    assert abandoned.ended == [None]
    response = await pool.request(HEAD % 1, b"y")  # on the same, kept connection
    assert await response.body() == b"y" and server.connections == 1
    pool.close()
    await server.close()


async def test_an_abandoned_exchange_whose_replica_dies_reports_it(sock_dir: Path) -> None:
    working = asyncio.Event()
    server = Server(sock_dir / "r.sock", lambda body: [working, None])
    await server.start()
    pool = ReplicaPool(f"unix:{server.path}")
    pool.on_abandon = abandoned = Abandoned()
    await _given_up(pool, b"x")
    working.set()
    await abandoned.wait()
    assert len(abandoned.ended) == 1 and isinstance(abandoned.ended[0], ReplicaGone)
    pool.close()
    await server.close()


async def test_an_abandoned_stream_is_cut_once_its_headers_say_so(sock_dir: Path) -> None:
    working, more = asyncio.Event(), asyncio.Event()

    def stream(_body: bytes) -> list[Any]:
        return [working, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", b"5\r\nhello\r\n", more]

    server = Server(sock_dir / "r.sock", stream)
    await server.start()
    pool = ReplicaPool(f"unix:{server.path}")
    pool.on_abandon = abandoned = Abandoned()
    await _given_up(pool, b"")
    working.set()  # the head arrives: a stream, which nobody will read
    await abandoned.wait()
    assert abandoned.ended == [None]
    more.set()
    pool.close()
    await server.close()


async def test_without_a_hook_an_abandoned_connection_is_closed(sock_dir: Path) -> None:
    working = asyncio.Event()
    server = Server(sock_dir / "r.sock", lambda body: [working, *echo(body)])
    await server.start()
    pool = ReplicaPool(f"unix:{server.path}")
    await _given_up(pool, b"x")
    working.set()
    response = await pool.request(HEAD % 1, b"y")
    assert await response.body() == b"y" and server.connections == 2
    pool.close()
    await server.close()
