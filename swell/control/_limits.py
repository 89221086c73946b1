"""Request size limits: answer 413 as soon as a body is known to be too large.

A body is refused before any of it is read when its ``content-length`` says it
is too large, and as soon as the bytes counted so far pass the limit when it
comes chunked.  Nothing beyond the limit is kept in memory or written to disk.

Predict bodies are read by :func:`read_body` on the hot path; the management
app is wrapped in :class:`BodyLimit`, which refuses by ``content-length`` at
once and otherwise raises :class:`BodyTooLarge` from ``receive`` (the app's
exception handler turns it into the same 413).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException

__all__ = ["MIB", "BodyLimit", "BodyTooLarge", "Limit", "declared_length", "read_body"]

MIB = 1024 * 1024

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Limit:
    """The most bytes a body may have, what the body is, and the flag that sets the limit."""

    bytes: int
    what: str = "request body"
    flag: str = "--max-request-mb"


class BodyTooLarge(HTTPException):
    """A body over its :class:`Limit`; ``size`` is the declared length, or None when counted past it.

    An ``HTTPException`` so that FastAPI's body parsing passes it on untouched
    rather than turning it into a 400.
    """

    def __init__(self, limit: Limit, size: int | None = None) -> None:
        given = f"is {size} bytes" if size is not None else f"is more than {limit.bytes} bytes"
        reason = f"the {limit.what} {given}; the limit is {limit.bytes} bytes (set by {limit.flag})"
        super().__init__(413, reason)
        self.limit = limit
        self.size = size
        self.payload: dict[str, Any] = {"error": "request too large", "reason": reason, "limit": limit.bytes}

    def body(self) -> bytes:
        return json.dumps(self.payload).encode()


def declared_length(scope: Scope) -> int | None:
    """The request's ``content-length``, or None when absent (chunked) or unreadable."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:  # the HTTP parser refuses these before we see them
                return None
    return None


async def read_body(scope: Scope, receive: Receive, limit: Limit) -> bytes:
    """The whole request body, or :class:`BodyTooLarge` as soon as it is known to exceed ``limit``."""
    size = declared_length(scope)
    if size is not None and size > limit.bytes:
        raise BodyTooLarge(limit, size)
    message = await receive()
    body: bytes = message.get("body", b"")
    if len(body) > limit.bytes:
        raise BodyTooLarge(limit)
    if not message.get("more_body"):
        return body
    chunks = [body]
    count = len(body)
    while message.get("more_body"):
        message = await receive()
        chunk = message.get("body", b"")
        count += len(chunk)
        if count > limit.bytes:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


_HEADERS = [(b"content-type", b"application/json")]


class BodyLimit:
    """ASGI wrapper: 413 for a declared length over the limit; counts the bytes of the rest.

    ``limit_for`` picks the limit for a request (uploads may be larger than
    JSON bodies).  A body counted past its limit raises :class:`BodyTooLarge`
    from ``receive``; the wrapped app must have an exception handler for it.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], Limit]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        size = declared_length(scope)
        if size is not None and size > limit.bytes:
            refusal = BodyTooLarge(limit, size)
            await send({"type": "http.response.start", "status": 413, "headers": _HEADERS})
            await send({"type": "http.response.body", "body": refusal.body()})
            return
        count = 0

        async def counted() -> dict[str, Any]:
            nonlocal count
            message = await receive()
            if message["type"] == "http.request":
                count += len(message.get("body", b""))
                if count > limit.bytes:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)
