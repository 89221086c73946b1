"""Dependencies point one way (DESIGN.md): cli → control → serving → autoscaling → config;
modelserver → weights → config; http (the HTTP layer both servers stand on) imports nothing of the project."""

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
    # The server's HTTP client: the client commands and `swell advise` share it.
    "client": set(),
    "sim": {"autoscaling", "config", "client"},
    "weights": {"config"},
    "http": set(),
    "modelserver": {"config", "weights", "files", "http"},
    "serving": {"autoscaling", "config", "modelserver", "files", "http"},
    "control": {"serving", "autoscaling", "config", "modelserver", "files", "http"},
    "dashboard": {"control", "serving", "autoscaling", "config"},
    # The server's composition root: builds the backend, the plane, the app and uvicorn.
    "server": {"control", "dashboard", "serving", "config", "http", "client", "_archive"},
    # A model package on the wire (the tar.gz a push uploads): a leaf.
    "_archive": set(),
    "cli": {"server", "control", "serving", "autoscaling", "config", "modelserver", "sim", "dashboard", "client", "_cli_common", "_cli_manage", "_cli_lifecycle", "_cli_async"},
    # What the client commands share (their client, tables, uploads); it imports none of them.
    "_cli_common": {"client", "_archive"},
    # The CLI's `keys`, `secrets`, `watch`, lifecycle and async commands: built on _cli_common, never on cli.
    "_cli_manage": {"_cli_common", "control", "serving", "autoscaling", "config", "modelserver", "sim", "dashboard"},
    "_cli_lifecycle": {"_cli_common"},
    "_cli_async": {"_cli_common"},
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


def _private_imports(path: Path) -> set[str]:
    """Modules ``swell.x._y`` (or ``from swell.x import _y``) that ``path`` imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != "swell" or len(parts) < 3 or not (PACKAGE / parts[1]).is_dir():
                continue  # private names of a module (the CLI's) are not this rule's business
            if any(p.startswith("_") for p in parts[2:]):
                found.add(name)
    return found


def test_no_package_imports_another_packages_private_module() -> None:
    """``swell.x._y`` is for ``swell.x`` alone; everyone else uses the names ``swell.x`` exports."""
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = _part(path)
        for name in _private_imports(path):
            if name.split(".")[1] != part:
                wrong.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not wrong, "private modules imported from outside their package:\n" + "\n".join(wrong)


def test_autoscaling_is_mypy_strict_clean() -> None:
    pytest.importorskip("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(PACKAGE / "autoscaling")],
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _module_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports (anywhere in it, lazy imports too)."""
    modules: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(owner(a.name) for a in node.names if a.name.startswith("swell"))
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("swell"):
                assert node.module is not None
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else owner(node.module))
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def test_no_module_imports_itself_back() -> None:
    """No import cycles, not even through a lazy import inside a function."""
    graph = _module_graph()
    cycles = []
    for start in sorted(graph):
        stack, seen = [(start, [start])], set()
        while stack:
            module, path = stack.pop()
            for target in graph.get(module, ()):
                if target == start:
                    cycles.append(" -> ".join([*path, start]))
                elif target not in seen and target > start:  # each cycle once, from its smallest module
                    seen.add(target)
                    stack.append((target, [*path, target]))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
