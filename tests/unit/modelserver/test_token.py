"""A replica with SWELL_REPLICA_TOKEN answers only requests that carry it."""

from __future__ import annotations

from typing import Any

from swell.modelserver._token import TOKEN_HEADER, require_token


async def _call(app: Any, headers: list[tuple[bytes, bytes]]) -> int:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    await app({"type": "http", "headers": headers}, receive, send)
    return int(sent[0]["status"])


async def _inner(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})


async def test_only_the_token_gets_through() -> None:
    app = require_token(_inner, "s3cret")
    assert await _call(app, [(TOKEN_HEADER, b"s3cret")]) == 200
    assert await _call(app, []) == 401
    assert await _call(app, [(TOKEN_HEADER, b"s3cre")]) == 401
    assert await _call(app, [(b"authorization", b"s3cret")]) == 401


async def test_a_websocket_without_the_token_is_refused_401() -> None:
    app = require_token(_inner, "s3cret")
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "headers": [], "extensions": {"websocket.http.response": {}}}
    await app(scope, None, send)
    assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 401
    assert sent[1]["type"] == "websocket.http.response.body" and b"x-swell-replica-token" in sent[1]["body"]
