"""A minimal HTTP/1.1 client for the router → replica hop, over a Unix socket (or TCP).

httpx costs more per request than the whole rest of the router, so the hop is
an asyncio protocol and ``httptools``' response parser: one ``write`` of the
request, the body gathered (content-length) or handed on chunk by chunk
(chunked), and the connection returned to a small per-replica pool.

A failure before any byte of the response is a :class:`ReplicaGone`: the caller
may send the request elsewhere.  A reused connection that the replica had
already closed (its keep-alive timeout) is retried once on a fresh one here,
without the caller noticing.

A caller that gives up (its timeout, a hang-up) does not end the exchange: the
replica is still working on the request.  The pool's ``on_abandon`` hears when
it has ended (the answer read and dropped, or the connection lost), so the
router keeps the replica's slot taken until then.  This is done in the
protocol, not by running each exchange in a task of its own, which would cost
every request a task and two more turns of the event loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import httptools

__all__ = ["ReplicaGone", "ReplicaPool", "UpstreamResponse"]

# Response headers that describe the hop, not the payload.
_HOP_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"date", b"server", b"content-length"}
)
# Above this much unread streamed body, stop reading from the replica.
_HIGH_WATER = 1 << 20
_LOW_WATER = 1 << 16


class ReplicaGone(ConnectionError):
    """The replica closed or refused the connection before answering.

    ``sent`` is False only when the request provably never reached the replica
    (the connection could not be made, or the kernel refused the write because
    the replica had already closed its end), so the caller may send it
    elsewhere whatever the model's predict does; True means the replica may
    have run it.
    """

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class UpstreamResponse:
    """One exchange on one connection: status and headers, then the body."""

    __slots__ = (
        "_abandoned",
        "_buffered",
        "_conn",
        "_paused",
        "_waiter",
        "chunked",
        "complete",
        "content_length",
        "error",
        "headers",
        "headers_done",
        "parts",
        "status",
    )

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunked = False
        self.content_length: bytes | None = None
        self.parts: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self.complete = False
        self.error: BaseException | None = None
        self.headers_done: asyncio.Future[None] = conn.loop.create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._abandoned: Callable[[BaseException | None], None] | None = None

    # -- fed by the protocol ------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _add(self, data: bytes) -> None:
        if self._abandoned is not None:
            return  # nobody will read it
        self.parts.append(data)
        self._buffered += len(data)
        if self.chunked and self._buffered > _HIGH_WATER and not self._paused:
            self._paused = True
            self._conn.pause()
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._abandoned is not None:
            self._settle(exc)
            return
        self.error = exc
        if not self.headers_done.done():
            self.headers_done.set_exception(exc)
        self._wake()

    # -- read by the router ------------------------------------------------------

    async def body(self) -> bytes:
        """The whole body (for a content-length response)."""
        while not self.complete:
            if self.error is not None:
                raise self.error
            self._waiter = self._conn.loop.create_future()
            await self._waiter
            self._waiter = None
        return b"".join(self.parts) if len(self.parts) != 1 else self.parts[0]

    async def next_chunk(self) -> bytes | None:
        """The next piece of a streamed body; ``None`` at its end."""
        while True:
            if self.parts:
                data = self.parts.popleft()
                self._buffered -= len(data)
                if self._paused and self._buffered < _LOW_WATER:
                    self._paused = False
                    self._conn.resume()
                return data
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            self._waiter = self._conn.loop.create_future()
            await self._waiter
            self._waiter = None

    def abandon(self, done: Callable[[BaseException | None], None]) -> None:
        """Nobody will read this answer: call ``done`` once the exchange has ended.

        ``done`` gets None when the replica has finished answering (a whole
        body is read and dropped, and the connection goes back to the pool), or
        the error that ended it.  A stream is cut at once instead (its replica
        notices the closed connection), as soon as its headers say it is one.
        """
        if self.complete or self.error is not None:
            done(self.error)
            return
        self._abandoned = done
        self.parts.clear()
        self._buffered = 0
        if self._paused:
            self._paused = False
            self._conn.resume()
        if self.status and self.chunked:
            self._cut()

    def _cut(self) -> None:
        """An abandoned stream: close its connection and call it ended."""
        self.abort()
        self._settle(None)

    def _settle(self, exc: BaseException | None) -> None:
        done, self._abandoned = self._abandoned, None
        if done is not None:
            done(exc)

    def abort(self) -> None:
        """Drop the connection (the caller gave up before the end).

        Once the replica has sent the whole answer the connection is back in
        the pool, perhaps carrying another request: it is not ours to close.
        """
        if not self.complete:
            self._conn.close()


class _Connection(asyncio.Protocol):
    """One kept-alive connection to a replica and its response parser."""

    def __init__(self, pool: ReplicaPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.used = False  # has carried a complete exchange before
        self.got_bytes = False  # the current exchange has seen response bytes

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._lost(ReplicaGone(f"bad response from replica: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        # EPIPE on our write, before any answer: the replica's end was closed
        # before the whole request reached it, so it cannot have run it.
        refused = isinstance(exc, BrokenPipeError) and not self.got_bytes
        self._lost(ReplicaGone(f"replica closed the connection ({exc or 'EOF'})", sent=not refused))

    def _lost(self, exc: BaseException) -> None:
        self.closed = True
        response = self.response
        if response is not None and not response.complete:
            response._fail(exc)
        self.response = None

    # -- httptools callbacks -------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        response = self.response
        if response is None:
            return
        lname = name.lower()
        if lname in _HOP_HEADERS:
            if lname == b"transfer-encoding" and b"chunked" in value.lower():
                response.chunked = True
            elif lname == b"content-length":
                response.content_length = value
            return
        response.headers.append((lname, value))

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            return
        response.status = self.parser.get_status_code()
        if response.content_length is None and not response.chunked:
            # Read-until-close bodies are streamed like chunked ones.
            response.chunked = True
        if response._abandoned is not None:
            if response.chunked:
                response._cut()
        elif not response.headers_done.done():
            response.headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        response = self.response
        if response is not None:
            response._add(body)

    def on_message_complete(self) -> None:
        response = self.response
        if response is None:
            return
        keep = self.parser.should_keep_alive()
        self.response = None
        if keep and not self.closed:
            self.used = True
            self.pool._release(self)
        else:
            self.close()
        # The answer is complete; after the release, so that an abandoned
        # answer's slot frees a kept connection.
        response.complete = True
        if response._abandoned is not None:
            response._settle(None)
        else:
            response._wake()

    # -- used by the pool ------------------------------------------------------------

    def send(self, data: bytes, response: UpstreamResponse) -> None:
        self.response = response
        self.got_bytes = False
        assert self.transport is not None
        self.transport.write(data)

    def pause(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class ReplicaPool:
    """Kept-alive connections to one replica: its Unix socket (``unix:/path``)
    or, for a replica on another machine, its TCP port (``http://host:port``).

    ``token`` (a replica on a network requires one) goes into every request's
    head as ``x-swell-replica-token``.

    ``on_abandon``, when set, hears how each exchange whose caller gave up
    ended (see :meth:`UpstreamResponse.abandon`); without it such a
    connection is closed at once.
    """

    def __init__(self, address: str, *, max_idle: int = 8, token: str | None = None) -> None:
        self.host: str | None = None
        self.port = 0
        if address.startswith("unix:"):
            self.path = address.removeprefix("unix:")
        elif address.startswith("http://") and address.count(":") == 2:
            self.path = ""
            self.host, _, port = address.removeprefix("http://").rpartition(":")
            self.port = int(port)
        else:
            raise ValueError(f"a replica's address is unix:/path or http://host:port, not {address!r}")
        self.address = address
        self.max_idle = max_idle
        self._token_line = b"x-swell-replica-token: %s\r\n" % token.encode() if token else b""
        self.loop = asyncio.get_running_loop()
        self._idle: list[_Connection] = []
        self._closed = False
        self.on_abandon: Callable[[BaseException | None], None] | None = None

    async def _connect(self) -> _Connection:
        try:
            if self.host is None:
                _, conn = await self.loop.create_unix_connection(lambda: _Connection(self), self.path)
            else:
                _, conn = await self.loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except OSError as exc:
            raise ReplicaGone(f"cannot connect to replica at {self.path or self.address}: {exc}", sent=False) from None
        return conn

    def _release(self, conn: _Connection) -> None:
        if self._closed or len(self._idle) >= self.max_idle:
            conn.close()
        else:
            self._idle.append(conn)

    async def request(self, head: bytes, body: bytes) -> UpstreamResponse:
        """Send one request (``head`` ends with the blank line); wait for its headers.

        Raises :class:`ReplicaGone` if the replica answers nothing.
        """
        if self._token_line:  # after the request line
            line_end = head.index(b"\r\n") + 2
            head = head[:line_end] + self._token_line + head[line_end:]
        data = head + body if len(body) < 65536 else None
        conn: _Connection | None = None
        while self._idle:
            candidate = self._idle.pop()
            if not candidate.closed:
                conn = candidate
                break
        reached = False  # an attempt on a reused connection may have reached the replica
        for fresh in (conn is None, True):
            if fresh:
                try:
                    conn = await self._connect()
                except ReplicaGone as exc:
                    exc.sent = reached
                    raise
                except asyncio.CancelledError:
                    if self.on_abandon is not None:
                        self.on_abandon(None)  # nothing was sent on it
                    raise
            assert conn is not None
            response = UpstreamResponse(conn)
            if data is not None:
                conn.send(data, response)
            else:
                conn.send(head, response)
                conn.transport.write(body)  # type: ignore[union-attr]
            try:
                await response.headers_done
                return response
            except asyncio.CancelledError:
                # The caller gave up (its timeout, a hang-up).
                self.abandon(response)
                raise
            except ReplicaGone as exc:
                # A reused connection the replica had closed while idle: try a
                # fresh one once.  A fresh one that fails means the replica is gone.
                # (Once to the same replica is safe: if the first try ran and
                # killed it, the second cannot connect.)
                reached = reached or exc.sent
                if fresh or conn.got_bytes:
                    exc.sent = reached
                    raise
        raise AssertionError("unreachable")

    def abandon(self, response: UpstreamResponse) -> None:
        """The caller of ``response`` gave up: tell ``on_abandon`` when the
        exchange ends; without one, close the connection now (the answer would
        arrive on a connection nobody reads, so it cannot be reused)."""
        if self.on_abandon is not None:
            response.abandon(self.on_abandon)
        else:
            response.abort()

    def close(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
