"""Test and benchmark support: an HTTP file server with Range on 127.0.0.1, and moto's S3 server.

Not used by Swell itself.  :class:`FileServer` can ignore ``Range``, omit the
length, or drop connections midway, so the fetcher's fallbacks are exercised
against real sockets.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerBehaviour:
    ignore_range: bool = False  # always 200 with the whole body
    no_length: bool = False  # 200, no Content-Length, body ends when the connection closes
    drop_after: int | None = None  # close the connection after this many body bytes…
    drops: int = 0  # …this many times in all
    etag: bool = True
    fail_status: int | None = None  # answer every GET with this status
    rate: float | None = None  # bytes/s per connection, as CDNs and object stores cap a stream
    token: str | None = None  # answer 401 unless `Authorization: Bearer <token>`


@dataclass
class ServerStats:
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range
    body_bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def gets(self) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "GET"]


class FileServer:
    """Serves ``files`` (name → path) at ``http://127.0.0.1:<port>/<name>`` until closed."""

    def __init__(self, files: dict[str, Path], behaviour: ServerBehaviour | None = None) -> None:
        self.files = files
        self.behaviour = behaviour or ServerBehaviour()
        self.stats = ServerStats()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def do_GET(self) -> None:
                self._serve(head=False)

            def _serve(self, head: bool) -> None:
                b = server.behaviour
                with server.stats.lock:
                    server.stats.requests.append((self.command, self.path, self.headers.get("Range")))
                path = server.files.get(self.path.lstrip("/").split("?")[0])
                if b.token is not None and self.headers.get("Authorization") != f"Bearer {b.token}":
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path is None or b.fail_status:
                    self.send_response(404 if path is None else b.fail_status or 500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                size = path.stat().st_size
                start, end, status = 0, size - 1, 200
                wanted = self.headers.get("Range")
                if wanted and not b.ignore_range and not b.no_length:
                    spec = wanted.strip().removeprefix("bytes=")
                    first, _, last = spec.partition("-")
                    start = int(first)
                    end = min(int(last), size - 1) if last else size - 1
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                self.send_response(status)
                if b.etag:
                    stat = path.stat()
                    self.send_header("ETag", f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"')
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                if b.no_length:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(end - start + 1))
                if not b.ignore_range and not b.no_length:
                    self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if head:
                    return
                count = end - start + 1
                drop = False
                with server.stats.lock:
                    if b.drop_after is not None and b.drops > 0 and count > b.drop_after:
                        b.drops -= 1
                        count, drop = b.drop_after, True
                with open(path, "rb") as f:
                    self.wfile.flush()
                    if b.rate is None:
                        sent = self.request.sendfile(f, offset=start, count=count) if count else 0
                    else:
                        sent, began = 0, time.monotonic()
                        while sent < count:
                            sent += self.request.sendfile(f, offset=start + sent, count=min(1 << 18, count - sent))
                            ahead = sent / b.rate - (time.monotonic() - began)
                            if ahead > 0:
                                time.sleep(ahead)
                with server.stats.lock:
                    server.stats.body_bytes += sent
                if drop:
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.request.shutdown(socket.SHUT_RDWR)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="file-server",
                                        daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_random_file(path: Path, size: int, seed: int = 0) -> str:
    """``size`` pseudo-random bytes (fast, repeatable); returns their sha256."""
    digest = hashlib.sha256()
    block = hashlib.sha256(str(seed).encode()).digest() * (1 << 15)  # 1 MiB
    block = bytes(b ^ (i & 0xFF) for i, b in enumerate(block[:4096])) * 256
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        counter = 0
        while left:
            chunk = counter.to_bytes(8, "little") + block[8:]
            chunk = chunk[: min(left, len(chunk))]
            f.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
            counter += 1
    return digest.hexdigest()


class MotoS3:
    """moto in server mode (``python -m moto.server``) on 127.0.0.1, in a child process."""

    ACCESS_KEY = "testing-key"
    SECRET_KEY = "testing-secret"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("moto.server did not start (is moto[server] installed?)")
            time.sleep(0.05)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a fetcher needs to reach it."""
        return {"AWS_ACCESS_KEY_ID": self.ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY,
                "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint}

    def client(self) -> Any:
        import boto3  # type: ignore[import-untyped]

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.ACCESS_KEY, aws_secret_access_key=self.SECRET_KEY)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> MotoS3:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
