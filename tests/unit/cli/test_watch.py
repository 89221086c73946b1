"""`swell watch`'s change detector and debounce: pure, no sleeping."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from swell._cli_manage import Debounce, changes, ignored, read_secret_value, snapshot


@pytest.mark.parametrize(
    ("name", "skip"),
    [
        ("model.py", False),
        ("config.yaml", False),
        ("requirements.txt", False),
        (".env", False),
        ("__pycache__", True),
        (".git", True),
        (".venv", True),
        ("model.cpython-311.pyc", True),
        (".model.py.swp", True),
        (".model.py.swo", True),
        ("model.py~", True),
        (".#model.py", True),
        ("#model.py#", True),
        ("4913", True),  # vim's probe file, written and deleted on every save
    ],
)
def test_ignored(name: str, skip: bool) -> None:
    assert ignored(name) is skip


def _package(tmp_path: Path) -> Path:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.py").write_text("class Model: ...\n")
    (tmp_path / "config.yaml").write_text("model_name: m\n")
    return tmp_path


def test_snapshot_lists_package_files_only(tmp_path: Path) -> None:
    root = _package(tmp_path)
    (root / "model" / "__pycache__").mkdir()
    (root / "model" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"x")
    (root / ".git" / "objects").mkdir(parents=True)
    (root / ".git" / "objects" / "ab").write_bytes(b"x")
    (root / "model" / ".model.py.swp").write_bytes(b"x")
    assert sorted(snapshot(root)) == ["config.yaml", os.path.join("model", "model.py")]


def test_changes_names_added_removed_and_modified(tmp_path: Path) -> None:
    root = _package(tmp_path)
    before = snapshot(root)
    assert changes(before, snapshot(root)) == []

    model = root / "model" / "model.py"
    stat = model.stat()
    model.write_text("class Model: pass\n")  # same size as before...
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # ...only the mtime tells
    (root / "config.yaml").unlink()
    (root / "data.json").write_text("{}")
    assert changes(before, snapshot(root)) == ["config.yaml", "data.json", os.path.join("model", "model.py")]


def test_changes_in_ignored_files_are_not_changes(tmp_path: Path) -> None:
    root = _package(tmp_path)
    before = snapshot(root)
    (root / "model" / ".model.py.swp").write_bytes(b"typing")
    (root / "model" / "__pycache__").mkdir()
    (root / "model" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"x")
    assert changes(before, snapshot(root)) == []


# (time of the poll, did that poll see a change, should it push now)
_QUIET = 0.3


@pytest.mark.parametrize(
    "polls",
    [
        pytest.param([(0.0, False, False), (0.5, False, False)], id="nothing changed: no push"),
        pytest.param([(0.0, True, False), (0.5, False, True), (1.0, False, False)], id="one save: one push once quiet"),
        pytest.param([(0.0, True, False), (0.1, False, False), (0.3, False, True)], id="pushes exactly when quiet_s has passed"),
        pytest.param(
            [(0.0, True, False), (0.2, True, False), (0.4, True, False), (0.6, False, False), (0.8, False, True)],
            id="a burst of writes: one push after the last",
        ),
        pytest.param(
            [(0.0, True, False), (0.5, False, True), (1.0, True, False), (1.5, False, True)],
            id="two saves apart: two pushes",
        ),
        pytest.param(
            [(0.0, True, False), (2.0, True, False), (4.0, True, False), (5.0, True, True), (5.2, True, False)],
            id="never quiet: push after max_wait_s anyway, then wait again",
        ),
    ],
)
def test_debounce(polls: list[tuple[float, bool, bool]]) -> None:
    debounce = Debounce(quiet_s=_QUIET, max_wait_s=5.0)
    assert [debounce.step(changed, now) for now, changed, _ in polls] == [push for *_, push in polls]


@pytest.mark.parametrize(
    ("piped", "value"),
    [
        ("s3cret\n", "s3cret"),
        ("s3cret", "s3cret"),
        ("s3cret\r\n", "s3cret"),
        ("line1\nline2\n\n", "line1\nline2\n"),  # only one newline goes: a PEM key keeps its own
        ("  spaced  \n", "  spaced  "),
        ("", ""),
    ],
)
def test_secret_value_from_a_pipe(piped: str, value: str) -> None:
    def no_prompt() -> str:
        raise AssertionError("a pipe is never prompted")

    assert read_secret_value(io.StringIO(piped), is_tty=False, prompt=no_prompt) == value


def test_secret_value_from_a_terminal_is_prompted() -> None:
    stream = io.StringIO("not read")
    assert read_secret_value(stream, is_tty=True, prompt=lambda: "typed") == "typed"
    assert stream.read() == "not read"
