"""Clients that misbehave on purpose, against a running server and its real replicas.

Each refusal is a 4xx whose JSON body says what was wrong; the replica that
was sent the bad body keeps serving; a caller that asks for many answers and
reads none does not make the server hold them all.
"""

from __future__ import annotations

import json
import socket
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "live"))
from swell_live import KEY, Swell, start_server, stop_server  # type: ignore[import-not-found]  # noqa: E402

pytestmark = pytest.mark.timeout(300)

# predict: its input back, or ``size`` bytes of padding; each call leaves a line in ``log``.
MODEL = '''
import os


class Model:
    def predict(self, model_input):
        if isinstance(model_input, dict) and "log" in model_input:
            with open(model_input["log"], "a") as out:
                out.write("called\\n")
            return {"pid": os.getpid(), "pad": "x" * int(model_input.get("size", 0))}
        return {"pid": os.getpid(), "echo": model_input}
'''


class Live:
    def __init__(self, swell: Swell, pushed: dict[str, Any], server_pid: int) -> None:
        self.server_pid = server_pid
        self.swell = swell
        self.pushed = pushed
        self.path = swell.predict_path(pushed)
        self.settings = swell.settings_url(pushed)
        self.port = int(swell.url.rsplit(":", 1)[1])

    def pid(self) -> int:
        answer = self.swell.http.post(self.path, json={"log": "/dev/null"})
        assert answer.status_code == 200, answer.text
        return int(answer.json()["pid"])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("hostile")
    package = root / "pkg"
    (package / "model").mkdir(parents=True)
    (package / "model" / "model.py").write_text(textwrap.dedent(MODEL))
    (package / "config.yaml").write_text(yaml.safe_dump({"runtime": {"predict_concurrency": 4}}))
    data = root / "data"
    data.mkdir()
    process, swell = start_server(data, "--max-replica-cap", "1", "--no-fork-server", "--pool-size", "0")
    try:
        pushed = swell.push(package, name="hostile")
        assert swell.patch(pushed, min_replica=1, scale_down_delay=3600).status_code == 200
        swell.wait_for(pushed, lambda v: any(r["state"] == "ready" for r in v["replicas"]), what="a ready replica")
        yield Live(swell, pushed, process.pid)
    finally:
        stop_server(process, swell)


def _head(method: str, path: str, *lines: str) -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: swell", f"Authorization: Api-Key {KEY}", *lines, "", ""]).encode()


def _exchange(live: Live, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the one answer (the server closes after it)."""
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


# --------------------------------------------------------------------------- bodies the replica decodes


@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [
        (b"9" * 5000, "application/json", "Invalid JSON payload: a number has more than 4300 digits"),
        (b'{"n": -' + b"1" * 10_000 + b"}", "application/json", "Invalid JSON payload: a number has more than"),
        (b"\xc1\xff\x00garbage", "application/octet-stream", "Invalid msgpack payload: not msgpack"),
        (b"\x91" * 50_000 + b"\xc0", "application/octet-stream", "Invalid msgpack payload: nested too deep"),
        (b"\xdd\xff\xff\xff\xff", "application/octet-stream", "Invalid msgpack payload: "),
    ],
    ids=["huge-int", "huge-negative-int-in-object", "msgpack-garbage", "msgpack-deep", "msgpack-huge-array"],
)
def test_a_body_the_replica_cannot_decode_is_its_400_and_the_replica_serves_on(
    live: Live, body: bytes, content_type: str, says: str
) -> None:
    before = live.pid()
    response = live.swell.http.post(live.path, content=body, headers={"content-type": content_type})
    assert response.status_code == 400, response.text
    assert response.headers["x-baseten-error-code"] == "700"  # the caller's mistake, as Truss marks it
    error = response.json()["error"]
    assert error.startswith(says) and "Unhandled exception" not in error, error
    assert live.pid() == before  # the same replica answers the next caller


# --------------------------------------------------------------------------- framing the parser refuses


FRAMING = [
    ("Content-Length: 2\r\nTransfer-Encoding: chunked", b"2\r\n{}\r\n0\r\n\r\n", "Transfer-Encoding can't be present"),
    ("Content-Length: 2\r\nContent-Length: 7", b"{}", "Duplicate Content-Length"),
    ("Content-Length: -2", b"{}", "Invalid character in Content-Length"),
    ("Content-Length: 99999999999999999999999", b"{}", "Content-Length overflow"),
    ("Transfer-Encoding: chunked", b"zz\r\n{}\r\n0\r\n\r\n", "Invalid character in chunk size"),
    ("Content-Length: 2\r\nX-Bad: \x01", b"{}", "Invalid header value char"),
]


@pytest.mark.parametrize("route", ["predict", "settings"])
@pytest.mark.parametrize(("lines", "body", "says"), FRAMING, ids=[f[2][:24] for f in FRAMING])
def test_a_request_the_parser_refuses_is_a_json_400_saying_why(
    live: Live, route: str, lines: str, body: bytes, says: str
) -> None:
    before = live.swell.http.get(live.settings).json()
    method, path = ("POST", live.path) if route == "predict" else ("PATCH", live.settings)
    status, headers, answer = _exchange(live, _head(method, path, "Content-Type: application/json", *lines.split("\r\n")) + body)
    assert (status, headers["content-type"], headers["connection"]) == (400, "application/json", "close"), answer
    payload = json.loads(answer)
    assert payload["error"] == "bad request" and says in payload["reason"], payload
    assert live.swell.http.get(live.settings).json() == before
    assert live.swell.http.post(live.path, json={"ok": 1}).json()["echo"] == {"ok": 1}


def test_a_predict_asking_to_upgrade_is_answered_not_dropped(live: Live) -> None:
    # It crashed the fast path's data_received (HttpParserUpgrade): no answer at all.
    status, headers, answer = _exchange(
        live, _head("POST", live.path, "Content-Type: application/json", "Content-Length: 2", "Upgrade: h2c",
                    "Connection: Upgrade, close") + b"{}",
    )
    assert 200 <= status < 500 and headers["content-type"] == "application/json", answer
    assert "Fatal error on transport" not in live.swell.log.read_text()
    assert live.swell.http.post(live.path, json={"ok": 1}).json()["echo"] == {"ok": 1}


def test_a_url_past_the_parsers_limit_is_a_json_400_saying_so(live: Live) -> None:
    status, headers, answer = _exchange(live, _head("GET", "/v1/models?x=" + "a" * 70_000))
    assert (status, headers["content-type"]) == (400, "application/json"), answer
    assert "url is too long" in json.loads(answer)["reason"]  # not httptools' "User callback error"


@pytest.mark.parametrize("name", ["a%00b", "a" * 5000, "%00", "a%00.js"], ids=["nul", "too-long", "only-nul", "nul-ext"])
@pytest.mark.parametrize("folder", ["/ui/static/", "/docs/static/"])
def test_an_unopenable_static_name_is_a_404_not_a_500(live: Live, folder: str, name: str) -> None:
    # No key needed for these: before, a NUL byte or a name too long for the
    # file system was a 500 with a traceback in the server's log, for anyone.
    status, headers, answer = _exchange(live, f"GET {folder}{name} HTTP/1.1\r\nHost: swell\r\nConnection: close\r\n\r\n".encode())
    assert (status, headers["content-type"]) == (404, "application/json"), answer[:300]
    assert json.loads(answer)["error"] == "not found"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("route", ["predict", "management"])
def test_an_endless_header_is_a_431_and_what_follows_is_dropped(live: Live, route: str) -> None:
    # httptools bounds no head and grows a header value by copies: 57 MB of one
    # header took the server's memory up by 92 MB (and its CPU) before.
    first = (f"POST {live.path}" if route == "predict" else "GET /v1/models") + " HTTP/1.1\r\nHost: swell\r\nX-Big: "
    before = _rss_mb(live.server_pid)
    with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
        sock.sendall(first.encode())
        chunk = b"a" * (1 << 20)
        try:
            for _ in range(32):
                sock.sendall(chunk)
        except ConnectionError:
            pass  # closed after the answer, as it may be
        grew = _rss_mb(live.server_pid) - before
        answer = b""
        while data := sock.recv(65536):
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), answer[:300]
    assert json.loads(body)["error"] == "request head too large"
    assert grew < 16, f"the server grew {grew:.0f} MB for one endless header"
    assert live.swell.http.post(live.path, json={"ok": 1}).json()["echo"] == {"ok": 1}


@pytest.mark.parametrize("route", ["predict", "settings"])
def test_an_endless_trailer_closes_the_connection_and_costs_no_memory(live: Live, route: str) -> None:
    method, path = ("POST", live.path) if route == "predict" else ("PATCH", live.settings)
    before_settings = live.swell.http.get(live.settings).json()
    before = _rss_mb(live.server_pid)
    start = _head(method, path, "Content-Type: application/json", "Transfer-Encoding: chunked") + b"2\r\n{}\r\n0\r\nX-T: "
    sent = 0
    with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
        sock.sendall(start)
        try:
            while sent < 256:
                sock.sendall(b"a" * (1 << 20))
                sent += 1
        except ConnectionError:
            pass
        grew = _rss_mb(live.server_pid) - before
    assert sent < 256, "256 MB of one trailer taken"
    assert grew < 16, f"the server grew {grew:.0f} MB for one endless trailer"
    assert live.swell.http.get(live.settings).json() == before_settings
    assert live.swell.http.post(live.path, json={"ok": 1}).json()["echo"] == {"ok": 1}


# --------------------------------------------------------------------------- management bodies


@pytest.mark.parametrize("route", ["settings", "async_predict"])
def test_a_huge_integer_in_a_management_body_is_a_400_saying_so(live: Live, route: str) -> None:
    before = live.swell.http.get(live.settings).json()
    if route == "settings":
        path, method, body = live.settings, "PATCH", b'{"scale_down_delay": ' + b"9" * 5000 + b"}"
    else:
        path, method = live.path.replace("/predict", "/async_predict"), "POST"
        body = b'{"model_input": ' + b"9" * 5000 + b"}"
    response = live.swell.http.request(method, path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": "invalid JSON",
        "reason": f"a number in the body's JSON has more than {sys.get_int_max_str_digits()} digits",
    }
    assert live.swell.http.get(live.settings).json() == before


def test_too_many_schedules_are_refused_by_count_and_nothing_changes(live: Live) -> None:
    # 100,000 schedules fit in the request limit; validating them held the event loop.
    before = live.swell.http.get(live.settings).json()
    window = {"min_replica": 0, "start": "08:00", "end": "09:00"}
    response = live.swell.http.patch(live.settings, json={"scale_down_delay": 61, "schedules": [window] * 100_000})
    assert response.status_code == 422, response.text
    (entry,) = response.json()["detail"]
    assert entry["field"] == "schedules" and entry["value"] == "100000 items" and "at most 100" in entry["allowed"]
    assert len(response.content) < 1000  # the count, not the list, comes back
    assert live.swell.http.get(live.settings).json() == before


def test_follows_are_capped_and_a_closed_one_gives_its_place_back(live: Live) -> None:
    from swell.control._observe import MAX_FOLLOWS

    events = f"/v1/models/{live.pushed['model_id']}/deployments/{live.pushed['deployment_id']}/events?follow=true"
    logs = events.replace("/events?", "/logs?")
    socks: list[socket.socket] = []
    try:
        for i in range(MAX_FOLLOWS):
            sock = socket.create_connection(("127.0.0.1", live.port), timeout=10)
            sock.sendall(_head("GET", events if i % 8 else logs))
            socks.append(sock)
        for sock in socks:  # each is streaming (its head is out) before the next is asked for
            assert sock.recv(12) == b"HTTP/1.1 200"
        refused = live.swell.http.get(events.replace("follow=true", "follow=true&x=1"))
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "too many follows" and str(MAX_FOLLOWS) in refused.json()["reason"]
        assert live.swell.http.get(events.replace("?follow=true", "")).status_code == 200  # reading without follow
        assert live.swell.http.post(live.path, json={"ok": 1}).status_code == 200
        socks.pop().close()
        deadline = time.monotonic() + 10
        while True:  # the closed one's place comes back once the server sees it gone
            with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
                sock.sendall(_head("GET", events))
                if sock.recv(12) == b"HTTP/1.1 200":
                    break
            assert time.monotonic() < deadline, "a closed follow kept its place"
            time.sleep(0.2)
    finally:
        for sock in socks:
            sock.close()


# --------------------------------------------------------------------------- a caller that never reads


def test_a_caller_that_pipelines_and_never_reads_is_not_answered_ahead(live: Live, tmp_path: Path) -> None:
    # Small requests, 1 MiB answers, none read: without backpressure the router
    # would run every request and hold every answer (here 48 MiB) for a caller
    # that takes none of them.
    log = tmp_path / "calls.log"
    log.touch()
    count = 48
    request = json.dumps({"log": str(log), "size": 1 << 20}).encode()
    one = _head("POST", live.path, "Content-Type: application/json", f"Content-Length: {len(request)}") + request
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=30)
    try:
        sock.sendall(one * count)
        # Meanwhile another caller is answered at once.
        assert live.swell.http.post(live.path, json={"other": 1}, params={"timeout": 20}).status_code == 200
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(log.read_text().splitlines()) < count:
            time.sleep(0.1)
        ran = len(log.read_text().splitlines())
        assert ran <= count // 2, f"{ran} of {count} run for a caller that read none of them"
        # Reading, the caller gets every answer, whole and in order.
        sock.settimeout(30)
        received = b""
        while received.count(b"HTTP/1.1 200 OK") < count or not received.endswith(b'"}'):
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {received.count(b'HTTP/1.1 200 OK')} answers"
            received += chunk
    finally:
        sock.close()
    assert received.count(b"HTTP/1.1 ") == count
    assert len(log.read_text().splitlines()) == count
