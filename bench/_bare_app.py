"""The physical limit: a bare uvicorn app (uvloop + httptools) that answers the
benchmark request as the echo model does, with no framework in between.

    python bench/_bare_app.py PORT
"""

from __future__ import annotations

import json
import sys

import uvicorn

_HEADERS = [(b"content-type", b"application/json")]


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    # The same work the echo model's predict path does: decode, wrap, encode.
    payload = json.dumps({"echo": json.loads(body or b"null")}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": payload})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
