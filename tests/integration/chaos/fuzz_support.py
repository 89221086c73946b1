"""Helpers for the malformed-input and fuzz tests (a module of its own: test files must not import conftest).

One ``swell serve`` with small body limits and a max_replica cap of 1 (nothing
a test sends can start more than one replica on a 2-core machine), and the
echo example pushed and published, so that path parameters can name real ids.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "live"))

from swell_live import KEY, REPO, Swell, package_archive, start_server, stop_server  # type: ignore[import-not-found]  # noqa: E402

__all__ = [
    "ECHO",
    "KEY",
    "MAX_REQUEST_BYTES",
    "MAX_UPLOAD_BYTES",
    "Live",
    "assert_names_the_problem",
    "live_server",
    "package_archive",
]

ECHO = REPO / "examples" / "echo"
# Small limits, so that "too large" costs kilobytes, not the default 32 MiB / 2 GiB.
MAX_REQUEST_MB = 0.0625  # 64 KiB
MAX_UPLOAD_MB = 1.0
MAX_REQUEST_BYTES = int(MAX_REQUEST_MB * 1024 * 1024)
MAX_UPLOAD_BYTES = int(MAX_UPLOAD_MB * 1024 * 1024)


@dataclass
class Live:
    """The running server, its client, and the pushed echo model."""

    swell: Swell
    pushed: dict[str, Any]

    @property
    def http(self) -> httpx.Client:
        return self.swell.http

    @property
    def model_id(self) -> str:
        return str(self.pushed["model_id"])

    @property
    def deployment_id(self) -> str:
        return str(self.pushed["deployment_id"])

    @property
    def settings_url(self) -> str:
        return str(self.swell.settings_url(self.pushed))

    @property
    def predict_url(self) -> str:
        return str(self.swell.predict_path(self.pushed))

    def settings(self) -> dict[str, Any]:
        response = self.http.get(self.settings_url)
        assert response.status_code == 200, response.text
        return dict(response.json())


def live_server(data_dir: Path) -> Iterator[Live]:
    """Start the server, push examples/echo as a published deployment, stop it afterwards."""
    process, swell = start_server(
        data_dir,
        "--max-request-mb", str(MAX_REQUEST_MB),
        "--max-upload-mb", str(MAX_UPLOAD_MB),
        "--max-replica-cap", "1",
        "--no-fork-server",
        "--pool-size", "0",
    )
    try:
        pushed = swell.push(ECHO, name="echo", publish=True, promote=True)
        yield Live(swell, pushed)
    finally:
        stop_server(process, swell)


def assert_names_the_problem(response: httpx.Response) -> dict[str, Any]:
    """A 4xx whose JSON body has ``error`` and a ``reason`` or ``detail`` entries naming field, value, allowed."""
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    try:
        body = response.json()
    except ValueError:
        pytest.fail(f"{response.status_code} without a JSON body: {response.text[:500]!r}")
    assert isinstance(body, dict) and body.get("error"), body
    reason, detail = body.get("reason"), body.get("detail")
    assert reason or detail, f"{response.status_code} says what, not why: {body}"
    if detail is not None:
        assert isinstance(detail, list) and detail, body
        for entry in detail:
            assert {"field", "value", "allowed"} <= entry.keys(), body
            assert entry["allowed"], body
    return dict(body)
