"""A model package on the wire: the tar.gz that ``swell push`` uploads and ``swell serve --demo`` pushes."""

from __future__ import annotations

import tarfile
from pathlib import Path

import yaml

__all__ = ["EXCLUDED", "external_package_dirs", "make_archive"]

#: Names never packed: caches and tooling, not the model.
EXCLUDED = {"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache", ".DS_Store"}


def external_package_dirs(directory: Path) -> tuple[str, list[Path]]:
    """config.yaml's ``bundled_packages_dir`` and the ``external_package_dirs`` folders that lie
    outside ``directory`` (relative to it, or absolute), which a push must carry along."""
    try:
        config = yaml.safe_load((directory / "config.yaml").read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return "packages", []  # the server says what is wrong with it
    if not isinstance(config, dict):
        return "packages", []
    bundled = config.get("bundled_packages_dir") or "packages"
    entries = config.get("external_package_dirs") or []
    root = directory.resolve()
    outside = []
    for entry in entries if isinstance(entries, list) else []:
        path = (directory / str(entry)).resolve()
        if path.is_dir() and not path.is_relative_to(root):
            outside.append(path)
    return str(bundled), outside


def make_archive(directory: Path, archive: Path) -> None:
    """Pack ``directory`` (a Truss package) into the gzipped tar ``archive``.

    As ``truss push`` gathers a package, the contents of each ``external_package_dirs``
    folder outside it are packed into its ``bundled_packages_dir`` (default ``packages/``),
    where the replica imports them by top-level name.
    """

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        name = Path(info.name).name
        if name in EXCLUDED or name.endswith(".pyc"):
            return None
        return info

    bundled, outside = external_package_dirs(directory)
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(directory, arcname=".", filter=keep)
        for folder in outside:
            for child in sorted(folder.iterdir()):
                if child.name not in EXCLUDED:
                    tar.add(child, arcname=f"./{bundled}/{child.name}", filter=keep)
