"""What the benchmark scripts share: the three servers under test, Ray's leg in
its namespace, results on disk, the console."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import _wrk
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
RAY_PYTHON = BENCH / ".venv-ray" / "bin" / "python"
ECHO_PACKAGE = REPO / "examples" / "echo"
TRIVIAL_PACKAGE = BENCH / "models" / "trivial"
ECHO_ASYNC_PACKAGE = BENCH / "models" / "echo_async"
API_KEY = "swell-bench-key-0123456789"

#: Progress and logs on stderr; the figures on stdout.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)
out = Console(width=None if sys.stdout.isatty() else 140)


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk_cpu": _wrk.WRK_CPU,
        "server_cpu": _wrk.SERVER_CPU,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")
    console.print(f"wrote {path.relative_to(REPO)}")
    return path


def _stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL what is left after ``grace``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


# --------------------------------------------------------------------------- bare uvicorn


@contextlib.contextmanager
def bare_app(pids: list[int] | None = None) -> Iterator[str]:
    """The physical limit, pinned to the server's core; yields its URL (and
    appends its process id to ``pids``)."""
    port = _wrk.free_port()
    proc = subprocess.Popen(
        ["taskset", "-c", _wrk.SERVER_CPU, sys.executable, str(BENCH / "_bare_app.py"), str(port)],
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    if pids is not None:
        pids.append(proc.pid)
    try:
        _wrk.wait_until(lambda: _wrk.post(url, timeout=2)[0] == 200, 30, "bare uvicorn app")
        yield url
    finally:
        _stop(proc)


# --------------------------------------------------------------------------- Swell


def _swell_command() -> list[str]:
    beside = Path(sys.executable).with_name("swell")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("swell")
    if found:
        return [found]
    return python_swell_command()


def python_swell_command() -> list[str]:
    """``swell`` as this Python running its CLI: the ``swell`` found on PYTHONPATH.

    ``-P``: without it ``-c`` puts the working directory first on ``sys.path``,
    and a server started from one checkout for another (``request_cost.py
    --baseline``) would run the first one's code.
    """
    return [sys.executable, "-P", "-c", "import sys; from swell.cli import main; sys.exit(main())"]


class SwellServer:
    """``swell serve`` pinned to the server's core, on a fresh data dir."""

    def __init__(
        self,
        extra_env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        *,
        launcher: tuple[str, ...] = (),
        start_timeout: float = 60,
    ) -> None:
        self.args = args  # more `swell serve` flags (e.g. --backend ray)
        self.launcher = launcher  # a command the server runs under (e.g. valgrind …)
        self.start_timeout = start_timeout
        self.port = _wrk.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = Path(tempfile.mkdtemp(prefix="swell-bench-"))
        self.headers = {"Authorization": f"Api-Key {API_KEY}"}
        self._env = {
            **os.environ,
            "SWELL_API_KEY": API_KEY,
            "SWELL_URL": self.url,
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.data_dir / "server.log"

    def start(self) -> None:
        cmd = [
            "taskset", "-c", _wrk.SERVER_CPU, *self.launcher,
            *(python_swell_command() if self.launcher else _swell_command()), "serve",
            "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.data_dir), *self.args,
        ]
        log = self.log.open("ab")
        self.proc = subprocess.Popen(
            cmd, env=self._env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

        def healthy() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise SystemExit(f"swell serve exited:\n{self.log.read_text()[-3000:]}")
            return _get(self.url + "/health") == 200

        _wrk.wait_until(healthy, self.start_timeout, "swell serve /health")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cli(self, *args: str, timeout: float = 120) -> dict[str, Any]:
        proc = subprocess.run(
            [*_swell_command(), *args, "--json"],
            env=self._env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"swell {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return json.loads(proc.stdout)  # type: ignore[no-any-return]

    def push(self, package: Path) -> dict[str, Any]:
        return self.cli("push", str(package), "--publish")

    def predict_url(self, model_id: str, deployment_id: str | None = None) -> str:
        if deployment_id is None:
            return f"{self.url}/model/{model_id}/environments/production/predict"
        return f"{self.url}/model/{model_id}/deployment/{deployment_id}/predict"

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import urllib.request

        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Content-Type": "application/json", **self.headers},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read() or b"null")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, grace=15)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _get(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# --------------------------------------------------------------------------- Ray


def ray_available() -> bool:
    return RAY_PYTHON.is_file()


def run_ray_leg(
    mode: str,
    args: list[str],
    *,
    timeout: float,
    on_line: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``_ray_leg.py MODE`` in a loopback-only network namespace, pinned
    to the server's core; return its RESULT."""
    if not ray_available():
        raise SystemExit(
            f"Ray Serve is not installed for the benchmark: python -m venv {RAY_PYTHON.parents[1]}"
            f" && {RAY_PYTHON} -m pip install 'ray[serve]'"
        )
    inner = " ".join(
        [
            "ip link set lo up;",
            "exec taskset -c", _wrk.SERVER_CPU, str(RAY_PYTHON), str(BENCH / "_ray_leg.py"), mode,
            *args,
        ]
    )
    proc = subprocess.Popen(
        ["unshare", "-n", "sh", "-c", inner],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    result: dict[str, Any] | None = None
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None and proc.stderr is not None
    import threading

    tail: list[str] = []

    def pump_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip()
            tail.append(line)
            del tail[:-40]
            if line.startswith("[ray] ") and on_line is not None:
                on_line(line.removeprefix("[ray] "))

    pump = threading.Thread(target=pump_stderr, daemon=True)
    pump.start()
    timer = threading.Timer(timeout, lambda: _stop(proc, grace=2))  # type: ignore[arg-type]
    timer.start()
    try:
        for line in proc.stdout:
            if line.startswith("RESULT "):
                result = json.loads(line.removeprefix("RESULT "))
        proc.wait(max(1.0, deadline - time.monotonic()))
    finally:
        timer.cancel()
        _stop(proc, grace=2)  # type: ignore[arg-type]
        pump.join(2)
    if result is None:
        raise SystemExit("Ray's leg gave no result:\n" + "\n".join(tail))
    return result
