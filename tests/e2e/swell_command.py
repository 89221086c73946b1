"""How the e2e tests run ``swell`` (a module of its own: test files must not import conftest)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest


def swell_command() -> list[str]:
    """The ``swell`` of the interpreter running the tests (CI's venv), never another one on PATH."""
    found = Path(sys.executable).with_name("swell")
    if found.exists():
        return [str(found)]
    return [sys.executable, "-c", "from swell.cli import main; main()"]


def run(*args: str, env: dict[str, str], stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``swell ARGS`` as a user runs it (the exit status is the caller's to check)."""
    return subprocess.run(
        [*swell_command(), *args], capture_output=True, text=True, env=env, timeout=timeout, check=False,
        input=stdin if stdin is not None else "",
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    """The one JSON object a successful ``--json`` command printed."""
    assert result.returncode == 0, f"rc {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return json.loads(result.stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(data_dir: Path, key: str, *args: str) -> Iterator[dict[str, str]]:
    """``swell serve`` on 127.0.0.1 with its log in ``data_dir/server.log``; yields the clients'
    environment (SWELL_URL, SWELL_API_KEY) and stops the server with SIGINT, as Ctrl-C."""
    port = free_port()
    env = {**os.environ, "SWELL_API_KEY": key, "SWELL_URL": f"http://127.0.0.1:{port}", "PYTHONUNBUFFERED": "1"}
    log_path = data_dir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*swell_command(), "serve", "--port", str(port), "--data-dir", str(data_dir / "data"), *args],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data_dir,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{env['SWELL_URL']}/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(log_path.read_text())
        time.sleep(0.1)
    try:
        yield env
    finally:
        process.send_signal(signal.SIGINT)  # replicas must stop with the server
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
