"""The lean HTTP server for the hot route, and its hand-off to uvicorn, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from swell.http import read_body, respond
from swell.http._fastpath import FastPathProtocol, fast_path_protocol

SEEN: list[dict[str, Any]] = []
LARGE = 1 << 20
GATE: list[asyncio.Event] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = await read_body(scope, receive)
    SEEN.append({"path": scope["path"], "method": scope["method"], "query": scope["query_string"],
                 "headers": dict(scope["headers"]), "body": body, "fast": type(receive.__self__).__name__ == "_Cycle"})
    path = scope["path"]
    if path.endswith("/boom"):
        raise RuntimeError("boom")
    if path.endswith("/stream"):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await GATE[0].wait()
        await send({"type": "http.response.body", "body": b"two", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path.endswith("/hang"):
        message = await receive()  # blocks until the caller goes
        SEEN.append({"after": message["type"]})
        return
    if path.endswith(("/short", "/badheader", "/close")):
        headers = [(b"content-length", b"10")]
        if path.endswith("/badheader"):
            headers.append((b"x-evil", b"a\r\nset-cookie: x"))
        if path.endswith("/close"):
            headers = [(b"content-length", b"2"), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    if "/respond" in path:  # one whole answer through respond(): the cycle's swell_reply
        if path.endswith("/respond-short"):
            await respond(send, 200, b"ok", [(b"content-length", b"10")])
        elif path.endswith("/respond-badheader"):
            await respond(send, 200, b"ok", [(b"x-evil", b"a\r\nset-cookie: x")])
        else:
            out = json.dumps({"path": path, "len": len(body)}).encode()
            await respond(send, 200, out, [(b"content-type", b"application/json")])
        return
    if path.endswith("/lists"):  # header pairs as lists, as some apps send them
        await send({"type": "http.response.start", "status": 200,
                    "headers": [[b"content-type", b"text/plain"], [b"content-length", b"2"]]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    if path.endswith("/large"):  # a small request, a large answer
        await respond(send, 200, b"x" * LARGE, [(b"content-type", b"text/plain")])
        return
    if path.endswith("/empty"):
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    out = json.dumps({"path": path, "len": len(body)}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(out))]})
    await send({"type": "http.response.body", "body": out})


@contextlib.asynccontextmanager
async def serving(http: Any, timeout_keep_alive: int = 5) -> AsyncIterator[int]:
    """uvicorn with ``http`` as its protocol on a free port, until the block ends."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=http, lifespan="off", log_config=None, access_log=False, loop="asyncio",
                            timeout_keep_alive=timeout_keep_alive)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 10)
        sock.close()


@pytest.fixture
async def port() -> AsyncIterator[int]:
    SEEN.clear()
    GATE[:] = [asyncio.Event()]
    async with serving(fast_path_protocol(b"POST /model/")) as bound:
        yield bound


def post(path: str, body: bytes = b'{"x": 1}', extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n%s\r\n%s" % (path.encode(), len(body), extra, body)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b":")
            headers[name.lower()] = value.strip()
    if b"content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers[b"content-length"])), 5)
    elif headers.get(b"transfer-encoding") == b"chunked":
        body = b""
        while True:
            size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), 5))[:-2], 16)
            chunk = await asyncio.wait_for(reader.readexactly(size + 2), 5)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = b""
    return status, headers, body


async def test_hot_requests_are_served_here_kept_alive_with_their_headers_and_query(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for i in range(3):
        writer.write(post(f"/model/m{i}/predict?timeout=3", b'{"i": %d}' % i, b"authorization: Api-Key k\r\n"))
        status, headers, body = await read_response(reader)
        assert status == 200 and json.loads(body) == {"path": f"/model/m{i}/predict", "len": 8}
        assert b"date" in headers and headers[b"content-type"] == b"application/json"
    assert [s["fast"] for s in SEEN] == [True, True, True]
    assert SEEN[0]["query"] == b"timeout=3" and SEEN[0]["headers"][b"authorization"] == b"Api-Key k"
    assert SEEN[2]["body"] == b'{"i": 2}' and SEEN[0]["method"] == "POST"
    writer.close()


async def test_a_request_in_pieces_and_two_pipelined_in_one_write(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = post("/model/a/predict", b"x" * 1000)
    for i in range(0, len(data), 7):
        writer.write(data[i:i + 7])
        await writer.drain()
        await asyncio.sleep(0)
    assert (await read_response(reader))[2] == b'{"path": "/model/a/predict", "len": 1000}'
    writer.write(post("/model/b/predict") + post("/model/c/predict", b""))
    assert json.loads((await read_response(reader))[2])["path"] == "/model/b/predict"
    assert json.loads((await read_response(reader))[2]) == {"path": "/model/c/predict", "len": 0}
    writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n",
        b"POST /v1/models/push HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}",
        b"POST /model/a/predict HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"POST /model/a/predict HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n{}",
        b"POST /model/a/predict HTTP/1.0\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}",
        b"POST /model/a/predict HTTP/1.1\r\nhost: t\r\n\r\n",
    ],
)
async def test_anything_else_is_uvicorn_s_from_the_first_byte(port: int, request_bytes: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request_bytes)
    status, _, body = await read_response(reader)
    if b"expect" in request_bytes:
        assert status == 100
        status, _, body = await read_response(reader)
    assert status == 200 and json.loads(body)["path"] in ("/health", "/v1/models/push", "/model/a/predict")
    assert [s["fast"] for s in SEEN] == [False]
    writer.close()


async def test_a_hot_connection_hands_over_mid_way_even_when_pipelined(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/model/a/predict"))
    await read_response(reader)
    writer.write(post("/model/b/predict") + b"GET /other HTTP/1.1\r\nhost: t\r\n\r\n" + post("/model/c/predict"))
    paths = [json.loads((await read_response(reader))[2])["path"] for _ in range(3)]
    assert paths == ["/model/b/predict", "/other", "/model/c/predict"]
    assert [s["fast"] for s in SEEN] == [True, True, False, False]
    writer.close()


async def test_malformed_head_goes_to_uvicorn_which_answers_400(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /model/a/predict HTTP/1.1\r\ncontent-length: x\r\n\r\n")
    status, _, _ = await read_response(reader)
    assert status == 400
    writer.close()


async def test_streams_are_chunked_and_not_held_back(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/model/a/stream"))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b"transfer-encoding: chunked" in head
    assert (await asyncio.wait_for(reader.readuntil(b"one\r\n"), 5)).endswith(b"3\r\none\r\n")
    GATE[0].set()
    assert (await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)).endswith(b"3\r\ntwo\r\n0\r\n\r\n")
    writer.write(post("/model/a/predict"))  # still kept alive
    assert (await read_response(reader))[0] == 200
    writer.close()


async def test_errors_204_close_and_disconnect(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/model/a/empty"))
    status, headers, body = await read_response(reader)
    assert status == 204 and body == b"" and b"transfer-encoding" not in headers
    writer.write(post("/model/a/boom"))
    status, headers, body = await read_response(reader)
    assert status == 500 and body == b"Internal Server Error" and headers[b"connection"] == b"close"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after the 500
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/model/a/predict", extra=b"connection: close\r\n"))
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers[b"connection"] == b"close"
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/model/a/hang"))
    while not SEEN or SEEN[-1].get("path") != "/model/a/hang":
        await asyncio.sleep(0.01)
    writer.close()
    for _ in range(500):
        if SEEN[-1].get("after"):
            break
        await asyncio.sleep(0.01)
    assert SEEN[-1] == {"after": "http.disconnect"}


def test_the_prefix_is_per_class() -> None:
    assert fast_path_protocol(b"POST /v1/models/").prefix == b"POST /v1/models/"
    assert FastPathProtocol.prefix == b"POST /model/"


async def test_paths_are_decoded_as_uvicorn_does_and_a_non_ascii_one_is_uvicorn_s_400(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/model/a%20b/predict"))
    assert json.loads((await read_response(reader))[2])["path"] == "/model/a b/predict"
    writer.write(b"POST /model/\xc3\xa9/predict HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n")
    assert (await read_response(reader))[0] == 400
    writer.close()


async def test_a_large_body_in_many_pieces_arrives_whole(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = bytes(range(256)) * 4096  # 1 MiB
    data = post("/model/big/predict", body)
    for i in range(0, len(data), 65536):
        writer.write(data[i:i + 65536])
        await writer.drain()
    assert json.loads((await read_response(reader))[2]) == {"path": "/model/big/predict", "len": len(body)}
    assert SEEN[-1]["body"] == body and SEEN[-1]["fast"]
    writer.close()


async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout() -> None:
    async with serving(FastPathProtocol, timeout_keep_alive=1) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(4):  # a busy connection stays open, whenever its one timer fires
            writer.write(post("/model/a/predict"))
            assert (await read_response(reader))[0] == 200
            await asyncio.sleep(0.1)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # then, idle, it is closed
        writer.close()


async def test_what_uvicorn_refuses_in_an_answer_is_refused_here(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/model/a/badheader"))  # header injection: nothing written, the connection dropped
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/model/a/short"))  # fewer bytes than its content-length: the connection is dropped
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b"content-length: 10" in head
    assert await asyncio.wait_for(reader.read(), 5) == b"ok"
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/model/a/close"))  # the app's own close: said once, and done
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.count(b"connection: close") == 1
    assert await asyncio.wait_for(reader.read(), 5) == b"ok"
    writer.close()


async def test_header_pairs_may_be_lists_and_a_checked_header_is_checked_once(port: int) -> None:
    from swell.http import _fastpath

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(2):
        writer.write(post("/model/a/lists"))
        status, headers, body = await read_response(reader)
        assert (status, headers[b"content-type"], body) == (200, b"text/plain", b"ok")
    writer.write(post("/model/a/predict"))
    assert (await read_response(reader))[0] == 200
    assert (b"content-type", b"application/json") in _fastpath._GOOD
    assert not any(isinstance(h, list) for h in _fastpath._GOOD)
    writer.close()


async def test_a_request_that_stops_half_way_is_closed_at_its_deadline_and_counted() -> None:
    from swell.http import ConnectionGuard

    guard = ConnectionGuard(header_timeout=0.3, body_timeout=0.3, max_connections=None)
    async with serving(fast_path_protocol(b"POST /model/", guard), timeout_keep_alive=30) as port:
        halves = {
            "head, after an answer": post("/model/a/predict") + b"POST /model/a/predict HTTP/1.1\r\nhost: x\r\n",
            "body, after an answer": post("/model/a/predict") + post("/model/a/predict")[:-2],
            "head, handed to uvicorn": b"GET /health HTTP/1.1\r\nhost: x\r\n",
            "nothing at all": b"",
        }
        for what, data in halves.items():
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(data)
            if data.startswith(b"POST"):
                assert (await read_response(reader))[0] == 200, what
            assert await asyncio.wait_for(reader.read(), 10) == b"", what  # closed by the server
            writer.close()
        assert guard.closed["header_timeout"] == 3 and guard.closed["body_timeout"] == 1, guard.closed
        assert guard.open == 0


async def test_respond_writes_what_its_two_messages_would_and_refuses_alike(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    for path in ("/model/a/predict", "/model/a/respond", "/model/a/respond"):
        writer.write(post(path))
        status, headers, body = await read_response(reader)
        headers.pop(b"date")
        answers.append((status, headers, json.loads(body)))
    assert answers[0][:2] == answers[1][:2] == answers[2][:2]
    assert answers[1][2] == {"path": "/model/a/respond", "len": 8}
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/model/a/respond-badheader"))  # nothing written, the connection dropped
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/model/a/respond-short"))  # the first content-length is short of the body's
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b"content-length: 10" in head
    assert await asyncio.wait_for(reader.read(), 5) == b"ok"
    writer.close()


async def test_pipelined_requests_wait_while_their_caller_does_not_read(port: int) -> None:
    # A caller that pipelines many small requests for large answers and reads
    # none: each answer would stay in our write buffer.  The next request starts
    # only once the caller has read (enough of) the answers before it.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    count = 32  # 32 MiB of answers: far more than the kernel's socket buffers hold
    sock.sendall(post("/model/a/large") * count)
    for _ in range(50):  # let the server run as far as it will
        await asyncio.sleep(0.01)
    served = len(SEEN)
    assert served <= count // 2, served  # without the wait: every one of them
    reader, writer = await asyncio.open_connection(sock=sock)
    for _ in range(count):  # reading, every answer comes, whole and in order
        status, _, body = await read_response(reader)
        assert status == 200 and len(body) == LARGE
    assert len(SEEN) == count
    writer.write(post("/model/a/predict"))  # and the connection is still served
    assert (await read_response(reader))[0] == 200
    writer.close()


@pytest.mark.parametrize(
    ("head", "says"),
    [
        (b"POST /model/a/predict HTTP/1.1\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n",
         "Transfer-Encoding can't be present with Content-Length"),
        (b"POST /model/a/predict HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n", "Duplicate Content-Length"),
        (b"POST /model/a/predict HTTP/1.1\r\ncontent-length: -1\r\n\r\n", "Invalid character in Content-Length"),
        (b"POST /model/a/predict HTTP/1.1\r\ncontent-length: " + b"9" * 40 + b"\r\n\r\n", "Content-Length overflow"),
        (b"PATCH /v1/x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "Invalid character in chunk size"),
        (b"GET /v1/x HTTP/1.1\r\nx-a: \x01\r\n\r\n", "Invalid header value char"),
        (b"POST /model/\xff/predict HTTP/1.1\r\ncontent-length: 0\r\n\r\n", "Invalid HTTP request received"),
        (b"GET /v1/x?q=" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", "url is too long"),
        (b"GET /v1/\xc3\xa9 HTTP/1.1\r\n\r\n", "Invalid char in url path"),
    ],
)
async def test_a_request_that_cannot_be_parsed_is_a_json_400_saying_why(port: int, head: bytes, says: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    status, headers, body = await read_response(reader)
    assert (status, headers[b"content-type"], headers[b"connection"]) == (400, b"application/json", b"close")
    answer = json.loads(body)
    assert answer["error"] == "bad request" and says in answer["reason"], answer
    writer.close()


@pytest.mark.parametrize("start", [b"GET /other HTTP/1.1\r\nhost: t\r\nx-big: ", b"POST /model/a/predict HTTP/1.1\r\nx-big: "])
async def test_an_endless_head_is_a_431_once_it_passes_the_limit(port: int, start: bytes) -> None:
    from swell.http._httptools import MAX_HEAD_BYTES

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(start)
    for _ in range(MAX_HEAD_BYTES // 65536 + 4):  # just past the limit
        writer.write(b"a" * 65536)
        await writer.drain()
    status, headers, body = await read_response(reader)
    assert (status, headers[b"content-type"], headers[b"connection"]) == (431, b"application/json", b"close")
    assert json.loads(body) == {
        "error": "request head too large",
        "reason": f"the request line and headers passed {MAX_HEAD_BYTES} bytes, the limit",
    }
    # What the client still sends is taken and dropped (no reset that could
    # destroy the answer), and our side is closed.
    writer.write(b"a" * MAX_HEAD_BYTES)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_an_endless_trailer_closes_the_connection_once_it_passes_the_limit(port: int) -> None:
    from swell.http._httptools import MAX_HEAD_BYTES

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /other HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nx-trailer: ")
    sent = 0
    with contextlib.suppress(ConnectionError):
        while sent < 32 * MAX_HEAD_BYTES:  # without the limit: all of it taken, by copies
            writer.write(b"a" * 65536)
            await writer.drain()
            sent += 65536
    assert sent < 32 * MAX_HEAD_BYTES
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_a_hot_request_asking_to_upgrade_is_uvicorn_s_not_a_dropped_connection(port: int) -> None:
    # httptools raises HttpParserUpgrade (no HttpParserError) at the end of
    # such a head: it escaped data_received and the connection was dropped
    # with "Fatal error on transport" and no answer.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/model/a/predict", b"{}", b"upgrade: foo\r\nconnection: upgrade\r\n"))
    status, _, body = await read_response(reader)
    assert status == 200 and json.loads(body)["path"] == "/model/a/predict"
    assert SEEN[-1]["fast"] is False  # uvicorn served it, as it serves any upgrade
    writer.close()
