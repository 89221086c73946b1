"""The shared cache on a temporary folder: pins held by live owners only, LRU eviction that skips them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swell.serving.backends.process._lifecycle import next_state, parse_event
from swell.serving._backend import ReplicaState
from swell.weights import FetchOptions, WeightsCache, options_from_env


def put(cache: WeightsCache, digest: str, size: int, age: float) -> None:
    partial = cache.partials / f"{digest}.part"
    partial.write_bytes(b"x" * size)
    cache.insert(partial, digest)
    os.utime(cache.blob_path(digest), (time.time() - age, time.time() - age))


def test_eviction_is_lru_and_skips_pins(tmp_path: Path) -> None:
    replica = WeightsCache(tmp_path)  # a running replica that uses "a"
    assert replica.use("a") is None  # nothing cached yet
    put(replica, "a", 100, age=300)
    replica.release()
    assert replica.use("a") is not None  # pinned again, and "a" is the oldest…
    os.utime(replica.blob_path("a"), (time.time() - 300, time.time() - 300))
    other = WeightsCache(tmp_path, limit=250)
    put(other, "b", 100, age=200)
    put(other, "c", 100, age=100)
    other.release()
    # …yet eviction goes to "b", the least recently used blob nobody pins.
    assert other.make_room(0) == ["b"]
    assert sorted(b.digest for b in other.blobs_on_disk()) == ["a", "c"]
    assert other.make_room(200) == ["c"]  # still never "a", even over the limit
    assert [b.digest for b in other.blobs_on_disk()] == ["a"]
    replica.release()  # the replica stopped: now "a" may go
    assert other.make_room(200) == ["a"]


def test_pins_of_a_dead_process_are_dropped(tmp_path: Path) -> None:
    cache = WeightsCache(tmp_path, limit=10)
    put(cache, "d", 100, age=10)
    cache.release()
    # Another process pins "d", then dies without releasing (as a SIGKILLed replica would).
    code = (
        "import sys, os; from swell.weights import WeightsCache; "
        f"c = WeightsCache({str(tmp_path)!r}); assert c.use('d') is not None; "
        "print('pinned', flush=True); sys.stdin.read(); os._exit(0)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "pinned"
    assert "d" in cache.pinned()
    assert cache.make_room(0) == []  # alive: kept
    child.kill()
    child.wait()
    assert cache.pinned() == set()
    assert cache.make_room(0) == ["d"]
    assert list(cache.pins.iterdir()) == []  # the stale pin file is gone


def test_use_drops_a_blob_of_the_wrong_size(tmp_path: Path) -> None:
    cache = WeightsCache(tmp_path)
    put(cache, "e", 10, age=0)
    assert cache.use("e", size=11) is None
    assert not cache.blob_path("e").exists()


def test_blobs_are_read_only(tmp_path: Path) -> None:
    cache = WeightsCache(tmp_path)
    put(cache, "f", 3, age=0)
    assert cache.blob_path("f").stat().st_mode & 0o222 == 0


def test_options_from_env() -> None:
    options, limit = options_from_env({"SWELL_WEIGHTS_PART_SIZE": "4Mi", "SWELL_WEIGHTS_PARALLELISM": "3",
                                       "SWELL_WEIGHTS_CACHE_SIZE": "2Gi"})
    assert (options.part_size, options.parallelism, limit) == (4 << 20, 3, 2 << 30)
    assert options_from_env({}) == (FetchOptions(), None)
    with pytest.raises(ValueError):
        options_from_env({"SWELL_WEIGHTS_PARALLELISM": "0"})


@pytest.mark.parametrize(
    "line",
    [
        b'{"event": "weights_progress", "bytes_fetched": 10, "bytes_cached": 0, "files_done": 0, "files_total": 1}',
        b'{"event": "weights_ready", "seconds": 1.5, "bytes_fetched": 10, "bytes_cached": 0, "files": 1}',
    ],
)
@pytest.mark.parametrize("state", [ReplicaState.STARTING, ReplicaState.LOADING, ReplicaState.READY])
def test_weights_events_do_not_move_a_replica(line: bytes, state: ReplicaState) -> None:
    event = parse_event(line)
    assert event is not None
    assert next_state(state, event) is state
