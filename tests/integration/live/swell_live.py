"""Helpers shared by the live tests (a module of its own: test files must not import conftest)."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

KEY = "integration-key"
REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def package_archive(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(directory, arcname=".", filter=lambda i: None if "__pycache__" in i.name else i)
    return buffer.getvalue()


def start_server(data_dir: Path, *args: str, port: int | None = None) -> tuple[subprocess.Popen[bytes], Swell]:
    """``swell serve`` on 127.0.0.1 with a short tick, ready to serve (or the test fails with its log)."""
    port = port or free_port()
    log = data_dir / "server.log"
    env = {**os.environ, "SWELL_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-c", "from swell.cli import main; main()", "serve",
                "--port", str(port), "--data-dir", str(data_dir),
                "--tick-seconds", "0.2", "--drain-grace-seconds", "5", "--log-level", "debug",
                "--webhook-allow", "127.0.0.1", *args,  # the tests' receivers listen on loopback
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=data_dir,
        )
    server = Swell(f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 30
    while True:
        try:
            if server.http.get("/health").status_code == 200:
                return process, server
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"swell serve did not start:\n{log.read_text()}")
        time.sleep(0.1)


def stop_server(process: subprocess.Popen[bytes], server: Swell) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    server.http.close()


class Swell:
    """A running server and a client for it."""

    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Api-Key {KEY}"}, timeout=60)

    def push(self, directory: Path, *, name: str | None = None, publish: bool = True, promote: bool = False) -> dict[str, Any]:
        params = {"publish": str(publish).lower(), "promote": str(promote).lower()}
        if name:
            params["model_name"] = name
        response = self.http.post("/v1/models/push", params=params, content=package_archive(directory))
        assert response.status_code == 201, response.text
        return dict(response.json())

    def settings_url(self, pushed: dict[str, Any]) -> str:
        return f"/v1/models/{pushed['model_id']}/deployments/{pushed['deployment_id']}/autoscaling_settings"

    def patch(self, pushed: dict[str, Any], **settings: Any) -> httpx.Response:
        return self.http.patch(self.settings_url(pushed), json=settings)

    def deployment(self, pushed: dict[str, Any]) -> dict[str, Any]:
        response = self.http.get(f"/v1/models/{pushed['model_id']}/deployments/{pushed['deployment_id']}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def predict_path(self, pushed: dict[str, Any]) -> str:
        return f"/model/{pushed['model_id']}/deployment/{pushed['deployment_id']}/predict"

    def wait_for(
        self, pushed: dict[str, Any], check: Callable[[dict[str, Any]], bool], *, timeout: float = 60, what: str = ""
    ) -> dict[str, Any]:
        """Poll the deployment until ``check`` holds; fail with its last view at the deadline."""
        deadline = time.monotonic() + timeout
        view = self.deployment(pushed)
        while not check(view):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what or check}: last view {view}\n--- server log ---\n{self.tail()}")
            time.sleep(0.1)
            view = self.deployment(pushed)
        return view

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


SLEEPY = '''
import os
import time


class Model:
    def predict(self, model_input):
        time.sleep(min(float(model_input.get("sleep", 0)), 10))
        return {"pid": os.getpid(), "i": model_input.get("i")}
'''
