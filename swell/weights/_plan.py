"""Pure parts of fetching weights: parts, the resume record, patterns, eviction, paths.

Nothing here touches the network, the clock or (but for reading nothing) the disk.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

#: Where Truss mounts ``model_cache`` volumes; Swell's ``/app`` is the package dir.
TRUSS_APP_DIR = PurePosixPath("/app")
TRUSS_MODEL_CACHE_DIR = "model_cache"


# --------------------------------------------------------------------------- parts


def split_parts(size: int, part_size: int) -> list[tuple[int, int]]:
    """``[(start, end), …]`` with ``end`` inclusive (HTTP ``Range`` style) covering ``size`` bytes."""
    if part_size <= 0:
        raise ValueError("part_size must be > 0")
    return [(start, min(start + part_size, size) - 1) for start in range(0, size, part_size)]


_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``"bytes 0-99/1000"`` → ``(0, 99, 1000)``; total ``None`` for ``*``; ``None`` if malformed."""
    if not value:
        return None
    match = _CONTENT_RANGE_RE.match(value)
    if not match:
        return None
    start, end = int(match[1]), int(match[2])
    total = None if match[3] == "*" else int(match[3])
    if end < start or (total is not None and end >= total):
        return None
    return start, end, total


@dataclass
class PartRecord:
    """The sidecar of a partial file: which parts are on disk, for which remote object.

    A resume is only safe against the same bytes, so the record names the
    size, the validator (ETag or Last-Modified) and the part size it was cut with.
    """

    url: str
    size: int
    validator: str | None
    part_size: int
    done: set[int] = field(default_factory=set)

    def matches(self, url: str, size: int, validator: str | None, part_size: int) -> bool:
        return (self.url, self.size, self.part_size) == (url, size, part_size) and (
            self.validator == validator
        )

    def to_json(self) -> str:
        return json.dumps({"url": self.url, "size": self.size, "validator": self.validator,
                           "part_size": self.part_size, "done": sorted(self.done)})

    @classmethod
    def from_json(cls, text: str) -> PartRecord | None:
        """``None`` for a record that is unreadable or from another format."""
        try:
            data: Any = json.loads(text)
            return cls(url=str(data["url"]), size=int(data["size"]),
                       validator=None if data["validator"] is None else str(data["validator"]),
                       part_size=int(data["part_size"]), done={int(i) for i in data["done"]})
        except (ValueError, KeyError, TypeError):
            return None


def contiguous_done(done: set[int], start: int) -> int:
    """The first part index at or after ``start`` that is not done."""
    index = start
    while index in done:
        index += 1
    return index


# --------------------------------------------------------------------------- sources


def cache_key(url: str) -> str:
    """A file's name in ``refs/``, ``partial/`` and ``locks/``: sha256 of its URL."""
    return hashlib.sha256(url.encode()).hexdigest()


def selected(path: str, allow: Sequence[str] | None, ignore: Sequence[str] | None) -> bool:
    """Hugging Face's rule: kept if it matches an allow pattern (or there are none) and no ignore pattern."""
    if allow and not any(fnmatch.fnmatch(path, pattern) for pattern in allow):
        return False
    return not (ignore and any(fnmatch.fnmatch(path, pattern) for pattern in ignore))


def safe_relative(path: str) -> PurePosixPath:
    """A remote file name as a path under the mount; refuses names that would escape it."""
    rel = PurePosixPath(path.lstrip("/"))
    if not rel.parts or any(part in ("..", "") for part in rel.parts):
        raise ValueError(f"remote file name {path!r} would land outside the mount location")
    return rel


def mount_dir(mount_location: str | None, volume_folder: str | None, package_dir: Path,
              data_dir: str = "data") -> Path:
    """Where a source's files appear to the model.

    ``mount_location`` as given, except that ``/app/…`` (Truss's image root)
    is the package dir, as everywhere else in Swell; else ``volume_folder``
    under ``/app/model_cache`` (Truss's default); else the package's ``data/``.
    """
    if mount_location:
        where = PurePosixPath(mount_location)
        if where == TRUSS_APP_DIR or TRUSS_APP_DIR in where.parents:
            return package_dir.joinpath(*where.relative_to(TRUSS_APP_DIR).parts)
        return Path(mount_location)
    if volume_folder:
        return package_dir / TRUSS_MODEL_CACHE_DIR / volume_folder
    return package_dir / data_dir


# --------------------------------------------------------------------------- eviction


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    last_used: float  # a timestamp; only the order matters


def choose_evictions(blobs: Iterable[Blob], pinned: set[str], limit: int | None,
                     incoming: int = 0) -> list[str]:
    """Least recently used unpinned blobs to remove so that ``incoming`` more bytes fit in ``limit``.

    Pinned blobs are never chosen, even if the cache then stays over its limit.
    """
    if limit is None:
        return []
    blobs = list(blobs)
    total = sum(b.size for b in blobs) + incoming
    chosen: list[str] = []
    for blob in sorted(blobs, key=lambda b: (b.last_used, b.digest)):
        if total <= limit:
            break
        if blob.digest in pinned:
            continue
        chosen.append(blob.digest)
        total -= blob.size
    return chosen


_SIZE_RE = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[KMGTP]i?|[kmgtp]|B|)\s*B?\s*$")
_SIZE_UNITS = {"": 1, "B": 1, "K": 10**3, "k": 10**3, "M": 10**6, "m": 10**6, "G": 10**9, "g": 10**9,
               "T": 10**12, "t": 10**12, "P": 10**15, "p": 10**15,
               "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}


def parse_size(value: str) -> int:
    """``"50Gi"`` → bytes; ``"16M"``, ``"1048576"`` also work."""
    match = _SIZE_RE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size; use bytes or a quantity such as 16Mi or 50Gi")
    return int(float(match["num"]) * _SIZE_UNITS[match["unit"]])


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
