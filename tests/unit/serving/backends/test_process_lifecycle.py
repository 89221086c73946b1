"""The process backend's pure parts: events, transitions, environment, paths."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from swell.config import ModelConfig
from swell.serving import ReplicaSpec, ReplicaState
from swell.serving.backends.process._forkserver import forkable
from swell.serving.backends.process._lifecycle import (
    MAX_SOCKET_PATH,
    ReplicaEvent,
    describe_exit,
    exit_state,
    new_replica_id,
    next_state,
    parse_event,
    replica_env,
    socket_path,
    tail_lines,
)

S = ReplicaState


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"event":"live"}\n', ReplicaEvent("live")),
        (b'{"event": "loading"}', ReplicaEvent("loading")),
        (b'{"event":"ready","load_seconds":1.25}', ReplicaEvent("ready", load_seconds=1.25)),
        (b'{"event":"ready","load_seconds":2}', ReplicaEvent("ready", load_seconds=2)),
        (b'{"event":"ready","load_seconds":"x"}', ReplicaEvent("ready")),
        (b'{"event":"ready","load_seconds":true}', ReplicaEvent("ready")),
        (b'{"event":"failed","error":"Traceback\\nValueError: x"}',
         ReplicaEvent("failed", error="Traceback\nValueError: x")),
        (b'{"event":"failed","error":["a"]}', ReplicaEvent("failed", error="['a']")),
        ('{"event":"mystery"}', ReplicaEvent("mystery")),
        (b"", None),
        (b"   \n", None),
        (b"not json", None),
        (b'["event","live"]', None),
        (b'{"event":3}', None),
        (b'{"state":"ready"}', None),
        (b'\xff\xfe{"event":"live"}', None),
    ],
)
def test_parse_event(line: bytes | str, expected: ReplicaEvent | None) -> None:
    assert parse_event(line) == expected


@pytest.mark.parametrize(
    ("current", "kind", "expected"),
    [
        (S.STARTING, "live", S.LOADING),
        (S.STARTING, "loading", S.LOADING),
        (S.LOADING, "loading", S.LOADING),
        (S.LOADING, "live", S.LOADING),
        (S.STARTING, "ready", S.READY),
        (S.LOADING, "ready", S.READY),
        (S.READY, "ready", S.READY),
        (S.READY, "loading", S.READY),  # never backwards
        (S.STARTING, "failed", S.FAILED),
        (S.LOADING, "failed", S.FAILED),
        (S.READY, "failed", S.FAILED),
        (S.DRAINING, "failed", S.DRAINING),  # stopping wins: it will end STOPPED
        (S.DRAINING, "ready", S.DRAINING),
        (S.STOPPED, "ready", S.STOPPED),
        (S.FAILED, "ready", S.FAILED),
        (S.LOADING, "mystery", S.LOADING),
    ],
)
def test_next_state(current: ReplicaState, kind: str, expected: ReplicaState) -> None:
    assert next_state(current, ReplicaEvent(kind)) is expected


@pytest.mark.parametrize(
    ("current", "stopping", "expected"),
    [
        (S.DRAINING, True, S.STOPPED),
        (S.READY, True, S.STOPPED),
        (S.STARTING, False, S.FAILED),
        (S.LOADING, False, S.FAILED),
        (S.READY, False, S.FAILED),
        (S.FAILED, False, S.FAILED),
        (S.FAILED, True, S.FAILED),  # keeps its traceback
        (S.STOPPED, False, S.STOPPED),
    ],
)
def test_exit_state(current: ReplicaState, stopping: bool, expected: ReplicaState) -> None:
    assert exit_state(current, stopping=stopping) is expected


@pytest.mark.parametrize(
    ("returncode", "killed", "expected"),
    [
        (0, False, S.STOPPED),  # SIGTERM handled: the stop we asked for
        (-signal.SIGTERM, False, S.STOPPED),
        (-signal.SIGKILL, True, S.STOPPED),  # our SIGKILL after the grace period
        (-signal.SIGKILL, False, S.FAILED),  # kill -9 or the OOM killer, before our stop landed
        (3, False, S.FAILED),  # it crashed (the router noticed first and asked for a stop)
        (-signal.SIGSEGV, False, S.FAILED),
    ],
)
def test_a_replica_that_dies_while_being_stopped_failed(
    returncode: int, killed: bool, expected: ReplicaState
) -> None:
    assert exit_state(S.DRAINING, stopping=True, returncode=returncode, killed=killed) is expected


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (0, "exited with code 0"),
        (3, "exited with code 3"),
        (-signal.SIGKILL, "was killed by SIGKILL"),
        (-signal.SIGSEGV, "was killed by SIGSEGV"),
        (-200, "was killed by signal 200"),
        (None, "exited"),
    ],
)
def test_describe_exit(code: int | None, text: str) -> None:
    assert describe_exit(code) == text


def test_replica_env_layers_and_strips_server_variables() -> None:
    config = ModelConfig(environment_variables={"A": "package", "B": "package"})
    spec = ReplicaSpec(
        deployment_id="d1",
        package_dir=Path("/pkg"),
        config=config,
        python="python",
        env={"B": "spec", "SWELL_TRACE": "spec"},
    )
    base = {"PATH": "/bin", "A": "server", "SWELL_API_KEY": "secret", "SWELL_REPLICA_PORT": "9"}
    env = replica_env(base, spec, {"SWELL_REPLICA_SOCKET": "/s.sock", "B": "contract"})
    assert env == {
        "PATH": "/bin",
        "A": "package",
        "B": "contract",
        "SWELL_TRACE": "spec",
        "SWELL_REPLICA_SOCKET": "/s.sock",
    }
    assert "SWELL_API_KEY" not in env


def test_new_replica_id_is_short_and_avoids_taken() -> None:
    ids = {new_replica_id() for _ in range(200)}
    assert len(ids) == 200
    for rid in ids:
        assert rid.startswith("r-") and len(rid) == 8
        assert set(rid[2:]) <= set("0123456789abcdef")
    fresh = new_replica_id(ids)
    assert fresh not in ids


def test_socket_path_refuses_paths_too_long_for_af_unix(tmp_path: Path) -> None:
    assert socket_path(Path("/tmp/swell-x"), "r-abcdef") == Path("/tmp/swell-x/r-abcdef.sock")
    long_dir = Path("/" + "d" * (MAX_SOCKET_PATH - len("/r-abcdef.sock") - 1))
    fits = socket_path(long_dir, "r-abcdef")
    assert fits is not None and len(os.fsencode(str(fits))) == MAX_SOCKET_PATH
    assert socket_path(Path(str(long_dir) + "d"), "r-abcdef") is None


def test_tail_lines(tmp_path: Path) -> None:
    log = tmp_path / "r.log"
    assert tail_lines(log) == ""  # missing file
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail_lines(log, 3) == "line 97\nline 98\nline 99"
    assert tail_lines(log, 500).count("\n") == 99
    # A window that starts mid-line drops the partial first line.
    tail = tail_lines(log, 500, max_bytes=20)
    assert tail.splitlines()[0].startswith("line ")
    assert tail.endswith("line 99")
    log.write_bytes(b"ok\n\xff\xfebad bytes\n")
    assert tail_lines(log, 1).endswith("bad bytes")


@pytest.mark.parametrize(
    ("env", "server_env", "expected"),
    [
        ({"PATH": "/a", "X": "1"}, {"PATH": "/b"}, True),  # read later, by os.environ
        ({"PYTHONUNBUFFERED": "1"}, {"PYTHONUNBUFFERED": "1"}, True),
        ({"PYTHONPATH": "/pkg"}, {}, False),  # sys.path is built at start-up
        ({}, {"PYTHONPATH": "/pkg"}, False),
        ({"PYTHONHASHSEED": "1"}, {"PYTHONHASHSEED": "2"}, False),
        ({"LD_PRELOAD": "libx.so"}, {}, False),
        ({"MALLOC_ARENA_MAX": "2"}, {}, False),
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}, {}, False),
        ({"OMP_NUM_THREADS": "1"}, {}, True),  # read when numpy loads, in the replica
    ],
)
def test_forkable(env: dict[str, str], server_env: dict[str, str], expected: bool) -> None:
    assert forkable(env, server_env) is expected
