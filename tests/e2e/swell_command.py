"""How the e2e tests run the ``swell`` command (a module of its own: test files must not import conftest)."""

from __future__ import annotations

import sys
from pathlib import Path


def swell_command() -> list[str]:
    """The ``swell`` of the interpreter running the tests (CI's venv), never another one on PATH."""
    found = Path(sys.executable).with_name("swell")
    if found.exists():
        return [str(found)]
    return [sys.executable, "-c", "from swell.cli import main; main()"]
