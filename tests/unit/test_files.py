"""Atomic writes: a failed write leaves the old file and no temporary one behind."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from swell import files
from swell.files import StorageError, atomic_write


def test_atomic_write_replaces_the_file_with_mode_0600(tmp_path: Path) -> None:
    target = tmp_path / "key"
    target.write_bytes(b"old")
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key"]


@pytest.mark.parametrize("call", ["write", "fsync"])
def test_a_full_disk_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    target = tmp_path / "key"
    target.write_bytes(b"old")

    def full(*_args: Any) -> Any:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, call, full)
    with pytest.raises(StorageError) as caught:
        atomic_write(target, b"new")
    monkeypatch.undo()
    assert caught.value.reason.startswith(f"no space left on device writing {target}; nothing was changed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["key"]


def test_a_new_file_is_not_created_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files.os, "write", lambda *_: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(StorageError):
        atomic_write(tmp_path / "secrets.key", b"k" * 44)
    assert list(tmp_path.iterdir()) == []


def test_sweep_removes_only_folders_whose_owner_is_gone(tmp_path: Path) -> None:
    mine = tmp_path / "swell-mine"
    mine.mkdir()
    files.claim(mine)
    dead = tmp_path / "swell-dead"
    dead.mkdir()
    (dead / files.OWNER_FILE).write_text("999999999 1\n")  # no such pid
    reused = tmp_path / "swell-reused"
    reused.mkdir()
    (reused / files.OWNER_FILE).write_text(f"{os.getpid()} 1\n")  # our pid, another start time
    unclaimed = tmp_path / "swell-unclaimed"
    unclaimed.mkdir()
    other = tmp_path / "other-dead"
    other.mkdir()
    (other / files.OWNER_FILE).write_text("999999999 1\n")
    removed = files.sweep(tmp_path, "swell-")
    assert sorted(p.name for p in removed) == ["swell-dead", "swell-reused"]
    assert mine.exists() and unclaimed.exists() and other.exists()


def test_make_private(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    files.make_private(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    f = folder / "swell.db"
    f.write_bytes(b"x")
    f.chmod(0o644)
    files.make_private(f)
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
