"""Thousands of connections that never finish their request do not stop the server:
over ``--max-connections`` the oldest slow ones are closed, the rest at the header or
body timeout, and ``/health`` and a predict keep answering meanwhile."""

from __future__ import annotations

import resource
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "live"))
from swell_live import KEY, SLEEPY, Swell, start_server, stop_server  # type: ignore[import-not-found]  # noqa: E402

SOCKETS = 3000
CAP = 500
TIMEOUT = 2  # --header-timeout and --body-timeout, seconds
HALF_HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\n"  # handed to uvicorn, never ends
HALF_BODY = b"POST /model/m/environments/production/predict HTTP/1.1\r\nHost: x\r\ncontent-length: 10\r\n\r\n{\"a\""


@pytest.fixture
def swell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swell]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, SOCKETS + 1024) if hard != resource.RLIM_INFINITY else SOCKETS + 1024
    if want < SOCKETS + 256:
        pytest.skip(f"the open-file hard limit {hard} is too low for {SOCKETS} sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    process, server = start_server(
        tmp_path_factory.mktemp("swell-data"),
        "--max-connections", str(CAP), "--header-timeout", str(TIMEOUT), "--body-timeout", str(TIMEOUT),
    )
    try:
        yield server
    finally:
        stop_server(process, server)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _closed_by_server(sock: socket.socket, deadline: float) -> bool:
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _closed_counts(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Api-Key {KEY}"}, timeout=5).text
    counts = {}
    for line in text.splitlines():
        if line.startswith("swell_connections_closed_total{"):
            name, value = line.rsplit(" ", 1)
            counts[name.split('reason="')[1].rstrip('"}')] = float(value)
    return counts


def test_a_flood_of_half_sent_requests_is_closed_and_the_server_keeps_answering(tmp_path: Path, swell: Swell) -> None:
    root = tmp_path / "pkg"
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.py").write_text(SLEEPY)
    (root / "config.yaml").write_text("{}\n")
    pushed = swell.push(root, name="m")
    path = swell.predict_path(pushed)
    assert swell.http.post(path, json={"i": 0}).status_code == 200  # a replica is up

    flood: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        for i in range(SOCKETS):
            if time.monotonic() > deadline:
                break
            try:
                sock = socket.create_connection(("127.0.0.1", int(swell.url.rsplit(":", 1)[1])), timeout=5)
                sock.sendall(HALF_HEAD if i % 2 else HALF_BODY)
            except OSError:
                continue  # closed over the cap before we wrote: what the cap is for
            flood.append(sock)
        assert len(flood) > CAP

        # While they are open (the newest CAP of them), the server answers.
        with httpx.Client(base_url=swell.url, headers={"Authorization": f"Api-Key {KEY}"}, timeout=5) as client:
            assert client.get("/health").status_code == 200
            answer = client.post(path, json={"i": 1})
            assert answer.status_code == 200, answer.text
            assert answer.json()["i"] == 1

        # Every half-sent request's connection is closed by the server by the timeout.
        deadline = time.monotonic() + TIMEOUT + 15
        still_open = [sock for sock in flood if not _closed_by_server(sock, deadline)]
        assert not still_open, f"{len(still_open)} half-sent connections still open\n{swell.tail()}"
    finally:
        for sock in flood:
            sock.close()

    counts = _closed_counts(swell.url)
    assert counts["cap"] >= len(flood) - CAP - 5, counts
    assert counts["header_timeout"] >= 1 and counts["body_timeout"] >= 1, counts
    assert counts["cap"] + counts["header_timeout"] + counts["body_timeout"] >= len(flood), counts
    assert "swell_connections_closed_total counts them" in swell.log.read_text()
    assert httpx.get(f"{swell.url}/health", timeout=5).status_code == 200
