"""A model package on the wire: the tar.gz that ``swell push`` uploads and ``swell serve --demo`` pushes."""

from __future__ import annotations

import tarfile
from pathlib import Path

__all__ = ["EXCLUDED", "make_archive"]

#: Names never packed: caches and tooling, not the model.
EXCLUDED = {"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache", ".DS_Store"}


def make_archive(directory: Path, archive: Path) -> None:
    """Pack ``directory`` (a Truss package) into the gzipped tar ``archive``."""

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        name = Path(info.name).name
        if name in EXCLUDED or name.endswith(".pyc"):
            return None
        return info

    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(directory, arcname=".", filter=keep)
