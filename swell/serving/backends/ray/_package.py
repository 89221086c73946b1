"""The model package on its way to a node: one content-addressed archive.

The server packs a package folder into a deterministic tar (sorted, no times or
owners), so the same files give the same sha256; the node unpacks it once into
``<cache>/packages/<sha256>`` and every later replica of it there reuses that
(``swell.modelserver``'s node side).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path


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
