"""Files the server must read back, written so that a crash or a full disk never leaves half of one;
folders a killed server leaves behind, found and removed by the next start.

A file is written to a temporary name in its own folder, flushed to the disk
(``fsync``) and renamed over the old one, so a reader finds the old content or
the whole new one.  A write that fails (``ENOSPC``, a read-only disk) removes
its temporary file, leaves the old file as it was and raises
:class:`StorageError`, which says what to do; the API answers it with a JSON
``503``.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from pathlib import Path

__all__ = [
    "StorageError",
    "atomic_write",
    "claim",
    "fsync_tree",
    "make_private",
    "pid_alive",
    "storage_error",
    "sweep",
]

_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "an input/output error (a failing disk?)",
}


class StorageError(OSError):
    """Writing under the data dir failed; nothing was changed.  ``reason`` is for the operator and the API."""

    def __init__(self, path: Path | str, cause: OSError) -> None:
        what = _CAUSES.get(cause.errno or 0, cause.strerror or type(cause).__name__)
        self.reason = f"{what} writing {path}; nothing was changed: free space (or fix the disk) and try again"
        super().__init__(cause.errno, self.reason)
        self.path = Path(path)


def storage_error(path: Path | str, cause: OSError) -> StorageError | None:
    """A :class:`StorageError` when ``cause`` is the disk's fault (full, read-only, failing), else None."""
    return StorageError(path, cause) if cause.errno in _CAUSES else None


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` all at once (temporary file, fsync, rename, fsync of the folder)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(path, exc) from exc
    _fsync_dir(path.parent)


def make_private(path: Path) -> None:
    """Only this user may read ``path``: a folder 0700 (made if missing), a file 0600."""
    if not path.exists():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_uid == os.getuid():
        path.chmod(0o700 if path.is_dir() else 0o600)


OWNER_FILE = ".swell-owner"


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: alive is all we can tell
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"
    return stat.rsplit(")", 1)[1].split()[19]


def pid_alive(pid: int) -> bool:
    return _start_time(pid) is not None


def claim(folder: Path) -> None:
    """Mark ``folder`` as this process's, so that a later start can tell it from a killed owner's."""
    pid = os.getpid()
    atomic_write(folder / OWNER_FILE, f"{pid} {_start_time(pid)}\n".encode())


def sweep(parent: Path, prefix: str) -> list[Path]:
    """Remove this user's ``prefix*`` folders under ``parent`` that a process claimed and is gone
    (killed before it could clean up).  Folders nobody claimed are left alone."""
    removed = []
    try:
        candidates = [p for p in parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for folder in candidates:
        try:
            if folder.is_symlink() or folder.stat().st_uid != os.getuid():
                continue
            pid, started = (folder / OWNER_FILE).read_text().split()
        except (OSError, ValueError):
            continue
        now = _start_time(int(pid))
        if now is not None and (now == started or "?" in (now, started)):
            continue  # its owner still runs
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` and the folders that hold them (before a rename publishes it)."""
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # pragma: no cover - a folder that cannot be opened cannot be flushed either
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)
