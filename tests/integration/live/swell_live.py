"""Helpers shared by the live tests (a module of its own: test files must not import conftest)."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tarfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from ray_live import require_ray  # type: ignore[import-not-found]

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
    """A running server and a client for it.

    ``backend`` is what runs its replicas ("process" or "ray"); on Ray,
    ``cluster`` is the test's :class:`ray_live.RayCluster`.
    """

    def __init__(self, url: str, log: Path, backend: str = "process", cluster: Any = None) -> None:
        self.url = url
        self.log = log
        self.backend = backend
        self.cluster = cluster
        self.pushed: list[dict[str, Any]] = []  # what a test pushed and did not settle yet
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Api-Key {KEY}"}, timeout=60)

    def push(self, directory: Path, *, name: str | None = None, publish: bool = True, promote: bool = False) -> dict[str, Any]:
        params = {"publish": str(publish).lower(), "promote": str(promote).lower()}
        if name:
            params["model_name"] = name
        response = self.http.post("/v1/models/push", params=params, content=package_archive(directory))
        assert response.status_code == 201, response.text
        pushed = dict(response.json())
        self.pushed.append(pushed)
        return pushed

    def settle(self, pushed: dict[str, Any]) -> None:
        """Deactivate a deployment and wait for its replicas to stop (frees a Ray cluster's CPUs)."""
        url = f"/v1/models/{pushed['model_id']}/deployments/{pushed['deployment_id']}/deactivate"
        response = self.http.post(url)
        assert response.status_code == 200, response.text
        self.wait_for(pushed, lambda v: not v["replicas"], timeout=60, what="its replicas stopped")
        if pushed in self.pushed:
            self.pushed.remove(pushed)

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


# ---------------------------------------------------------------- fixtures
# Imported by tests/integration/live/conftest.py and tests/integration/ray/conftest.py;
# a conftest's own ``backend`` fixture says which backend ``swell`` runs.


@pytest.fixture(scope="module")
def swell(backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swell]:
    """``swell serve`` for the module on ``backend``: "process", or "ray" against a
    two-worker Ray cluster in a loopback-only namespace (ray_live)."""
    args: tuple[str, ...] = ()
    cluster = None
    if backend == "ray":
        require_ray()
        cluster = request.getfixturevalue("ray_cluster")
        args = ("--backend", "ray", "--ray-address", cluster.address)
    process, server = start_server(tmp_path_factory.mktemp(f"swell-data-{backend}"), *args)
    server.backend, server.cluster = backend, cluster
    try:
        yield server
    finally:
        stop_server(process, server)


@pytest.fixture(autouse=True)
def settle_on_ray(request: pytest.FixtureRequest) -> Iterator[None]:
    """On the Ray backend, deactivate what a test pushed once it is done: the
    cluster has 4 CPUs, and the next test needs them."""
    yield
    if "swell" not in request.fixturenames:
        return
    server = request.getfixturevalue("swell")
    if server.backend == "ray":
        for pushed in list(server.pushed):
            server.settle(pushed)
    server.pushed.clear()


@pytest.fixture
def make_model(tmp_path: Path) -> Callable[..., Path]:
    """Write a package: model.py source and config (predict_concurrency 1 unless told)."""
    counter = iter(range(1000))

    def make(source: str, config: dict[str, Any] | None = None) -> Path:
        root = tmp_path / f"pkg{next(counter)}"
        (root / "model").mkdir(parents=True)
        (root / "model" / "model.py").write_text(textwrap.dedent(source))
        (root / "config.yaml").write_text(yaml.safe_dump(config or {"runtime": {"predict_concurrency": 1}}))
        return root

    return make
