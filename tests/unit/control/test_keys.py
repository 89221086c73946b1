"""API keys: hashed at rest, scoped, revocable; the first start makes one."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from swell.autoscaling import VirtualClock
from swell.config import ServerSettings
from swell.control import ApiKeys, ControlPlane
from swell.control._keys import KeyRecord, KeyType
from swell.serving._testing import FakeBackend


def test_a_key_is_found_by_its_header_and_only_by_it() -> None:
    keys = ApiKeys()
    record, secret = KeyRecord.create(type=KeyType.WORKSPACE, name=None, model_ids=None, now=1.0)
    keys.add(record)
    assert secret.startswith("sw_") and record.sha256 != secret
    assert keys.authenticate(f"Api-Key {secret}".encode()) is record
    assert keys.authenticate(f"Bearer {secret}".encode()) is record
    assert keys.authenticate(b"Api-Key wrong") is None
    assert keys.authenticate(None) is None and keys.authenticate(secret.encode()) is None


def test_revoking_drops_the_cached_header_at_once() -> None:
    keys = ApiKeys()
    record, secret = KeyRecord.create(type=KeyType.WORKSPACE, name=None, model_ids=None, now=1.0)
    keys.add(record)
    header = f"Api-Key {secret}".encode()
    assert keys.authenticate(header) is record  # now cached
    keys.revoke(record.id, 2.0)
    assert keys.authenticate(header) is None and keys.live() == []


def test_invoke_keys_reach_only_their_models() -> None:
    some, _ = KeyRecord.create(type=KeyType.INVOKE, name=None, model_ids=["m1"], now=1.0)
    every, _ = KeyRecord.create(type=KeyType.INVOKE, name=None, model_ids=None, now=1.0)
    workspace, _ = KeyRecord.create(type=KeyType.WORKSPACE, name=None, model_ids=None, now=1.0)
    assert some.can_invoke("m1") and not some.can_invoke("m2") and not some.can_manage()
    assert every.can_invoke("m2") and not every.can_manage()
    assert workspace.can_invoke("m2") and workspace.can_manage()


def test_use_is_recorded_for_the_store() -> None:
    keys = ApiKeys()
    record, secret = KeyRecord.create(type=KeyType.WORKSPACE, name=None, model_ids=None, now=1.0)
    keys.add(record)
    keys.authenticate(f"Api-Key {secret}".encode())
    used = keys.take_used()
    assert list(used) == [record.id] and record.last_used_at == used[record.id]
    assert keys.take_used() == {}


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
