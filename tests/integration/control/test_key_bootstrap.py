"""API keys through a started control plane: the first start makes one, only hashes are stored."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from swell.autoscaling import VirtualClock
from swell.config import ServerSettings
from swell.control import ControlPlane
from swell.serving._testing import FakeBackend


def _plane(data: Path, api_key: str | None = None) -> ControlPlane:
    return ControlPlane(ServerSettings(data_dir=data), FakeBackend(), clock=VirtualClock(), api_key=api_key)


async def test_first_start_creates_one_key_and_stores_only_its_hash(tmp_path: Path) -> None:
    plane = _plane(tmp_path)
    await plane.start(background=False)
    key = plane.new_key
    await plane.close()
    assert key and key.startswith("sw_")
    dump = "\n".join(sqlite3.connect(tmp_path / "swell.db").iterdump())
    assert key not in dump and "api_keys" in dump
    again = _plane(tmp_path)
    await again.start(background=False)
    try:
        assert again.new_key is None  # not created twice
        assert again.keys.authenticate(f"Api-Key {key}".encode()) is not None
    finally:
        await again.close()


async def test_env_key_and_an_older_keys_json_become_workspace_keys(tmp_path: Path) -> None:
    import hashlib

    legacy = {"keys": [{"id": "k_1", "sha256": hashlib.sha256(b"old-key").hexdigest(), "created_at": 5.0}]}
    (tmp_path / "keys.json").write_text(json.dumps(legacy))
    plane = _plane(tmp_path, api_key="from-env")
    await plane.start(background=False)
    try:
        assert plane.new_key is None
        assert plane.keys.authenticate(b"Api-Key from-env") is not None
        assert plane.keys.authenticate(b"Bearer old-key") is not None
        assert not (tmp_path / "keys.json").exists() and (tmp_path / "keys.json.imported").exists()
    finally:
        await plane.close()
