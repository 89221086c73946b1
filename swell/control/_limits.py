"""Size limits: answer 413 as soon as a body (or a package's unpacked size) is known to be too large.

A body is refused before any of it is read when its ``content-length`` says it
is too large, and as soon as the bytes counted so far pass the limit when it
comes chunked.  Nothing beyond the limit is kept in memory or written to disk.

Predict bodies are read by :func:`read_body` on the hot path; the management
app is wrapped in :class:`BodyLimit`, which refuses by ``content-length`` at
once and otherwise raises :class:`BodyTooLarge` from ``receive`` (the app's
exception handler turns it into the same 413).
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException

from swell import http
from swell.http import (
    ASGIApp,
    BodyOverLimit,
    Receive,
    Scope,
    Send,
    declared_length,
    respond,
)

__all__ = [
    "MIB",
    "BodyLimit",
    "BodyTooLarge",
    "Limit",
    "LimitExceeded",
    "check_archive",
    "read_body",
]

MIB = 1024 * 1024



@dataclass(frozen=True)
class Limit:
    """The most bytes a body may have, what the body is, and the flag that sets the limit."""

    bytes: int
    what: str = "request body"
    flag: str = "--max-request-mb"


class LimitExceeded(HTTPException):
    """A 413 or 429 whose JSON body names the limit, its value and the flag that sets it.

    An ``HTTPException`` so that FastAPI's body parsing passes it on untouched
    rather than turning it into a 400.
    """

    def __init__(self, status: int, error: str, reason: str, limit: int, *, retry_after: int | None = None) -> None:
        headers = {"retry-after": str(retry_after)} if retry_after is not None else None
        super().__init__(status, reason, headers=headers)
        self.payload: dict[str, Any] = {"error": error, "reason": reason, "limit": limit}


class BodyTooLarge(LimitExceeded):
    """A body over its :class:`Limit`; ``size`` is the declared length, or None when counted past it."""

    def __init__(self, limit: Limit, size: int | None = None) -> None:
        given = f"is {size} bytes" if size is not None else f"is more than {limit.bytes} bytes"
        reason = f"the {limit.what} {given}; the limit is {limit.bytes} bytes (set by {limit.flag})"
        super().__init__(413, "request too large", reason, limit.bytes)
        self.limit = limit
        self.size = size


def check_archive(archive: Path, max_bytes: int, max_files: int) -> None:
    """413 (:class:`LimitExceeded`) for a package that unpacks to more than ``max_bytes`` or
    ``max_files``, known from its headers before anything is written.

    The archive is read as a stream and the first header past a limit stops
    the reading: a small archive of zeros that unpacks to gigabytes is refused
    after at most ``max_bytes`` of decompression.  Tar errors pass on to the caller.
    """
    total = files = 0
    with tarfile.open(archive, "r|*") as tar:
        for member in tar:
            files += 1
            total += max(member.size, 0)
            if files > max_files:
                raise LimitExceeded(
                    413, "package too large",
                    f"the package has more than {max_files} files; the limit is {max_files} (set by --max-package-files)",
                    max_files,
                )
            if total > max_bytes:
                raise LimitExceeded(
                    413, "package too large",
                    f"the package unpacks to more than {max_bytes} bytes; the limit is {max_bytes} bytes "
                    "(set by --max-package-mb)",
                    max_bytes,
                )


async def read_body(scope: Scope, receive: Receive, limit: Limit) -> bytes:
    """The whole request body, or :class:`BodyTooLarge` as soon as it is known to exceed ``limit``.

    A caller who leaves before the body is all here raises
    :class:`swell.http.ClientDisconnected`: there is nobody to answer.
    """
    try:
        return await http.read_body(scope, receive, limit.bytes)
    except BodyOverLimit as exc:
        raise BodyTooLarge(limit, exc.size) from None


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
            await respond(send, 413, BodyTooLarge(limit, size).payload)
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
