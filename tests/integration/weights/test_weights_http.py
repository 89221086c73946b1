"""Fetching from a real HTTP server on 127.0.0.1: ranges, fallbacks, drops, resume, cache, integrity."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from conftest import OPTIONS, SIZE, FetcherFactory, ServerFactory

from swell.weights import FetchOptions, WeightsError, WeightsIntegrityError
from swell.weights._fetch import Downloader, RemoteFile
from swell.weights._testing import write_random_file


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def entry(url: str, **extra: object) -> dict[str, object]:
    return {"source": url, "mount_location": "/app/model_cache/m", **extra}


def test_parallel_ranges_land_at_the_path_the_model_asked_for(
    serve: ServerFactory, fetcher: FetcherFactory, package: Path, weights_file: tuple[Path, str]
) -> None:
    server = serve()
    events: list[tuple[str, dict[str, object]]] = []
    report = fetcher(emit=lambda name, **fields: events.append((name, fields))).prepare(
        [entry(server.url("model.bin"), sha256=weights_file[1])], package)
    seen = package / "model_cache" / "m" / "model.bin"  # /app is the package dir
    assert sha(seen) == weights_file[1]
    ranges = [r for _, _, r in server.stats.gets()]
    assert len(ranges) == 6 and all(r and r.startswith("bytes=") for r in ranges)  # one GET per part
    assert report.bytes_fetched == SIZE and report.bytes_cached == 0
    assert events[-1][0] == "weights_ready" and events[-1][1]["bytes_fetched"] == SIZE
    assert any(name == "weights_progress" for name, _ in events)


def test_second_replica_reads_from_the_cache(
    serve: ServerFactory, fetcher: FetcherFactory, package: Path, weights_file: tuple[Path, str]
) -> None:
    server = serve()
    fetcher().prepare([entry(server.url("model.bin"))], package)
    sent = server.stats.body_bytes
    other_package = package.parent / "package2"  # another deployment, same file
    report = fetcher().prepare([entry(server.url("model.bin"))], other_package)
    assert report.bytes_fetched == 0 and report.bytes_cached == SIZE
    assert server.stats.body_bytes == sent  # not one byte more: a HEAD revalidated it
    assert sha(other_package / "model_cache" / "m" / "model.bin") == weights_file[1]
    # With a sha256 the cache does not even ask the server.
    requests = len(server.stats.requests)
    fetcher().prepare([entry(server.url("model.bin"), sha256=weights_file[1])], package)
    assert len(server.stats.requests) == requests


def test_a_changed_file_is_fetched_again(serve: ServerFactory, fetcher: FetcherFactory, package: Path,
                                         tmp_path: Path) -> None:
    origin = tmp_path / "changing.bin"
    write_random_file(origin, 3 << 20, seed=2)
    server = serve({"changing.bin": origin})
    fetcher().prepare([entry(server.url("changing.bin"))], package)
    digest = write_random_file(origin, 3 << 20, seed=3)  # new content, new ETag
    report = fetcher().prepare([entry(server.url("changing.bin"))], package)
    assert report.bytes_fetched == 3 << 20
    assert sha(package / "model_cache" / "m" / "changing.bin") == digest


def test_server_that_ignores_range_gives_one_stream(
    serve: ServerFactory, fetcher: FetcherFactory, package: Path, weights_file: tuple[Path, str]
) -> None:
    server = serve(ignore_range=True)
    report = fetcher().prepare([entry(server.url("model.bin"), sha256=weights_file[1])], package)
    assert len(server.stats.gets()) == 1 and report.bytes_fetched == SIZE
    assert sha(package / "model_cache" / "m" / "model.bin") == weights_file[1]


def test_server_without_a_length(serve: ServerFactory, fetcher: FetcherFactory, package: Path,
                                 weights_file: tuple[Path, str]) -> None:
    server = serve(no_length=True)
    fetcher().prepare([entry(server.url("model.bin"))], package)
    assert sha(package / "model_cache" / "m" / "model.bin") == weights_file[1]


@pytest.mark.parametrize("ignore_range", [False, True], ids=["ranges", "single-stream"])
def test_dropped_connections_are_retried(serve: ServerFactory, fetcher: FetcherFactory, package: Path,
                                         weights_file: tuple[Path, str], ignore_range: bool) -> None:
    server = serve(drop_after=300_000, drops=3, ignore_range=ignore_range)
    fetcher().prepare([entry(server.url("model.bin"), sha256=weights_file[1])], package)
    assert sha(package / "model_cache" / "m" / "model.bin") == weights_file[1]
    assert server.behaviour.drops == 0  # all three drops happened
    if not ignore_range:  # a dropped part continues from where it broke off
        assert server.stats.body_bytes == SIZE


def test_too_many_drops_fail_clearly(serve: ServerFactory, fetcher: FetcherFactory, package: Path) -> None:
    server = serve(drop_after=1000, drops=100)
    with pytest.raises(WeightsError, match="failed 5 times"):
        fetcher().prepare([entry(server.url("model.bin"))], package)


class Interrupted(Exception):
    pass


def test_an_interrupted_download_resumes(serve: ServerFactory, fetcher: FetcherFactory, package: Path,
                                         weights_file: tuple[Path, str], tmp_path: Path) -> None:
    server = serve()
    cache = fetcher().cache
    remote = RemoteFile(server.url("model.bin"), server.url("model.bin"), "model.bin")
    partial = cache.partial_path(remote.url)
    seen = [0]

    def crash_midway(n: int) -> None:
        seen[0] += n
        if seen[0] > 3 << 20:
            raise Interrupted  # the replica dies here

    import httpx

    with httpx.Client() as client, pytest.raises(Interrupted):
        Downloader(client, FetchOptions(part_size=1 << 20, parallelism=1)).download(remote, partial, crash_midway)
    assert partial.exists() and partial.with_name(partial.name + ".json").exists()
    before = server.stats.body_bytes
    report = fetcher().prepare([entry(server.url("model.bin"), sha256=weights_file[1])], package)
    again = server.stats.body_bytes - before
    assert again <= SIZE - (3 << 20) + (1 << 20)  # only the parts not on disk yet (+ the probe)
    assert report.bytes_fetched == again
    assert sha(package / "model_cache" / "m" / "model.bin") == weights_file[1]
    assert not partial.exists() and not partial.with_name(partial.name + ".json").exists()


def test_sha256_mismatch_is_a_clear_error_and_caches_nothing(
    serve: ServerFactory, fetcher: FetcherFactory, package: Path, weights_file: tuple[Path, str]
) -> None:
    server = serve()
    wrong = "0" * 64
    one = fetcher()
    with pytest.raises(WeightsIntegrityError) as info:
        one.prepare([entry(server.url("model.bin"), sha256=wrong)], package)
    message = str(info.value)
    assert "sha256 mismatch" in message and wrong in message and weights_file[1] in message
    assert str(SIZE) in message and server.url("model.bin") in message
    assert one.cache.blobs_on_disk() == []
    assert not (package / "model_cache" / "m" / "model.bin").exists()


def test_missing_file_is_a_clear_error(serve: ServerFactory, fetcher: FetcherFactory, package: Path) -> None:
    server = serve()
    with pytest.raises(WeightsError, match="HTTP 404 not found"):
        fetcher().prepare([entry(server.url("nope.bin"))], package)


def test_concurrent_replicas_download_once(serve: ServerFactory, fetcher: FetcherFactory, tmp_path: Path,
                                           weights_file: tuple[Path, str]) -> None:
    server = serve()
    fetchers = [fetcher() for _ in range(3)]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            fetchers[i].prepare([entry(server.url("model.bin"))], tmp_path / f"replica{i}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert server.stats.body_bytes == SIZE  # one download for three replicas
    for i in range(3):
        assert sha(tmp_path / f"replica{i}" / "model_cache" / "m" / "model.bin") == weights_file[1]


def test_eviction_skips_blobs_a_running_replica_uses(
    serve: ServerFactory, fetcher: FetcherFactory, tmp_path: Path, weights_file: tuple[Path, str]
) -> None:
    second = tmp_path / "second.bin"
    write_random_file(second, 2 << 20, seed=4)
    server = serve({"model.bin": weights_file[0], "second.bin": second})
    running = fetcher(limit=6 << 20)  # a replica that keeps running with model.bin
    running.prepare([entry(server.url("model.bin"))], tmp_path / "a")
    newcomer = fetcher(limit=6 << 20)  # both do not fit: something has to give…
    newcomer.prepare([entry(server.url("second.bin"))], tmp_path / "b")
    # …but not the blob in use: the cache runs over its limit instead.
    assert weights_file[1] in {b.digest for b in newcomer.cache.blobs_on_disk()}
    assert sha(tmp_path / "a" / "model_cache" / "m" / "model.bin") == weights_file[1]
    running.cache.release()  # that replica stopped
    newcomer.cache.evict()
    assert weights_file[1] not in {b.digest for b in newcomer.cache.blobs_on_disk()}
    # A later cold start of the first deployment fetches it again and relinks.
    report = fetcher(limit=6 << 20).prepare([entry(server.url("model.bin"))], tmp_path / "a")
    assert report.bytes_fetched == SIZE
    assert sha(tmp_path / "a" / "model_cache" / "m" / "model.bin") == weights_file[1]


def test_patterns_and_default_mounts(serve: ServerFactory, fetcher: FetcherFactory, package: Path,
                                     weights_file: tuple[Path, str]) -> None:
    server = serve()
    f = fetcher()
    f.prepare([{"source": server.url("model.bin"), "volume_folder": "vf"}], package)
    assert sha(package / "model_cache" / "vf" / "model.bin") == weights_file[1]
    f.prepare([{"source": server.url("model.bin")}], package)  # no location: the package's data/
    assert sha(package / "data" / "model.bin") == weights_file[1]
    with pytest.raises(WeightsError, match="no file matches"):
        f.prepare([{"source": server.url("model.bin"), "allow_patterns": ["*.safetensors"]}], package)


def test_unusable_mount_location_is_explained(serve: ServerFactory, fetcher: FetcherFactory,
                                              package: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    server = serve()
    with pytest.raises(WeightsError, match="cannot create the mount location"):
        fetcher().prepare([{"source": server.url("model.bin"), "mount_location": str(blocker / "m")}], package)


def test_options_single_stream_is_one_plain_get(serve: ServerFactory, fetcher: FetcherFactory,
                                                package: Path) -> None:
    server = serve()
    fetcher(options=FetchOptions(part_size=None, parallelism=1)).prepare([entry(server.url("model.bin"))], package)
    assert [r for _, _, r in server.stats.gets()] == [None]
    assert OPTIONS.part_size == 1 << 20
