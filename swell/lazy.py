"""Names a package exports but imports only when first used.

A replica imports ``swell.modelserver`` and ``swell.http`` too, and pays in memory
and start-up time for every module they load: what only the server (or only a
rare route) needs is listed here instead, by name and module, and imported on
the first attribute access (PEP 562's module ``__getattr__``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, modules: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``modules`` maps each lazy name to
    the module that defines it; a name is imported once, then kept in the package."""

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
