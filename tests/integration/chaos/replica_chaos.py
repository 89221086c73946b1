"""Helpers for the replica-failure tests (a module of its own: test files must not import conftest).

A real ``swell serve`` (the live tests' helpers), model packages written on the
fly, and what a clear error looks like.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "live"))

from swell_live import Swell, start_server, stop_server  # type: ignore[import-not-found]

__all__ = ["Swell", "is_clear_error", "running_server", "write_model"]


@contextmanager
def running_server(data_dir: Path, *args: str) -> Iterator[Swell]:
    process, swell = start_server(data_dir, *args)
    try:
        yield swell
    finally:
        stop_server(process, swell)


def write_model(root: Path, source: str, config: dict[str, Any]) -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.py").write_text(textwrap.dedent(source))
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def is_clear_error(status: int, body: bytes) -> bool:
    """A 5xx the caller can act on: JSON with ``error`` and a ``reason``."""
    if status not in (502, 503, 504):
        return False
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and bool(data.get("error")) and bool(data.get("reason"))
