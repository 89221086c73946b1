"""The content-addressed weights cache that every replica on the machine shares.

Layout under the cache root (``DATA_DIR/weights``)::

    blobs/sha256/<digest>   the files, read-only, named by content
    refs/<key>.json         source URL → digest, size, validator (ETag)
    refs/<key>.listing.json a Hugging Face repo@revision's last listing (commit, files)
    partial/<key>.part      a download in progress (+ ``.part.json``: finished parts)
    locks/<key>.lock        flock: one download of a URL at a time on the machine
    pins/<pid>-<id>.pin     digests a live replica uses; its owner holds an flock on it
    cache.lock              flock around pinning, inserting and evicting

A pin is alive while its owner holds the flock, which the kernel drops when
the process dies, so a crashed replica never keeps blobs pinned forever and a
reused pid never pins anything.  Eviction removes the least recently used
unpinned blobs until the cache fits its size limit.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from swell.weights._plan import Blob, cache_key, choose_evictions, human_bytes

logger = logging.getLogger("swell.weights")


@dataclass(frozen=True)
class Ref:
    url: str
    digest: str
    size: int
    validator: str | None

    def to_json(self) -> str:
        return json.dumps({"url": self.url, "digest": self.digest, "size": self.size, "validator": self.validator})

    @classmethod
    def from_json(cls, text: str) -> Ref | None:
        try:
            data = json.loads(text)
            return cls(str(data["url"]), str(data["digest"]), int(data["size"]), data.get("validator"))
        except (ValueError, KeyError, TypeError):
            return None


class WeightsCache:
    """One cache root; ``limit`` in bytes (``None``: no limit)."""

    def __init__(self, root: str | Path, limit: int | None = None) -> None:
        self.root = Path(root)
        self.limit = limit
        self.blobs = self.root / "blobs" / "sha256"
        self.refs = self.root / "refs"
        self.partials = self.root / "partial"
        self.locks = self.root / "locks"
        self.pins = self.root / "pins"
        for path in (self.blobs, self.refs, self.partials, self.locks, self.pins):
            path.mkdir(parents=True, exist_ok=True)
        self._pin_fd: int | None = None
        self._pin_path: Path | None = None
        self._pinned: set[str] = set()

    # ------------------------------------------------------------------ paths

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest

    def partial_path(self, url: str) -> Path:
        return self.partials / f"{cache_key(url)}.part"

    # ------------------------------------------------------------------ locks

    @contextlib.contextmanager
    def download_lock(self, url: str) -> Iterator[bool]:
        """Held while ``url`` downloads; yields whether another process had it first (we waited)."""
        fd = os.open(self.locks / f"{cache_key(url)}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            waited = False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                waited = True
                logger.info("weights: another replica is downloading %s; waiting for it", url)
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield waited
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root / "cache.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ refs

    def read_ref(self, url: str) -> Ref | None:
        try:
            return Ref.from_json((self.refs / f"{cache_key(url)}.json").read_text())
        except OSError:
            return None

    def write_ref(self, ref: Ref) -> None:
        _write_atomic(self.refs / f"{cache_key(ref.url)}.json", ref.to_json())

    def read_listing(self, url: str) -> str | None:
        """The last listing saved for a source (a Hugging Face ``repo@revision``)."""
        try:
            return (self.refs / f"{cache_key(url)}.listing.json").read_text()
        except OSError:
            return None

    def write_listing(self, url: str, text: str) -> None:
        _write_atomic(self.refs / f"{cache_key(url)}.listing.json", text)

    # ------------------------------------------------------------------ pins

    def _pin_file(self) -> int:
        if self._pin_fd is None:
            path = self.pins / f"{os.getpid()}-{secrets.token_hex(4)}.pin"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._pin_fd, self._pin_path = fd, path
        return self._pin_fd

    def use(self, digest: str, size: int | None = None) -> Path | None:
        """Pin ``digest`` for this process and mark it used now; its path, or ``None`` if absent."""
        with self._locked():
            path = self.blob_path(digest)
            try:
                stat = path.stat()
            except FileNotFoundError:
                return None
            if size is not None and stat.st_size != size:
                logger.warning("weights: cached blob %s has %d bytes, expected %d; dropping it",
                               digest, stat.st_size, size)
                _unlink(path)
                return None
            self._pin(digest)
            return path

    def _pin(self, digest: str) -> None:
        if digest not in self._pinned:
            os.write(self._pin_file(), f"{digest}\n".encode())
            self._pinned.add(digest)
        with contextlib.suppress(OSError):
            now = time.time()
            os.utime(self.blob_path(digest), (now, now))  # last use, for LRU

    def release(self) -> None:
        """Drop this process's pins (a replica's exit does the same)."""
        if self._pin_fd is not None:
            os.close(self._pin_fd)
            if self._pin_path is not None:
                _unlink(self._pin_path)
        self._pin_fd, self._pin_path = None, None
        self._pinned.clear()

    def pinned(self) -> set[str]:
        """Digests pinned by live owners (this process's included); removes dead owners' pins."""
        out = set(self._pinned)
        for path in self.pins.glob("*.pin"):
            if path == self._pin_path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:  # its owner is alive
                    out.update(line for line in os.read(fd, 1 << 24).decode().split() if line)
                    continue
                _unlink(path)  # nobody holds it: the replica is gone
            finally:
                os.close(fd)
        return out

    # ------------------------------------------------------------------ blobs

    def blobs_on_disk(self) -> list[Blob]:
        out = []
        for path in self.blobs.iterdir():
            if path.name.startswith("."):
                continue
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                out.append(Blob(path.name, stat.st_size, stat.st_mtime))
        return out

    def usage(self) -> int:
        return sum(b.size for b in self.blobs_on_disk())

    def make_room(self, incoming: int) -> list[str]:
        """Evict so that ``incoming`` more bytes fit; returns the digests removed."""
        with self._locked():
            return self._evict(incoming)

    def _evict(self, incoming: int) -> list[str]:
        if self.limit is None:
            return []
        blobs = self.blobs_on_disk()
        pinned = self.pinned()
        chosen = choose_evictions(blobs, pinned, self.limit, incoming)
        for digest in chosen:
            _unlink(self.blob_path(digest))
        if chosen:
            freed = sum(b.size for b in blobs if b.digest in set(chosen))
            logger.info("weights: evicted %d cached file(s), %s, least recently used first",
                        len(chosen), human_bytes(freed))
        total = sum(b.size for b in blobs if b.digest not in set(chosen)) + incoming
        if total > self.limit:
            logger.warning("weights: the cache holds %s, over its limit of %s: the rest is in use by "
                           "running replicas", human_bytes(total), human_bytes(self.limit))
        return chosen

    def insert(self, partial: Path, digest: str) -> Path:
        """Move a verified download into ``blobs/`` (read-only), pinned; its path."""
        target = self.blob_path(digest)
        with self._locked():
            size = partial.stat().st_size
            self._evict(0 if self.limit is None else size)
            if target.exists():
                _unlink(partial)  # the same content came from another URL
            else:
                os.chmod(partial, 0o444)
                os.replace(partial, target)
            self._pin(digest)
        return target

    def evict(self) -> list[str]:
        """Bring the cache under its limit now."""
        return self.make_room(0)

    def forget(self, urls: Iterable[str]) -> None:
        for url in urls:
            _unlink(self.refs / f"{cache_key(url)}.json")


def _write_atomic(path: Path, text: str) -> None:
    """Replicas read refs while others write them: never show a half-written one."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
