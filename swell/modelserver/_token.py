"""The replica's door key: with ``SWELL_REPLICA_TOKEN`` set, every request must carry it.

A replica on a cluster listens on the node's network address (the Ray backend),
where any process on that network could reach it; the router sends the
deployment's token in ``x-swell-replica-token`` and nothing else knows it.
Without the variable (the process backend's Unix sockets) nothing changes.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from swell.http import respond, websocket_refusal

TOKEN_ENV = "SWELL_REPLICA_TOKEN"
TOKEN_HEADER = b"x-swell-replica-token"

_UNAUTHORIZED = json.dumps(
    {"error": "unauthorized", "reason": f"this replica answers only its router (header {TOKEN_HEADER.decode()})"}
).encode()


def require_token(app: Any, token: str) -> Any:
    """``app`` behind a check of the token header; anything else gets 401."""
    expected = token.encode()

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            given = next((v for k, v in scope["headers"] if k == TOKEN_HEADER), b"")
            if not hmac.compare_digest(given, expected):
                await respond(send if kind == "http" else websocket_refusal(scope, send), 401, _UNAUTHORIZED)
                return
        await app(scope, receive, send)

    return guarded
