"""A lean HTTP/1.1 server for the hot route, uvicorn for everything else.

uvicorn's per-request machinery (scope, cycle, ``asyncio.Event``, two ASGI
sends with header checks, keep-alive timers) costs about as much CPU as the
rest of a predict request's hop together.  :class:`FastPathProtocol` is the
``http=`` protocol given to uvicorn: a connection whose request starts with the
hot prefix (``POST /model/`` on the server, ``POST /v1/models/`` on a replica)
is served here: the request framed by its ``content-length``, parsed by
httptools, the ASGI app called with a minimal cycle, the answer written in one
piece.  Anything else -- another route, a chunked or ``Expect`` request, an
upgrade, HTTP/1.0, a malformed head -- hands the connection, with every byte
not yet answered, to uvicorn's own protocol, which serves it from then on as if
it had had it from the start.

The ASGI contract the app sees is uvicorn's: ``receive`` gives the body, then
blocks until the caller disconnects (``http.disconnect``); ``send`` after a
disconnect is dropped; an exception before the response starts is a 500, after
it a dropped connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE
from uvicorn.protocols.utils import get_local_addr, get_remote_addr

from swell.http._guard import BUSY, IDLE, READING, ConnectionGuard
from swell.http._httptools import CorkedHttpToolsProtocol, CorkedTransport

__all__ = ["FastPathProtocol", "fast_path_protocol"]

logger = logging.getLogger("uvicorn.error")

_MAX_HEAD = 1 << 16
_NO_LIMIT = 1 << 62
# What uvicorn refuses in a response header's name and value.
_BAD_NAME = HEADER_RE.search
_BAD_VALUE = HEADER_VALUE_RE.search
# Headers that passed those checks (most answers repeat the same few), each
# with what it is (_PLAIN, _LENGTH, _CLOSE, _SKIP) and its line in the head.
_GOOD: dict[tuple[bytes, bytes], tuple[int, bytes]] = {}
_GOOD_MAX = 1024
_PLAIN, _LENGTH, _CLOSE, _SKIP = 0, 1, 2, 3
# The request headers on_header looks at.
_FRAMING_HEADERS = frozenset((b"content-length", b"transfer-encoding", b"expect", b"upgrade"))
# uvicorn's default headers (date, ...) as head lines, for the list they came from.
_defaults: list[Any] = [None, b""]
_STATUS: dict[int, bytes] = {}
# What a connection waits for, for its one timer (see _expired).
_BUSY, _IDLE, _HEAD, _BODY = 0, 1, 2, 3
_500 = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 21\r\nconnection: close\r\n\r\nInternal Server Error"
)


def _status_line(status: int) -> bytes:
    line = _STATUS.get(status)
    if line is None:
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b""
        line = _STATUS[status] = b"HTTP/1.1 %d %s\r\n" % (status, phrase)
    return line


def _header_line(header: Any) -> tuple[int, bytes]:
    """What a response header is and its line, refused as uvicorn refuses it."""
    name, value = header
    if _BAD_NAME(name) or _BAD_VALUE(value):
        raise RuntimeError("Invalid HTTP header.")
    lname = name.lower()
    if lname == b"content-length":
        kind = _LENGTH
    elif lname == b"connection" and b"close" in value.lower():
        kind = _CLOSE
    elif lname == b"transfer-encoding":
        kind = _SKIP  # ours to choose
    else:
        kind = _PLAIN
    entry = (kind, b"%s: %s\r\n" % (lname, value))
    if type(header) is tuple:
        if len(_GOOD) >= _GOOD_MAX:
            _GOOD.clear()
        _GOOD[header] = entry
    return entry


def _default_lines(defaults: list[tuple[bytes, bytes]]) -> bytes:
    if defaults is not _defaults[0]:  # uvicorn sets a new list (a new date) each second
        _defaults[1] = b"".join(b"%s: %s\r\n" % (name, value) for name, value in defaults)
        _defaults[0] = defaults
    return _defaults[1]  # type: ignore[no-any-return]


class _Unusual(Exception):
    """The request needs uvicorn: hand the connection over."""


class _Cycle:
    """One request's ASGI ``receive``/``send``."""

    __slots__ = ("_body", "_chunked", "_conn", "_keep_alive", "_left", "_no_body", "_waiter", "complete",
                 "disconnected", "started", "task")

    def __init__(self, conn: FastPathProtocol, body: bytes, keep_alive: bool) -> None:
        self._conn = conn
        self._body: bytes | None = body
        self._keep_alive = keep_alive
        self._chunked = False
        self._no_body = False
        self._left = 0  # body bytes still owed (content-length answers)
        self._waiter: asyncio.Future[None] | None = None
        self.started = False
        self.complete = False
        self.disconnected = False
        self.task: asyncio.Task[None] | None = None  # the task serving it

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> dict[str, Any]:
        body = self._body
        if body is not None:
            self._body = None
            return {"type": "http.request", "body": body, "more_body": False}
        while not (self.disconnected or self.complete):
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return {"type": "http.disconnect"}

    def _head(self, status: int, headers: Any) -> bytes:
        """The response's status line and headers; the response has started."""
        self.started = True
        self._no_body = status in (204, 304)
        head = [_status_line(status), _default_lines(self._conn.default_headers)]
        length = None
        said_close = False
        good = _GOOD
        for header in headers:
            entry = good.get(header) if type(header) is tuple else None
            if entry is None:
                entry = _header_line(header)
            what, line = entry
            if what:
                if what == _LENGTH:
                    if length is None:
                        length = int(header[1])
                elif what == _CLOSE:
                    self._keep_alive = False
                    said_close = True
                else:
                    continue  # transfer-encoding: ours to choose
            head.append(line)
        if length is None:
            if not self._no_body:
                self._chunked = True
                head.append(b"transfer-encoding: chunked\r\n")
        else:
            self._left = length
        if not self._keep_alive and not said_close:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        return b"".join(head)

    def swell_reply(self, status: int, headers: Any, body: bytes) -> bool:
        """A whole answer at once: what ``send`` of its start and then of its
        one body would write, in one write now rather than at the end of the
        loop's step.  False (nothing done) once the response has started or the
        caller has gone: then ``send`` says what is wrong, as for any message."""
        if self.started or self.disconnected:
            return False
        conn = self._conn
        data = self._head(status, headers)
        if self._no_body:
            pass
        elif self._chunked:
            data = b"%s%x\r\n%s\r\n0\r\n\r\n" % (data, len(body), body) if body else data + b"0\r\n\r\n"
        else:
            left = self._left - len(body)
            if left < 0:
                conn.transport.write(data)
                raise RuntimeError("Response content longer than Content-Length")
            self._left = left
            data += body
            if left:
                conn.transport.write(data)
                raise RuntimeError("Response content shorter than Content-Length")
        conn.transport.write_now(data)
        self.complete = True
        self._wake()
        conn.response_done(self._keep_alive)
        return True

    async def send(self, message: dict[str, Any]) -> None:
        conn = self._conn
        if self.disconnected:
            return
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{kind}'.")
            conn.transport.write(self._head(message["status"], message.get("headers", ())))
            return
        if self.complete:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' sent, after response already completed.")
        if kind != "http.response.body":
            raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{kind}'.")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if self._no_body:
            pass
        elif self._chunked:
            if body:
                conn.transport.write(b"%x\r\n%s\r\n" % (len(body), body))
            if not more:
                conn.transport.write(b"0\r\n\r\n")
        else:
            left = self._left - len(body)
            if left < 0:
                raise RuntimeError("Response content longer than Content-Length")
            self._left = left
            if body:
                conn.transport.write(body)
            if not more and left:
                raise RuntimeError("Response content shorter than Content-Length")
        if more:
            if conn.write_paused:
                await conn.drain()
            return
        self.complete = True
        self._wake()
        conn.response_done(self._keep_alive)


class FastPathProtocol(asyncio.Protocol):
    """Serve requests that start with :attr:`prefix` here, hand anything else to uvicorn."""

    prefix = b"POST /model/"
    #: The server's read timeouts and connection cap (``None``: only the keep-alive timeout).
    guard: ConnectionGuard | None = None

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.config = config
        # A layer in front of the app that passes this prefix's requests straight
        # through (the dashboard) names the app they go to: they skip a coroutine
        # frame per request.  Whatever else arrives is handed to uvicorn, whole app.
        self.app = getattr(config.loaded_app, "fast_path_app", config.loaded_app)
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()
        self.keep_alive_timeout = config.timeout_keep_alive
        # The largest body buffered here: the app's limit, where it has one.
        limit = getattr(self.app, "max_request_bytes", None)
        self.max_body = limit if isinstance(limit, int) and limit > 0 else _NO_LIMIT
        self.transport: CorkedTransport = None  # type: ignore[assignment]  # writes, corked
        self.raw_transport: asyncio.Transport = None  # type: ignore[assignment]
        self.buffer: bytes | bytearray = b""
        self.cycle: _Cycle | None = None
        self.closing = False  # close once the current response is out
        self.handed_off = False
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None
        # One timer per connection, re-armed only when it fires early: the idle
        # keep-alive timeout, and with a guard the header and body deadlines.
        self._timer: asyncio.TimerHandle | None = None
        self._wait = _BUSY  # what the connection waits for (_IDLE, _HEAD, _BODY), since _since
        self._since = 0.0
        self._handler: _GuardedHttpTools | None = None  # uvicorn's protocol, after a hand-off
        self._reading_paused = False
        # per request, filled by the parser
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._length = -1
        self._done = False
        self._unusual = False
        self._keep_alive = False
        self._parser = httptools.HttpRequestParser(self)
        self._pending: tuple[int, int] | None = None  # a parsed head's end and its message's end

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        return self.server_state.default_headers  # type: ignore[no-any-return]

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw_transport = transport  # type: ignore[assignment]
        self.transport = CorkedTransport(self.raw_transport, self.loop)
        self.server_state.connections.add(self)
        self.server = get_local_addr(self.raw_transport)
        self.client = get_remote_addr(self.raw_transport)
        guard = self.guard
        if guard is not None:
            # The head's deadline runs from the connection's first moment,
            # whoever ends up serving it (a hand-off keeps it).
            self._wait = _HEAD
            self._since = now = self.loop.time()
            if guard.header_timeout is not None:
                self._timer = self.loop.call_at(now + guard.header_timeout, self._expired)
            guard.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        self._gone()
        cycle = self.cycle
        if cycle is not None and not cycle.complete:
            cycle.disconnected = True
            cycle._wake()
        self._resume_writers()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._resume_writers()
        if self.cycle is None and self.buffer and not self.handed_off and self._wait == _BUSY:
            self._held_back()

    def _held_back(self) -> None:
        """Start the pipelined request held back while the caller did not read:
        what response_done does after an answer (one step of it, on the hot
        path, rather than a call more there), for no new answer."""
        self.server_state.total_requests -= 1
        self.response_done(True)

    def _resume_writers(self) -> None:
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)
        self._drain = None

    async def drain(self) -> None:
        if self._drain is None:
            self._drain = self.loop.create_future()
        await self._drain

    def _gone(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.guard is not None:
            self.guard.gone(self)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        if not buffer:
            self.buffer = data
        elif isinstance(buffer, bytes):
            self.buffer = bytearray(buffer)  # a request in pieces: grow in place, not by copies
            self.buffer += data
        else:
            buffer += data
        if self.cycle is None:
            self._next()
            if self.cycle is None and not self.handed_off and self.guard is not None and not self.write_paused:
                self._reading()  # a request in pieces: its deadline
        elif len(self.buffer) > HIGH_WATER_LIMIT and not self._reading_paused:
            self._reading_paused = True  # a pipelined request waits for the current answer
            self.transport.pause_reading()

    def eof_received(self) -> None:
        pass

    # ------------------------------------------------------------ framing

    def _next(self) -> None:
        """Start the request at the front of the buffer, if it is complete."""
        buffer = self.buffer
        if not buffer:
            return
        if self.write_paused:
            # The caller does not read its answers: the next request waits
            # (resume_writing starts it), so that a caller that pipelines and
            # never reads cannot make us hold every answer it asked for.
            self._wait = _BUSY
            if not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()
            return
        prefix = self.prefix
        if not buffer.startswith(prefix):
            if len(buffer) < len(prefix) and prefix.startswith(buffer):
                return  # too little to tell yet
            return self._hand_off()
        pending = self._pending
        if pending is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEAD:
                    self._hand_off()  # uvicorn answers what is wrong with it
                return
            head_end = end + 4
            parser = self._parser  # one per connection: it starts afresh after each message
            self._keep_alive = False
            self._url = b""
            self._headers = []
            self._length = -1
            self._done = False
            self._unusual = False
            try:
                parser.feed_data(buffer[:head_end])
            except (httptools.HttpParserError, httptools.HttpParserUpgrade):  # Upgrade is no HttpParserError
                return self._hand_off()
            if self._unusual or self._length < 0 or parser.get_http_version() != "1.1" or parser.should_upgrade():
                return self._hand_off()
            if self._length > self.max_body:
                # Not buffered here: uvicorn streams it and the app refuses it
                # (413) without reading it into memory.
                return self._hand_off()
            pending = self._pending = (head_end, head_end + self._length)
        head_end, total = pending
        if len(buffer) < total:
            return  # the rest of the body is on its way
        self._pending = None
        try:
            if total > head_end:
                self._parser.feed_data(buffer[head_end:total])
        except httptools.HttpParserError:
            return self._hand_off()
        if not self._done:
            return self._hand_off()
        raw_path, _, query = self._url.partition(b"?")
        try:
            path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            return self._hand_off()  # uvicorn answers 400
        body = buffer[head_end:total]
        rest = buffer[total:]
        self.buffer = rest if rest else b""
        self._wait = _BUSY
        self._start(self._keep_alive, bytes(body) if isinstance(body, bytearray) else body, raw_path, path, query)

    def _hand_off(self) -> None:
        """uvicorn serves this connection from here on, starting with the unanswered bytes."""
        self.handed_off = True
        self.server_state.connections.discard(self)
        guard = self.guard
        if guard is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            protocol: CorkedHttpToolsProtocol = CorkedHttpToolsProtocol(
                config=self.config, server_state=self.server_state, app_state=self.app_state, _loop=self.loop
            )
        else:
            # uvicorn has no header or body deadline: this protocol keeps
            # watching the connection (its timer, its place under the cap).
            protocol = self._handler = _GuardedHttpTools(
                config=self.config, server_state=self.server_state, app_state=self.app_state, _loop=self.loop
            )
            protocol.owner = self
            if self._wait == _HEAD:
                protocol.head_since = self._since
            if self._timer is None:
                self._timer = self.loop.call_at(self.loop.time(), self._expired)
        self.transport._flush()  # answers already given go first
        protocol.connection_made(self.raw_transport)
        self.raw_transport.set_protocol(protocol)
        if self._reading_paused:
            self._reading_paused = False
            self.raw_transport.resume_reading()
        data, self.buffer = self.buffer, b""
        protocol.data_received(bytes(data))

    # ------------------------------------------------------------ httptools callbacks

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in _FRAMING_HEADERS:
            if name != b"content-length" or self._length >= 0 or not value.strip().isdigit():
                self._unusual = True
            else:
                self._length = int(value)
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self._done = True

    # ------------------------------------------------------------ the request

    def _start(self, keep_alive: bool, body: bytes, raw_path: bytes, path: str, query: bytes) -> None:
        if "%" in path:
            from urllib.parse import unquote

            path = unquote(path)
        root = self.config.root_path
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": "http",
            "method": "POST",
            "root_path": root,
            "path": root + path,
            "raw_path": root.encode("ascii") + raw_path,
            "query_string": query,
            "headers": self._headers,
            "state": self.app_state.copy(),
        }
        cycle = self.cycle = _Cycle(self, body, keep_alive and not self.closing)
        task = cycle.task = self.loop.create_task(self._run(cycle, scope))
        self.server_state.tasks.add(task)

    async def _run(self, cycle: _Cycle, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, cycle.receive, cycle.send)
        except BaseException as exc:
            logger.error("Exception in ASGI application\n", exc_info=exc)
            if not cycle.started and not cycle.disconnected:
                cycle.started = cycle.complete = True
                self.transport.write(_500)
                self.response_done(False)
            elif not cycle.complete:
                self.transport.close()
        else:
            if not cycle.complete and not cycle.disconnected:
                if not cycle.started:
                    logger.error("ASGI callable returned without starting response.")
                    cycle.started = cycle.complete = True
                    self.transport.write(_500)
                    self.response_done(False)
                else:
                    logger.error("ASGI callable returned without completing response.")
                    self.transport.close()
        finally:
            # The task leaves uvicorn's set (what a graceful shutdown waits for)
            # as its last step, not through a done callback: one callback less
            # per request.  (A task cancelled before its first step stays there:
            # uvicorn cancels tasks only once it has stopped waiting for them.)
            self.server_state.tasks.discard(cycle.task)

    def response_done(self, keep_alive: bool) -> None:
        self.server_state.total_requests += 1
        self.cycle = None
        if not keep_alive or self.closing:
            self.transport.close()
            return
        raw = self.raw_transport
        if raw.is_closing():
            return
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        if self.buffer:
            self._next()
            if self.cycle is not None or self.handed_off or raw.is_closing():
                return
            if self.write_paused:
                return  # held back until the caller reads (resume_writing)
        # Idle now (no hand-off can have come before: only _next hands off, and
        # never while a cycle runs).  Keep-alive timeout: one timer per connection,
        # re-armed only when it fires early, rather than one made and cancelled per request.
        self._since = now = self.loop.time()
        self._wait = _IDLE
        if self.buffer and self.guard is not None:
            self._reading()
        if self._timer is None:
            self._timer = self.loop.call_at(now + self.keep_alive_timeout, self._expired)

    def _reading(self) -> None:
        """Part of a request is here and no more: its head's or body's deadline runs."""
        if self._pending is not None:  # the head is in, the body comes: a deadline per piece
            self._wait = _BODY
            self._since = self.loop.time()
            limit = self.guard.body_timeout  # type: ignore[union-attr]
        elif self._wait != _HEAD:  # the first bytes of a request's head
            self._wait = _HEAD
            self._since = self.loop.time()
            limit = self.guard.header_timeout  # type: ignore[union-attr]
        else:
            return
        timer = self._timer
        if limit is not None and (timer is None or timer.when() > self._since + limit):
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(self._since + limit, self._expired)

    def _deadline(self) -> tuple[float, str] | None:
        """When this connection is closed unless something happens, and why."""
        guard = self.guard
        handler = self._handler
        if handler is not None:  # uvicorn serves it: read its progress
            if handler.head_since is not None:
                return _after(handler.head_since, guard.header_timeout, "header_timeout")  # type: ignore[union-attr]
            if handler.body_since is not None and not handler.flow.read_paused:
                return _after(handler.body_since, guard.body_timeout, "body_timeout")  # type: ignore[union-attr]
            return None  # idle (uvicorn's keep-alive timer) or serving
        wait = self._wait
        if wait == _IDLE:
            return self._since + self.keep_alive_timeout, "idle"
        if guard is None or wait == _BUSY:
            return None
        if wait == _HEAD:
            return _after(self._since, guard.header_timeout, "header_timeout")
        return _after(self._since, guard.body_timeout, "body_timeout")

    def _expired(self) -> None:
        self._timer = None
        if self.raw_transport.is_closing():
            return
        if self.cycle is not None or (self.buffer and self._wait == _IDLE):
            return  # busy: the next answer arms it again
        deadline = self._deadline()
        if deadline is None:
            if self._handler is not None and self.guard is not None and self.guard.header_timeout is not None:
                # uvicorn's connection may start another request: look again later.
                self._timer = self.loop.call_at(self.loop.time() + self.guard.header_timeout, self._expired)
            return
        when, reason = deadline
        if when - self.loop.time() > 0.001:
            self._timer = self.loop.call_at(when, self._expired)
        elif self.guard is not None:
            self.guard.close(self, reason)
        else:
            self.transport.close()

    # ------------------------------------------------------------ the guard's view

    def guard_state(self) -> str:
        handler = self._handler
        if handler is not None:
            if handler.head_since is not None or (handler.body_since is not None and not handler.flow.read_paused):
                return READING
            cycle = handler.cycle
            return BUSY if cycle is not None and not cycle.response_complete else IDLE
        if self.cycle is not None:
            return BUSY
        return IDLE if self._wait == _IDLE and not self.buffer else READING

    def guard_close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        (self.raw_transport if self.handed_off else self.transport).close()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close when idle, else after this answer."""
        self.closing = True
        if self.cycle is None:
            self.transport.close()


def _after(since: float, limit: float | None, reason: str) -> tuple[float, str] | None:
    return None if limit is None else (since + limit, reason)


class _GuardedHttpTools(CorkedHttpToolsProtocol):
    """uvicorn's protocol, telling the :class:`FastPathProtocol` that handed it over how far a request is."""

    owner: FastPathProtocol
    head_since: float | None = None  # a request's head started arriving then, and is not complete
    body_since: float | None = None  # the last piece of an unfinished body came then

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.head_since is None:
            self.head_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self.head_since = None
        self.body_since = self.loop.time()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.body_since = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.body_since = None
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.owner._gone()

    def handle_websocket_upgrade(self) -> None:
        # An open websocket is neither a slow request nor an idle connection: it
        # leaves the guard's deadlines and cap (the router counts it in flight),
        # and its connection_lost goes to the websocket protocol, not here.
        self.owner._gone()
        super().handle_websocket_upgrade()


def fast_path_protocol(prefix: bytes, guard: ConnectionGuard | None = None) -> type[FastPathProtocol]:
    """A :class:`FastPathProtocol` for requests that start with ``prefix`` (and with ``guard``'s limits)."""
    return type("FastPathProtocol", (FastPathProtocol,), {"prefix": prefix, "guard": guard})
