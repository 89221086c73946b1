"""Body size limits: refuse by content-length at once, count chunked bodies, read no further."""

from __future__ import annotations

from typing import Any

import pytest

from swell.control._limits import BodyLimit, BodyTooLarge, Limit, read_body

LIMIT = Limit(10)


class Receiver:
    """An ASGI receive that hands out the given chunks and counts how many were taken."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.taken = 0

    async def __call__(self) -> dict[str, Any]:
        self.taken += 1
        chunk = self.chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}


def _scope(length: int | None = None, path: str = "/x") -> dict[str, Any]:
    headers = [(b"content-length", str(length).encode())] if length is not None else []
    return {"type": "http", "path": path, "headers": headers}


@pytest.mark.parametrize(
    ("length", "chunks", "body"),
    [
        (10, [b"0123456789"], b"0123456789"),
        (None, [b"01234", b"56789"], b"0123456789"),
        (0, [b""], b""),
        (None, [b"", b"ab", b""], b"ab"),
    ],
)
async def test_bodies_up_to_the_limit_are_read_whole(length: int | None, chunks: list[bytes], body: bytes) -> None:
    assert await read_body(_scope(length), Receiver(*chunks), LIMIT) == body


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    receive = Receiver(b"x" * 11)
    with pytest.raises(BodyTooLarge) as info:
        await read_body(_scope(11), receive, LIMIT)
    assert receive.taken == 0
    assert info.value.payload == {
        "error": "request too large",
        "reason": "the request body is 11 bytes; the limit is 10 bytes (set by --max-request-mb)",
        "limit": 10,
    }
    assert info.value.status_code == 413


@pytest.mark.parametrize("chunks", [[b"x" * 11], [b"x" * 6, b"x" * 5, b"never read"], [b"x" * 10, b"y"]])
async def test_a_chunked_body_is_refused_once_the_count_passes_the_limit(chunks: list[bytes]) -> None:
    receive = Receiver(*chunks)
    with pytest.raises(BodyTooLarge) as info:
        await read_body(_scope(), receive, LIMIT)
    assert "is more than 10 bytes" in info.value.payload["reason"]
    assert receive.chunks in ([], [b"never read"])  # nothing past the chunk that crossed the limit


async def test_the_wrapper_answers_413_by_content_length_without_calling_the_app() -> None:
    sent: list[dict[str, Any]] = []
    called = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal called
        called = True

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    upload = Limit(100, "package upload", "--max-upload-mb")
    wrapped = BodyLimit(app, lambda scope: upload if scope["path"] == "/push" else LIMIT)
    await wrapped(_scope(50, "/x"), Receiver(b""), send)
    assert not called and sent[0]["status"] == 413
    assert b"--max-request-mb" in sent[1]["body"]
    sent.clear()
    await wrapped(_scope(50, "/push"), Receiver(b"x" * 50), send)
    assert called and not sent


async def test_the_wrapper_raises_from_receive_once_a_chunked_body_passes_the_limit() -> None:
    got: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            got.append(message["body"])
            if not message["more_body"]:
                return

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("the app's exception handler answers, not the wrapper")

    with pytest.raises(BodyTooLarge):
        await BodyLimit(app, lambda scope: LIMIT)(_scope(), Receiver(b"x" * 6, b"x" * 6, b"x"), send)
    assert got == [b"x" * 6]
