"""Replica logs: each replica's output kept per replica, time-stamped, capped and rotated.

A replica writes its stdout and stderr into a pipe, not a file: a thread of
the server reads the pipe, stamps every line with the time it arrived and
appends it to ``LOG_DIR/<deployment_id>/<replica_id>.log`` (a replica on
another machine, a Ray node, has its output shipped here in batches and fed to
the same writer).  When that file
passes half of the per-replica cap it becomes ``<replica_id>.log.1`` (the
previous one is dropped) and a new one starts, so one replica never holds
more than its cap on disk; each rotation (and each new replica) also trims the
deployment's folder to the per-deployment cap, oldest files first.  A model
that prints 10 MB a second therefore costs disk up to the caps and a thread's
time, never the disk.

One line on disk is ``<ISO time>\\t<stream>\\t<text>``; the stream is
``output`` (the replica's stdout and stderr, which share one pipe) or
``swell`` (what the server wrote about that replica).  ISO times of one
format sort as text, so reading ``since`` a time compares strings.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

__all__ = [
    "DEFAULT_DEPLOYMENT_LOG_BYTES",
    "DEFAULT_REPLICA_LOG_BYTES",
    "LogCapture",
    "LogFollower",
    "LogLimits",
    "LogLine",
    "LogWriter",
    "ReplicaLogs",
    "iso_now",
    "strip_stamps",
]

DEFAULT_REPLICA_LOG_BYTES = 10 * 1024 * 1024
DEFAULT_DEPLOYMENT_LOG_BYTES = 100 * 1024 * 1024
_READ_BYTES = 64 * 1024
_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\t[a-z]+\t", re.MULTILINE)


def iso_now(now: float | None = None) -> str:
    """The API's one time format (``swell.control``'s ``iso``), here where serving needs it."""
    ts = time.time() if now is None else now
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def strip_stamps(text: str) -> str:
    """A log's text as the replica printed it (the time and stream taken off each line)."""
    return _STAMP.sub("", text)


@dataclass(frozen=True)
class LogLimits:
    """Disk a deployment's logs may use: per replica (two files of half each) and in all."""

    replica_bytes: int = DEFAULT_REPLICA_LOG_BYTES
    deployment_bytes: int = DEFAULT_DEPLOYMENT_LOG_BYTES


@dataclass(frozen=True)
class LogLine:
    time: str  # ISO 8601 UTC with milliseconds
    replica: str | None
    stream: str
    text: str

    def as_dict(self) -> dict[str, str | None]:
        return {"time": self.time, "replica": self.replica, "stream": self.stream, "text": self.text}


class ReplicaLogs:
    """The log folder of one backend: where each replica's log goes, and its caps."""

    def __init__(self, root: Path, limits: LogLimits | None = None) -> None:
        self.root = Path(root)
        self.limits = limits or LogLimits()
        self._live: set[Path] = set()
        self._lock = threading.Lock()

    def path(self, deployment_id: str, replica_id: str) -> Path:
        return self.root / deployment_id / f"{replica_id}.log"

    def capture(self, deployment_id: str, replica_id: str) -> LogCapture:
        """A pipe for the replica's stdout and stderr, read into its log (call ``start`` once the child holds it)."""
        return LogCapture(self._open(deployment_id, replica_id), self)

    def writer(self, deployment_id: str, replica_id: str) -> LogWriter:
        """The replica's log, fed by the caller (``feed``): output that arrives some other way than a pipe."""
        return LogWriter(self._open(deployment_id, replica_id), self)

    def _open(self, deployment_id: str, replica_id: str) -> Path:
        path = self.path(deployment_id, replica_id)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._lock:
            self._live.add(path)
        self.trim(path.parent)
        return path

    def _closed(self, writer: LogWriter) -> None:
        with self._lock:
            self._live.discard(writer.path)

    def trim(self, folder: Path) -> None:
        """Delete a deployment's oldest log files (never a live replica's current one) until it fits its cap."""
        files: list[tuple[float, int, Path]] = []
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if entry.name.endswith((".log", ".log.1")):
                    with contextlib.suppress(OSError):
                        st = entry.stat()
                        files.append((st.st_mtime, st.st_size, Path(entry.path)))
        total = sum(size for _, size, _ in files)
        if total <= self.limits.deployment_bytes:
            return
        with self._lock:
            live = set(self._live)
        for _, size, path in sorted(files):
            if total <= self.limits.deployment_bytes:
                break
            if path in live:
                continue
            with contextlib.suppress(OSError):
                path.unlink()
                total -= size


class LogWriter:
    """One replica's rotating log: output fed to it is stamped line by line and written."""

    def __init__(self, path: Path, logs: ReplicaLogs) -> None:
        self.path = path
        self._logs = logs
        self._half = max(1, logs.limits.replica_bytes // 2)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        self._at_line_start = True
        self._lock = threading.Lock()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def note(self, text: str) -> None:
        """A line of the server's own about this replica (stream ``swell``)."""
        with self._lock:
            lead = b"" if self._at_line_start else b"\n"
            self._at_line_start = True
            self._write(lead + f"{iso_now()}\tswell\t{text}\n".encode())

    def feed(self, chunk: bytes) -> None:
        """Output as it arrived (any cut, lines may span chunks), every line stamped with now."""
        if not chunk:
            return
        prefix = f"{iso_now()}\toutput\t".encode()
        data = chunk.replace(b"\n", b"\n" + prefix)  # C speed, however many lines
        with self._lock:
            if self._at_line_start:
                data = prefix + data
            self._at_line_start = chunk.endswith(b"\n")
            if self._at_line_start:
                data = data[: len(data) - len(prefix)]
            self._write(data)

    def close(self) -> None:
        """End the log (a torn last line gets its newline); later writes are dropped."""
        if not self._at_line_start:
            with self._lock:
                self._at_line_start = True
                self._write(b"\n")
        self._finish()

    def _finish(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        self._logs._closed(self)

    def _write(self, data: bytes) -> None:
        if self._fd < 0:
            return
        try:
            os.write(self._fd, data)
        except OSError:  # a full disk loses log lines, never the replica
            return
        self._size += len(data)
        if self._size >= self._half:
            self._rotate()

    def _rotate(self) -> None:
        os.close(self._fd)
        with contextlib.suppress(OSError):
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._fd = self._open()
        self._size = 0
        self._logs.trim(self.path.parent)


class LogCapture(LogWriter):
    """Reads one replica's output from a pipe, in a thread, into its rotating log."""

    def __init__(self, path: Path, logs: ReplicaLogs) -> None:
        super().__init__(path, logs)
        self._read_fd, self.write_fd = os.pipe()
        os.set_inheritable(self._read_fd, False)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Read from now on; the caller closes ``write_fd`` once the child has its copy."""
        self._thread = threading.Thread(target=self._run, name=f"swell-log-{self.path.stem}", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the pipe's end (every writer gone), at most ``timeout`` s."""
        if self._thread is not None:
            self._thread.join(timeout)

    def close(self) -> None:
        """Give up without a thread (the child never started); the caller still closes ``write_fd``."""
        with contextlib.suppress(OSError):
            os.close(self._read_fd)
        self._finish()

    def _run(self) -> None:
        try:
            while True:
                try:
                    chunk = os.read(self._read_fd, _READ_BYTES)
                except InterruptedError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                self.feed(chunk)
        finally:
            with contextlib.suppress(OSError):
                os.close(self._read_fd)
            super().close()


@dataclass
class _Position:
    inode: int
    offset: int


@dataclass
class LogFollower:
    """Reads a deployment's log folder from where it last stopped: every
    replica's file, new replicas as they appear, across rotations."""

    folder: Path
    replica: str | None = None
    _positions: dict[str, _Position] = field(default_factory=dict)

    def poll(self) -> list[LogLine]:
        """Every whole line written since the last call (on the first call, all
        that is kept), in time order."""
        lines: list[LogLine] = []
        for replica_id in self._replicas():
            lines.extend(self._read_replica(replica_id))
        lines.sort(key=lambda line: line.time)
        return lines

    def _replicas(self) -> list[str]:
        if self.replica is not None:
            return [self.replica]
        names: set[str] = set()
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.folder):
                if entry.name.endswith(".log"):
                    names.add(entry.name[: -len(".log")])
                elif entry.name.endswith(".log.1"):
                    names.add(entry.name[: -len(".log.1")])
        return sorted(names)

    def _read_replica(self, replica_id: str) -> Iterator[LogLine]:
        current = self.folder / f"{replica_id}.log"
        previous = self.folder / f"{replica_id}.log.1"
        position = self._positions.get(replica_id)
        try:
            st = os.stat(current)
        except OSError:
            st = None
        if position is None:
            # First look: the rotated file, then the current one, whole.
            yield from _parse(_read_from(previous, 0)[0], replica_id)
            position = _Position(st.st_ino if st else 0, 0)
        elif st is None or st.st_ino != position.inode:
            # Rotated since the last look: the rest of the old file is now .1.
            with contextlib.suppress(OSError):
                if os.stat(previous).st_ino == position.inode:
                    yield from _parse(_read_from(previous, position.offset)[0], replica_id)
            position = _Position(st.st_ino if st else 0, 0)
        if st is not None:
            data, position.offset = _read_from(current, position.offset)
            yield from _parse(data, replica_id)
        self._positions[replica_id] = position


def _read_from(path: Path, offset: int) -> tuple[bytes, int]:
    """The whole lines of ``path`` from ``offset``, and the offset after them."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return b"", offset
    end = data.rfind(b"\n") + 1
    return data[:end], offset + end


def _parse(data: bytes, replica_id: str) -> Iterable[LogLine]:
    for raw in data.decode("utf-8", "replace").splitlines():
        parts = raw.split("\t", 2)
        if len(parts) == 3 and len(parts[0]) == 24 and parts[0].endswith("Z"):
            yield LogLine(parts[0], replica_id, parts[1], parts[2])
        elif raw:  # a line from before stamps (or a torn one): keep its text
            yield LogLine("", replica_id, "output", raw)
