"""Real replica processes on Unix sockets (or 127.0.0.1), Truss packages written per test."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from swell.modelserver._testing import ReplicaProcess

PackageFactory = Callable[..., Path]


@pytest.fixture
def make_package(tmp_path: Path) -> PackageFactory:
    """Write a Truss package: ``model/model.py`` from ``model``, ``config.yaml`` from ``config``,
    plus ``files`` (relative path -> text)."""
    counter = iter(range(1000))

    def make(model: str, config: dict[str, Any] | None = None, files: dict[str, str] | None = None) -> Path:
        root = tmp_path / f"pkg{next(counter)}"
        (root / "model").mkdir(parents=True)
        (root / "model" / "model.py").write_text(textwrap.dedent(model))
        (root / "config.yaml").write_text(yaml.safe_dump(config or {"model_name": "test"}))
        for rel, text in (files or {}).items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        return root

    return make


@pytest.fixture
def replica() -> Iterator[Callable[..., ReplicaProcess]]:
    """Start replicas; every one started is killed at teardown if still running."""
    started: list[ReplicaProcess] = []

    def start(model_dir: Path, **kwargs: Any) -> ReplicaProcess:
        process = ReplicaProcess(model_dir, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()
