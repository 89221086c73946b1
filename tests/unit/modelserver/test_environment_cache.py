from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from swell.modelserver import RequirementsInstallError, ensure_environment
from swell.modelserver._environment import MARKER, environment_key


def test_no_requirements_means_this_python(tmp_path: Path) -> None:
    assert ensure_environment([], tmp_path) == Path(sys.executable)
    assert ensure_environment([" "], tmp_path, python="/x/python") == Path("/x/python")


def test_key_ignores_order(tmp_path: Path) -> None:
    assert environment_key(["b", "a"]) == environment_key(["a", "b"]) != environment_key(["a"])


def test_cache_hit_does_not_run_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv = tmp_path / environment_key(["a==1", "b"])
    venv.mkdir()
    (venv / MARKER).write_text("")

    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cache hit must not run anything")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    assert ensure_environment(["b", "a==1"], tmp_path) == venv / "bin" / "python"


def test_install_error_names_the_requirement_and_quotes_pip() -> None:
    pip_output = (
        "Collecting nope==1.0\n"
        "ERROR: Could not find a version that satisfies the requirement nope==1.0 (from versions: none)\n"
        "ERROR: No matching distribution found for nope==1.0\n"
    )
    error = RequirementsInstallError(["numpy", "nope==1.0"], pip_output)
    text = str(error)
    assert text.startswith("could not install requirement(s) nope==1.0 (of numpy, nope==1.0):")
    assert "No matching distribution found for nope==1.0" in text
