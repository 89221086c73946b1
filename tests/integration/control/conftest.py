from __future__ import annotations

import tarfile
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from swell.autoscaling import VirtualClock
from swell.config import ServerSettings
from swell.control import ControlPlane, SwellApp
from swell.serving._testing import FakeBackend

MakeArchive = Callable[..., Path]


@pytest.fixture
def make_archive(tmp_path: Path) -> MakeArchive:
    counter = iter(range(1000))

    def make(config: dict[str, Any] | str | None = None, model: str = "class Model:\n    def predict(self, x):\n        return x\n") -> Path:
        n = next(counter)
        root = tmp_path / f"pkg{n}"
        (root / "model").mkdir(parents=True)
        (root / "model" / "model.py").write_text(textwrap.dedent(model))
        text = config if isinstance(config, str) else yaml.safe_dump(config or {"model_name": "m"})
        (root / "config.yaml").write_text(text)
        archive = tmp_path / f"pkg{n}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(root, arcname=".")
        return archive

    return make


class WallClock:
    """The plane's wall clock, moved by hand (days pass in a test without waiting)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def plane(
    tmp_path: Path, backend: FakeBackend, wall: WallClock, database_url: str
) -> AsyncIterator[ControlPlane]:
    """A started plane over a real database (SQLite, then PostgreSQL), a fake backend and injected clocks."""
    settings = ServerSettings(data_dir=tmp_path / "data", max_replica_cap=5, database_url=database_url)
    p = ControlPlane(settings, backend, clock=VirtualClock(), wall_clock=wall, api_key="k1")
    await p.start(background=False)  # tests tick the loop and run housekeeping themselves
    yield p
    await p.close()


@pytest.fixture
async def client(plane: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    """The server's ASGI app over ``plane``, called without sockets."""
    transport = httpx.ASGITransport(app=SwellApp(plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://swell") as c:
        yield c
