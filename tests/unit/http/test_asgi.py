"""The ASGI helpers both servers share: one answer, one body reader."""

from __future__ import annotations

from typing import Any

import pytest

from swell.http import (
    BodyOverLimit,
    ClientDisconnected,
    declared_length,
    header,
    read_body,
    respond,
)


def _receiver(*messages: dict[str, Any]) -> Any:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return receive


def _part(body: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


async def test_respond_sends_one_whole_answer_with_its_length() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await respond(send, 404, {"error": "not found"})
    await respond(send, 200, b"\x00\x01", [(b"content-type", b"application/octet-stream")])
    assert sent[0]["status"] == 404
    assert sent[0]["headers"] == [(b"content-type", b"application/json"), (b"content-length", b"22")]
    assert sent[1] == {"type": "http.response.body", "body": b'{"error": "not found"}'}
    assert sent[2]["headers"] == [(b"content-type", b"application/octet-stream"), (b"content-length", b"2")]


def test_headers_are_read_by_lower_case_name() -> None:
    scope = {"headers": [(b"content-length", b"12"), (b"x-a", b"1"), (b"x-a", b"2")]}
    assert header(scope, b"x-a") == b"1" and header(scope, b"x-b") is None
    assert declared_length(scope) == 12
    assert declared_length({"headers": [(b"content-length", b"twelve")]}) is None


async def test_a_body_in_pieces_is_joined_and_one_in_one_piece_is_not_copied() -> None:
    whole = b"x" * 10
    assert await read_body({"headers": []}, _receiver(_part(whole))) is whole
    assert await read_body({"headers": []}, _receiver(_part(b"ab", True), _part(b""), _part(b"c"))) == b"ab"
    pieces = _receiver(_part(b"ab", True), _part(b"cd", True), _part(b"e"))
    assert await read_body({"headers": []}, pieces, limit=5) == b"abcde"


async def test_a_caller_that_leaves_mid_body_raises_client_disconnected() -> None:
    with pytest.raises(ClientDisconnected):
        await read_body({"headers": []}, _receiver(_part(b"ab", True), {"type": "http.disconnect"}))


async def test_the_limit_refuses_by_declared_length_before_reading_and_by_count_after() -> None:
    with pytest.raises(BodyOverLimit) as declared:
        await read_body({"headers": [(b"content-length", b"6")]}, _receiver(), limit=5)
    assert declared.value.size == 6
    with pytest.raises(BodyOverLimit) as counted:
        await read_body({"headers": []}, _receiver(_part(b"abc", True), _part(b"def", True)), limit=5)
    assert counted.value.size is None
