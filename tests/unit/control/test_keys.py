from __future__ import annotations

import json
from pathlib import Path

from swell.control import ApiKeys


def test_first_start_creates_one_key_and_stores_only_its_hash(tmp_path: Path) -> None:
    keys = ApiKeys(tmp_path / "keys.json")
    key = keys.ensure(None)
    assert key and key.startswith("sw_")
    assert key not in (tmp_path / "keys.json").read_text()
    assert ApiKeys(tmp_path / "keys.json").ensure(None) is None  # not created twice
    again = ApiKeys(tmp_path / "keys.json")
    assert again.check_header(f"Api-Key {key}".encode())
    assert not again.check_header(b"Api-Key wrong")
    assert not again.check_header(None) and not again.check_header(key.encode())


def test_env_key_becomes_a_workspace_key(tmp_path: Path) -> None:
    keys = ApiKeys(tmp_path / "keys.json")
    assert keys.ensure("from-env") is None
    assert keys.check_header(b"Api-Key from-env") and keys.check_header(b"Bearer from-env")
    assert len(json.loads((tmp_path / "keys.json").read_text())["keys"]) == 1
