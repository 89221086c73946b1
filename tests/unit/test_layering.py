"""The layering in docs/architecture.md, enforced exactly as the page states it.

The page's table (between its ``layering:begin`` and ``layering:end`` markers)
lists what each part of ``swell/`` may import from the project. The test reads
the table from the page, so the page and the rule cannot drift apart: an import
the table does not allow fails, and so does an allowance no import uses (the
page would promise more freedom than the code takes).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "swell"
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"


def _allowed() -> dict[str, set[str]]:
    """What each part may import from the project (besides itself), from the page's table."""
    text = ARCHITECTURE.read_text()
    table = text[text.index("<!-- layering:begin -->") : text.index("<!-- layering:end -->")]
    allowed: dict[str, set[str]] = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        allowed[cells[0].strip("`")] = set(re.findall(r"`([^`]+)`", cells[1]))
    return allowed


ALLOWED = _allowed()


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


def _parts() -> set[str]:
    return {_part(path) for path in PACKAGE.rglob("*.py")} - {"__init__"}


def test_the_page_names_every_part_and_only_parts() -> None:
    assert ALLOWED, f"no layering table found in {ARCHITECTURE}"
    parts = _parts()
    assert not parts - ALLOWED.keys(), f"parts of swell/ the page's table does not list: {sorted(parts - ALLOWED.keys())}"
    named = ALLOWED.keys() | set().union(*ALLOWED.values())
    assert not named - parts, f"the page's table names parts that do not exist: {sorted(named - parts)}"


def _used() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        part = _part(path)
        used.setdefault(part, set()).update(_imports(path) - {part, "__init__"})
    return used


def test_dependencies_point_one_way() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = _part(path)
        for target in sorted(_imports(path) - ALLOWED.get(part, set()) - {part, "__init__"}):
            wrong.append(f"{path.relative_to(PACKAGE.parent)} imports swell.{target}")
    assert not wrong, "imports the layering in docs/architecture.md does not allow:\n" + "\n".join(wrong)


def test_the_page_allows_nothing_the_code_does_not_use() -> None:
    used = _used()
    unused = [f"{part} -> {target}" for part, targets in sorted(ALLOWED.items())
              for target in sorted(targets - used.get(part, set()))]
    assert not unused, "docs/architecture.md allows imports nothing makes (drop them from its table):\n" + "\n".join(unused)


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
