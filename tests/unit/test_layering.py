"""Dependencies point one way (DESIGN.md): cli → control → serving → autoscaling → config;
modelserver → weights → config."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "swell"

# What each part may import from the project (besides itself).
ALLOWED: dict[str, set[str]] = {
    # Cron expressions: a leaf under config (which validates them) and autoscaling (which runs them).
    "cron": set(),
    # Atomic writes of the files the server reads back: a leaf anything may use.
    "files": set(),
    "config": {"cron"},
    "autoscaling": {"config", "cron"},
    "sim": {"autoscaling", "config"},
    "weights": {"config"},
    "modelserver": {"config", "weights", "files"},
    "serving": {"autoscaling", "config", "modelserver", "files"},
    "control": {"serving", "autoscaling", "config", "modelserver", "files"},
    "dashboard": {"control", "serving", "autoscaling", "config"},
    "cli": {"control", "serving", "autoscaling", "config", "modelserver", "sim", "dashboard", "_cli_manage", "_cli_lifecycle", "_cli_async"},
    # The CLI's `keys`, `secrets` and `watch`: part of the CLI, built on its client.
    "_cli_manage": {"cli", "control", "serving", "autoscaling", "config", "modelserver", "sim", "dashboard"},
    "_cli_lifecycle": {"cli"},
    "_cli_async": {"cli"},
}


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py") if rel.parts else ""


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "swell" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_dependencies_point_one_way() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = _part(path)
        if part not in ALLOWED:
            continue
        for target in _imports(path) - ALLOWED[part] - {part, "__init__"}:
            if target in ALLOWED:
                wrong.append(f"{path.relative_to(PACKAGE.parent)} imports swell.{target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_autoscaling_is_mypy_strict_clean() -> None:
    pytest.importorskip("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(PACKAGE / "autoscaling")],
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
