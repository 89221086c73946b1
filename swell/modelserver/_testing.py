"""Launch a real replica process for tests: events pipe, lifeline pipe, Unix socket or port.

Test support only; the serving layer has its own process backend.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ReplicaProcess:
    """``python -m swell.modelserver`` with the Swell env contract wired to pipes."""

    def __init__(self, model_dir: str | Path, *, env: dict[str, str] | None = None,
                 port: int | None = None, socket_dir: str | Path | None = None) -> None:
        self.model_dir = Path(model_dir)
        self._tmp = tempfile.TemporaryDirectory(prefix="swell-replica-", dir=socket_dir)
        events_r, events_w = os.pipe()
        lifeline_r, lifeline_w = os.pipe()
        child_env = {k: v for k, v in os.environ.items()
                     if k not in ("SWELL_REPLICA_SOCKET", "SWELL_REPLICA_PORT", "NUM_LOAD_RETRIES_TRUSS")}
        child_env.update(env or {})
        child_env["SWELL_EVENTS_FD"] = str(events_w)
        child_env["SWELL_LIFELINE_FD"] = str(lifeline_r)
        if port is None:
            self.uds: str | None = os.path.join(self._tmp.name, "r.sock")
            child_env["SWELL_REPLICA_SOCKET"] = self.uds
            self.base_url = "http://replica"
        else:
            self.uds = None
            child_env["SWELL_REPLICA_PORT"] = str(port)
            self.base_url = f"http://127.0.0.1:{port}"
        self.stderr_path = os.path.join(self._tmp.name, "stderr.log")
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "swell.modelserver", "--model-dir", str(self.model_dir)],
            env=child_env, pass_fds=(events_w, lifeline_r), stdout=self._stderr, stderr=self._stderr,
        )
        os.close(events_w)
        os.close(lifeline_r)
        self._events_fd: int | None = events_r
        self.lifeline_fd: int | None = lifeline_w
        self._buffer = b""
        self.events: list[dict[str, Any]] = []

    # -------------------------------------------------------------- events

    def _read_events(self, timeout: float) -> bool:
        if self._events_fd is None:
            return False
        ready, _, _ = select.select([self._events_fd], [], [], max(timeout, 0.0))
        if not ready:
            return True
        data = os.read(self._events_fd, 65536)
        if not data:
            os.close(self._events_fd)
            self._events_fd = None
            return False
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self.events.append(json.loads(line))
        return True

    def wait_event(self, name: str, timeout: float = 20.0) -> dict[str, Any]:
        """The first event called ``name``; AssertionError on timeout, or `failed` when waiting for else."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event["event"] == name:
                    return event
                if event["event"] == "failed" and name != "failed":
                    raise AssertionError(f"replica failed:\n{event['error']}\n{self.stderr()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read_events(remaining):
                raise AssertionError(f"no {name!r} event; got {self.events}\n{self.stderr()}")

    def wait_ready(self, timeout: float = 20.0) -> dict[str, Any]:
        return self.wait_event("ready", timeout)

    # -------------------------------------------------------------- HTTP

    def client(self, timeout: float = 20.0) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=self.uds) if self.uds else None
        return httpx.Client(transport=transport, base_url=self.base_url, timeout=timeout)

    def async_client(self, timeout: float = 20.0) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=self.uds) if self.uds else None
        return httpx.AsyncClient(transport=transport, base_url=self.base_url, timeout=timeout)

    # -------------------------------------------------------------- ending

    def stderr(self) -> str:
        self._stderr.flush()
        return Path(self.stderr_path).read_text(errors="replace")

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then the exit status (SIGKILL and AssertionError past ``timeout``)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 15.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"replica did not exit within {timeout} s\n{self.stderr()}") from None

    def close_lifeline(self) -> None:
        if self.lifeline_fd is not None:
            os.close(self.lifeline_fd)
            self.lifeline_fd = None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.close_lifeline()
        if self._events_fd is not None:
            os.close(self._events_fd)
            self._events_fd = None
        self._stderr.close()
        self._tmp.cleanup()

    def __enter__(self) -> ReplicaProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
