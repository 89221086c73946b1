"""Pure parts of the process backend: events, transitions, environment, paths.

Nothing here spawns, reads the clock or touches the event loop, so every
decision the runner makes can be tested from a table.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from swell.serving._backend import ReplicaSpec, ReplicaState

#: AF_UNIX ``sun_path`` holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107

#: Variables of the server's own environment that must not reach model code:
#: the workspace key would let a model call the management API, and stale
#: replica addresses would confuse the model server.
_SERVER_ONLY_PREFIXES = ("SWELL_",)


@dataclass(frozen=True)
class ReplicaEvent:
    """One JSON line the replica wrote on its events pipe."""

    kind: str  # "live" | "loading" | "ready" | "failed"; others (weights_progress, ...) are progress only
    load_seconds: float | None = None
    error: str | None = None
    weights_seconds: float | None = None  # on "ready": time spent fetching weights


def parse_event(line: bytes | str) -> ReplicaEvent | None:
    """Decode one events-pipe line; ``None`` for blank or malformed lines."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        return None
    error = data.get("error")
    if error is not None and not isinstance(error, str):
        error = str(error)
    return ReplicaEvent(
        kind=data["event"],
        load_seconds=_seconds(data.get("load_seconds")),
        error=error,
        weights_seconds=_seconds(data.get("weights_seconds")),
    )


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return float(value)


_FROM_EVENT: dict[str, tuple[frozenset[ReplicaState], ReplicaState]] = {
    # "live": the server accepts connections, load() is (about to be) running.
    "live": (frozenset({ReplicaState.STARTING}), ReplicaState.LOADING),
    "loading": (frozenset({ReplicaState.STARTING}), ReplicaState.LOADING),
    "ready": (frozenset({ReplicaState.STARTING, ReplicaState.LOADING}), ReplicaState.READY),
    "failed": (
        frozenset({ReplicaState.STARTING, ReplicaState.LOADING, ReplicaState.READY}),
        ReplicaState.FAILED,
    ),
}


def next_state(current: ReplicaState, event: ReplicaEvent) -> ReplicaState:
    """The state after ``event``; ``current`` itself means no change.

    Events never move a replica backwards, and a replica that is draining,
    stopped or failed stays so whatever it says afterwards.
    """
    rule = _FROM_EVENT.get(event.kind)
    if rule is None:
        return current
    sources, target = rule
    return target if current in sources else current


def exit_state(
    current: ReplicaState, *, stopping: bool, returncode: int | None = 0, killed: bool = False
) -> ReplicaState:
    """The state once the process has exited.

    An exit we asked for ends in STOPPED; any other exit of a live replica is a
    failure (the router must replace it).  A replica that already reported
    ``failed`` keeps that state and its traceback.  A stop ends in status 0
    (SIGTERM, handled) or in our own SIGKILL (``killed``, after the grace
    period); any other end while a stop was on its way -- a crash, kill -9,
    the kernel's OOM killer -- is a failure all the same (the router asks for
    a stop when a replica drops a request, often because it just died).
    """
    if current is ReplicaState.FAILED:
        return current
    if stopping and (killed or returncode in (0, -signal.SIGTERM)):
        return ReplicaState.STOPPED
    if current is ReplicaState.STOPPED:
        return current
    return ReplicaState.FAILED


def describe_exit(returncode: int | None) -> str:
    """``exited with code 1`` / ``was killed by SIGKILL``."""
    if returncode is None:
        return "exited"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


def replica_env(
    base: Mapping[str, str],
    spec: ReplicaSpec,
    swell_vars: Mapping[str, str],
) -> dict[str, str]:
    """The replica's environment, later layers winning.

    ``base`` (the server's environment, minus ``SWELL_*``) < the package's
    ``environment_variables`` < ``spec.env`` (set by the router) < the
    backend's own ``SWELL_*`` contract variables.
    """
    env = {k: v for k, v in base.items() if not k.startswith(_SERVER_ONLY_PREFIXES)}
    env.update(spec.config.environment_variables)
    env.update(spec.env)
    env.update(swell_vars)
    return env


def new_replica_id(taken: Collection[str] = ()) -> str:
    """``r-`` and 6 hex digits, not in ``taken``."""
    for _ in range(1000):
        candidate = "r-" + secrets.token_hex(3)
        if candidate not in taken:
            return candidate
    raise RuntimeError("could not find a free replica id")  # 16M ids: not reachable


def socket_path(directory: Path, replica_id: str) -> Path | None:
    """``directory/<replica_id>.sock`` if it fits in ``sun_path``, else ``None``."""
    path = directory / f"{replica_id}.sock"
    if len(os.fsencode(str(path))) > MAX_SOCKET_PATH:
        return None
    return path


def tail_lines(path: Path, lines: int = 40, *, max_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` lines of a log file (reads at most ``max_bytes``)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    parts = text.splitlines()
    if size > max_bytes and parts:
        parts = parts[1:]  # the first line was cut in the middle
    return "\n".join(parts[-lines:])
