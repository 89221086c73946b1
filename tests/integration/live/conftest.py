"""A real ``swell serve`` subprocess on 127.0.0.1, real replica processes, real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from swell_live import KEY, Swell, free_port  # type: ignore[import-not-found]


@pytest.fixture(scope="module")
def swell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swell]:
    data_dir = tmp_path_factory.mktemp("swell-data")
    port = free_port()
    log = data_dir / "server.log"
    env = {**os.environ, "SWELL_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-c", "from swell.cli import main; main()", "serve",
                "--port", str(port), "--data-dir", str(data_dir),
                "--tick-seconds", "0.2", "--drain-grace-seconds", "5", "--log-level", "debug",
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
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"swell serve did not start:\n{log.read_text()}")
        time.sleep(0.1)
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        server.http.close()


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
