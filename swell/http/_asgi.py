"""The ASGI vocabulary both HTTP servers share: types, one way to answer, one body reader.

The server's front door (``control``) and each replica (``modelserver``) speak
raw ASGI without a framework on their hot routes; they answer and read bodies
through these few functions so that both do it the same way.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = [
    "JSON_HEADERS",
    "ASGIApp",
    "BodyOverLimit",
    "ClientDisconnected",
    "Receive",
    "Scope",
    "Send",
    "declared_length",
    "header",
    "read_body",
    "respond",
    "websocket_refusal",
]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_HEADERS: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]


class ClientDisconnected(Exception):
    """The caller went away before its request body was read."""


class BodyOverLimit(Exception):
    """A body over ``read_body``'s limit; ``size`` is the declared length, or None when counted past it."""

    def __init__(self, size: int | None) -> None:
        super().__init__(size)
        self.size = size


async def respond(
    send: Send, status: int, body: bytes | dict[str, Any], headers: list[tuple[bytes, bytes]] = JSON_HEADERS
) -> None:
    """One whole answer: ``body`` (a dict is sent as JSON) with its ``content-length``.

    Through the fast path's ``send`` it is written at once, in one piece,
    without the two ASGI messages (its ``swell_reply``); elsewhere it is those two.
    """
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    headers = [*headers, (b"content-length", b"%d" % len(body))]
    reply = getattr(getattr(send, "__self__", None), "swell_reply", None)
    if reply is not None and reply(status, headers, body):
        return
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def websocket_refusal(scope: Scope, send: Send) -> Send:
    """A ``send`` through which :func:`respond` refuses a websocket handshake.

    The answer goes out as the handshake's HTTP response (status and JSON body,
    ASGI's ``websocket.http.response`` extension, which uvicorn has); a server
    without the extension gets a plain close (code 1008, policy violation),
    which the client sees as a 403.
    """
    if "websocket.http.response" in (scope.get("extensions") or {}):

        async def refuse(message: dict[str, Any]) -> None:
            await send({**message, "type": "websocket." + message["type"]})

        return refuse

    async def close(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            await send({"type": "websocket.close", "code": 1008})

    return close


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of request header ``name`` (lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def declared_length(scope: Scope) -> int | None:
    """The request's ``content-length``, or None when absent (chunked) or unreadable."""
    for name, value in scope["headers"]:  # header()'s loop, inline: read_body runs it on every request
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:  # the HTTP parser refuses these before we see them
                return None
    return None


async def read_body(scope: Scope, receive: Receive, limit: int | None = None) -> bytes:
    """The whole request body.

    Raises :class:`BodyOverLimit` as soon as it is known to exceed ``limit``
    bytes (by its ``content-length`` before anything is read, else by counting),
    and :class:`ClientDisconnected` if the caller leaves before it is all here.
    """
    if limit is not None:
        size = declared_length(scope)
        if size is not None and size > limit:
            raise BodyOverLimit(size)
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    body: bytes = message.get("body", b"")
    if limit is not None and len(body) > limit:
        raise BodyOverLimit(None)
    if not message.get("more_body"):
        return body  # the usual case, and the fast path's: the whole body in one message
    chunks = [body]
    count = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")
        count += len(chunk)
        if limit is not None and count > limit:
            raise BodyOverLimit(None)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)
