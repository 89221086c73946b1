"""A real ``swell serve`` subprocess on 127.0.0.1, real replica processes, real HTTP."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from swell_live import Swell, start_server, stop_server  # type: ignore[import-not-found]


@pytest.fixture(scope="module")
def swell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swell]:
    process, server = start_server(tmp_path_factory.mktemp("swell-data"))
    try:
        yield server
    finally:
        stop_server(process, server)


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
