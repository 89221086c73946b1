"""The model package on its way to a node: one content-addressed archive.

The server packs a package folder into a deterministic tar (sorted, no times or
owners), so the same files give the same sha256; the node unpacks it once into
``<cache>/packages/<sha256>`` and every later replica of it there reuses that.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from swell.config import ModelConfig

MARKER = ".swell-complete"


def pack(package_dir: Path) -> tuple[str, bytes]:
    """``(sha256 hex, tar bytes)`` of the package, caches left out."""
    buffer = io.BytesIO()
    root = Path(package_dir)
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if "__pycache__" in relative.parts:
                continue
            info = tar.gettarinfo(str(path), arcname=str(relative))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if info.isfile():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    data = buffer.getvalue()
    return hashlib.sha256(data).hexdigest(), data


def cached(cache: Path, digest: str) -> Path | None:
    """The unpacked package on this node, if it is there already."""
    target = cache / "packages" / digest
    return target if (target / MARKER).exists() else None


def unpack(data: bytes, cache: Path, digest: str) -> Path:
    """Unpack ``data`` into ``<cache>/packages/<digest>`` (once; atomic)."""
    if hashlib.sha256(data).hexdigest() != digest:
        raise ValueError(f"the package archive does not match its hash {digest}")
    found = cached(cache, digest)
    if found is not None:
        return found
    packages = cache / "packages"
    packages.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=packages, prefix=".unpack-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            tar.extractall(tmp, filter="data")
        (tmp / MARKER).write_text(digest + "\n")
        try:
            os.rename(tmp, packages / digest)
        except OSError:  # another replica on this node unpacked it first
            if cached(cache, digest) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return packages / digest


def requirements_of(config: ModelConfig, package_dir: Path) -> list[str]:
    """The pip requirements a package declares (``requirements`` and its file)."""
    requirements = list(config.requirements)
    if config.requirements_file:
        path = package_dir / config.requirements_file
        if path.is_file():
            for line in path.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line and not line.startswith("-"):
                    requirements.append(line)
    return requirements
