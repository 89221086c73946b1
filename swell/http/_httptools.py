"""uvicorn's httptools protocol, with each response written in one piece.

uvicorn writes a response's status line and headers, then its body, as two
``transport.write`` calls: two system calls, and on the router → replica hop
often two wake-ups of the reader (the router) for one answer.  Here the
connection's writes are gathered and go out together at the end of the current
event-loop step (``call_soon``), so a response sent as ``http.response.start``
plus ``http.response.body`` costs one system call.  Nothing waits longer than
the loop step that wrote it; a large write (``FLUSH_AT``), ``close`` and
``abort`` flush (or drop) at once, in order.

Both the server (``swell serve``) and each replica run uvicorn with
``http=CorkedHttpToolsProtocol``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = [
    "FLUSH_AT", "MAX_HEAD_BYTES", "WS_MAX_MESSAGE_BYTES", "CorkedHttpToolsProtocol", "CorkedTransport", "LazyWebSocketProtocol",
]

#: Buffered bytes past which a write goes out at once.
FLUSH_AT = 1 << 16
#: The most bytes a request's line and headers may take (answered 431 past it).
MAX_HEAD_BYTES = 1 << 20
#: How long a refused request's connection is read (and what arrives dropped) before it closes.
LINGER_SECONDS = 2.0
_REFUSED = -2
#: The largest websocket message, on every hop: Truss's hard limit (``WS_MAX_MSG_SZ_BYTES``).
WS_MAX_MESSAGE_BYTES = 100 << 20


class CorkedTransport:
    """A transport whose writes within one loop step leave as one ``write``.

    It forwards asyncio's whole ``Transport`` interface by name, with no
    ``__getattr__``: a class with one makes every attribute read on its
    instances (its own ``write`` and ``_buffer`` too) a slow, unspecialised
    lookup, and this object is read several times per request.
    """

    __slots__ = ("_buffer", "_loop", "_size", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        buffer = self._buffer
        if not buffer:
            self._loop.call_soon(self._flush)
        buffer.append(data)
        self._size += len(data)
        if self._size >= FLUSH_AT:
            self._flush()

    def write_now(self, data: bytes) -> None:
        """Write ``data`` at once, after whatever this step wrote before it (a
        whole answer: nothing is left to gather it with)."""
        if self._buffer:
            self.write(data)
            self._flush()
        elif data and not self._transport.is_closing():
            self._transport.write(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        buffer = self._buffer
        if not buffer:
            return
        data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
        buffer.clear()
        self._size = 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._buffer.clear()
        self._size = 0
        self._transport.abort()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def get_write_buffer_size(self) -> int:
        return self._size + self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._flush()
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


class CorkedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` over a :class:`CorkedTransport`, answering
    a request it cannot parse as every other refusal is answered: JSON that says
    what was wrong, rather than uvicorn's plain "Invalid HTTP request received."."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CorkedTransport(transport, self.loop))  # type: ignore[arg-type]

    # Bytes of the current request that are not its body (its line and
    # headers, then chunk sizes and trailers); -1 between requests, _REFUSED
    # once refused (what still arrives is read and dropped, see _refuse).
    # httptools bounds none of them and grows a header's value by copies: a
    # client streaming one endless header, or an endless trailer, made the
    # server use memory and CPU in proportion until its timeout.
    _head_bytes = -1
    _in_body = False

    def data_received(self, data: bytes) -> None:
        counted = self._head_bytes
        if counted != -1:
            if counted == _REFUSED:
                return
            counted = self._head_bytes = counted + len(data)
            if counted > MAX_HEAD_BYTES and not self._in_body:
                return self._refuse(
                    b"431 Request Header Fields Too Large", "request head too large",
                    f"the request line and headers passed {MAX_HEAD_BYTES} bytes, the limit",
                )
        super().data_received(data)
        if self._in_body and self._head_bytes > MAX_HEAD_BYTES:
            # Endless chunk framing or trailers: the app has the request by
            # now, so no answer can be put before its own; the connection goes.
            self._head_bytes = _REFUSED
            self.logger.warning("A request's chunk framing and trailers passed %d bytes: closed.", MAX_HEAD_BYTES)
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._in_body = False

    def on_headers_complete(self) -> None:
        self._in_body = True
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._head_bytes = max(self._head_bytes - len(body), 0)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._head_bytes = -1
        self._in_body = False
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this from its ``except httptools.HttpParserError`` only:
        # the parser's own words ("Duplicate Content-Length", ...) are the reason.
        problem = sys.exc_info()[1]
        if problem is not None and problem.__context__ is not None:
            # httptools' "User callback error": what uvicorn's callback raised
            # ("url is too long: ...", a path that is not ASCII) says more.
            problem = problem.__context__
        reason = f"{msg.rstrip('.')}: {problem}" if problem is not None and str(problem) else msg
        self._refuse(b"400 Bad Request", "bad request", reason)

    def _refuse(self, status: bytes, error: str, reason: str) -> None:
        """Answer a request that never reached the app, and close the connection.

        Closed at once with the rest of the request unread, the kernel would
        answer the client's next bytes with a reset, which can destroy the
        answer before the client reads it.  So our side of the connection is
        shut, what still arrives is dropped unparsed, and it closes when the
        client does, or after ``LINGER_SECONDS``.
        """
        self._head_bytes = _REFUSED
        body = json.dumps({"error": error, "reason": reason}).encode()
        head = [b"HTTP/1.1 %s\r\n" % status]
        head.extend(b"%s: %s\r\n" % (name, value) for name, value in self.server_state.default_headers)
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        transport = self.transport
        transport.write(b"".join(head) + body)
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()


class LazyWebSocketProtocol(asyncio.Protocol):
    """uvicorn's ``ws=`` protocol, imported on the first websocket upgrade.

    Given as a class, uvicorn imports nothing at start; its own websocket
    protocol (``websockets``' sans-I/O one, or wsproto's) costs a replica's
    cold start a tenth of a second of imports, which only a websocket needs.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # uvicorn's own protocol, not this class
        from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

        assert AutoWebSocketsProtocol is not None, "uvicorn found neither websockets nor wsproto"
        return AutoWebSocketsProtocol(*args, **kwargs)
