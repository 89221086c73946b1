"""The HTTP layer both of Swell's servers stand on: the server's front door and each replica.

- ``FastPathProtocol`` / ``fast_path_protocol``: uvicorn's ``http=`` protocol that
  serves the hot route (``POST /model/…``, ``POST /v1/models/…``) without
  uvicorn's per-request machinery and hands anything else to uvicorn.
- ``CorkedHttpToolsProtocol``: uvicorn's httptools protocol writing each answer
  in one system call; ``LazyWebSocketProtocol``: uvicorn's websocket protocol,
  imported on the first upgrade (``WS_MAX_MESSAGE_BYTES``: the message limit).
- ``ConnectionGuard``: the front door's header/body read timeouts and connection cap.
- ``use_batch_scheduling``: ``SCHED_BATCH`` for the serving processes.
- The ASGI vocabulary: ``Scope``/``Receive``/``Send``, ``respond``, ``read_body``,
  ``websocket_refusal`` (``respond`` to a websocket handshake).

The protocols import uvicorn and httptools, so they load on first use: code
that only answers ASGI messages does not pay for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from swell.http._asgi import (
    JSON_HEADERS,
    ASGIApp,
    BodyOverLimit,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    declared_length,
    header,
    read_body,
    respond,
    websocket_refusal,
)
from swell.http._guard import ConnectionGuard, pick_victim
from swell.http._sched import use_batch_scheduling
from swell.lazy import lazy_attributes

if TYPE_CHECKING:
    from swell.http._fastpath import FastPathProtocol, fast_path_protocol
    from swell.http._httptools import (
        WS_MAX_MESSAGE_BYTES,
        CorkedHttpToolsProtocol,
        CorkedTransport,
        LazyWebSocketProtocol,
    )

__all__ = [
    "JSON_HEADERS",
    "WS_MAX_MESSAGE_BYTES",
    "ASGIApp",
    "BodyOverLimit",
    "ClientDisconnected",
    "ConnectionGuard",
    "CorkedHttpToolsProtocol",
    "CorkedTransport",
    "FastPathProtocol",
    "LazyWebSocketProtocol",
    "Receive",
    "Scope",
    "Send",
    "declared_length",
    "fast_path_protocol",
    "header",
    "pick_victim",
    "read_body",
    "respond",
    "use_batch_scheduling",
    "websocket_refusal",
]

_LAZY: dict[str, str] = {
    "FastPathProtocol": "swell.http._fastpath",
    "fast_path_protocol": "swell.http._fastpath",
    "CorkedHttpToolsProtocol": "swell.http._httptools",
    "CorkedTransport": "swell.http._httptools",
    "LazyWebSocketProtocol": "swell.http._httptools",
    "WS_MAX_MESSAGE_BYTES": "swell.http._httptools",
}


__getattr__ = lazy_attributes(__name__, _LAZY)
