"""Replica logs: stamped lines, rotation under the caps, a follower across rotations and new replicas."""

from __future__ import annotations

import os
from pathlib import Path

from swell.serving import LogFollower, LogLimits, ReplicaLogs
from swell.serving._logs import strip_stamps


def _write_all(logs: ReplicaLogs, deployment: str, replica: str, chunks: list[bytes]) -> None:
    capture = logs.capture(deployment, replica)
    capture.start()
    for chunk in chunks:
        os.write(capture.write_fd, chunk)
    os.close(capture.write_fd)
    capture.join(10)


def test_lines_are_stamped_with_stream_and_partial_lines_joined(tmp_path: Path) -> None:
    logs = ReplicaLogs(tmp_path)
    capture = logs.capture("d", "r")
    capture.note("starting")
    capture.start()
    for chunk in (b"one\ntw", b"o\nthree"):
        os.write(capture.write_fd, chunk)
    os.close(capture.write_fd)
    capture.join(10)
    lines = LogFollower(tmp_path / "d").poll()
    assert [(line.stream, line.text) for line in lines] == [
        ("swell", "starting"), ("output", "one"), ("output", "two"), ("output", "three")
    ]
    assert all(line.replica == "r" and line.time.endswith("Z") and len(line.time) == 24 for line in lines)
    assert strip_stamps(logs.path("d", "r").read_text()) == "starting\none\ntwo\nthree\n"
    assert oct(logs.path("d", "r").stat().st_mode & 0o777) == "0o600"


def test_output_fed_in_batches_is_stamped_like_a_pipe_and_a_torn_last_line_is_ended(tmp_path: Path) -> None:
    # A Ray replica's output arrives in batches over the actor channel, cut anywhere.
    logs = ReplicaLogs(tmp_path)
    writer = logs.writer("d", "r")
    writer.feed(b"loading wei")
    writer.note("placed on node n1")
    writer.feed(b"ghts\nready\nhalf")
    writer.feed(b"")
    writer.close()
    writer.feed(b"after the end\n")  # dropped
    lines = LogFollower(tmp_path / "d").poll()
    assert [(line.stream, line.text) for line in lines] == [
        ("output", "loading wei"), ("swell", "placed on node n1"), ("output", "ghts"), ("output", "ready"),
        ("output", "half"),
    ]
    assert strip_stamps(logs.path("d", "r").read_text()) == "loading wei\nplaced on node n1\nghts\nready\nhalf\n"


def test_a_replica_never_holds_more_than_its_cap(tmp_path: Path) -> None:
    logs = ReplicaLogs(tmp_path, LogLimits(replica_bytes=100_000, deployment_bytes=10_000_000))
    line = b"x" * 99 + b"\n"
    _write_all(logs, "d", "r", [line * 100 for _ in range(200)])  # 2 MB through a 100 kB cap
    files = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert files == ["r.log", "r.log.1"]
    used = sum(p.stat().st_size for p in (tmp_path / "d").iterdir())
    assert used <= 100_000 + 64 * 1024 * 2  # the cap, plus at most one read's worth of stamped lines
    assert LogFollower(tmp_path / "d").poll()[-1].text == "x" * 99


def test_a_deployment_drops_its_oldest_files_past_its_cap(tmp_path: Path) -> None:
    logs = ReplicaLogs(tmp_path, LogLimits(replica_bytes=50_000, deployment_bytes=120_000))
    for n in range(6):
        _write_all(logs, "d", f"r{n}", [b"y" * 999 + b"\n"] * 60)  # 60 kB each
    used = sum(p.stat().st_size for p in (tmp_path / "d").iterdir())
    assert used <= 120_000 + 60_000  # the cap, plus the live replica's file
    assert (tmp_path / "d" / "r5.log").exists()  # the newest stays
    assert not (tmp_path / "d" / "r0.log").exists()


def test_follower_reads_on_across_rotation_and_new_replicas(tmp_path: Path) -> None:
    logs = ReplicaLogs(tmp_path, LogLimits(replica_bytes=4096, deployment_bytes=10_000_000))
    follower = LogFollower(tmp_path / "d")
    assert follower.poll() == []
    capture = logs.capture("d", "a")
    capture.start()
    seen: list[str] = []
    for i in range(40):  # 40 lines of 100 bytes: rotates about every 20
        os.write(capture.write_fd, f"{i:03d} ".encode() + b"z" * 95 + b"\n")
        capture_done = i % 7 == 0
        if capture_done:
            capture.join(0.05)
            seen += [line.text[:3] for line in follower.poll()]
    os.close(capture.write_fd)
    capture.join(10)
    _write_all(logs, "d", "b", [b"from b\n"])
    rest = follower.poll()
    seen += [line.text[:3] for line in rest if line.replica == "a"]
    # Whatever the follower saw, it saw in order and once; the newest lines and the new replica arrive.
    numbers = [int(s) for s in seen]
    assert numbers == sorted(set(numbers)) and numbers[-1] == 39
    assert [line.text for line in rest if line.replica == "b"] == ["from b"]
    only_b = LogFollower(tmp_path / "d", replica="b").poll()
    assert [line.text for line in only_b] == ["from b"]
