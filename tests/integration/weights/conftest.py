"""A real HTTP file server (with and without Range, dropping connections) and moto's S3 server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from swell.weights import FetchOptions, WeightsCache, WeightsFetcher
from swell.weights._testing import FileServer, MotoS3, ServerBehaviour, write_random_file

SIZE = 5 * 1024 * 1024 + 4321  # parts of 1 MiB: six, the last one short
#: Small parts and quick retries keep the suite fast; the logic is the same at 16 MiB.
OPTIONS = FetchOptions(part_size=1 << 20, parallelism=4, retries=4, retry_backoff=0.01, timeout=10)


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("origin") / "model.bin"
    return path, write_random_file(path, SIZE, seed=1)


ServerFactory = Callable[..., FileServer]


@pytest.fixture
def serve(weights_file: tuple[Path, str]) -> Iterator[ServerFactory]:
    servers: list[FileServer] = []

    def start(files: dict[str, Path] | None = None, **behaviour: object) -> FileServer:
        server = FileServer(files or {"model.bin": weights_file[0]}, ServerBehaviour(**behaviour))  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


FetcherFactory = Callable[..., WeightsFetcher]


@pytest.fixture
def fetcher(tmp_path: Path) -> Iterator[FetcherFactory]:
    """``fetcher()`` is one replica's view of the shared cache in ``tmp_path/cache``."""
    caches: list[WeightsCache] = []

    def make(limit: int | None = None, options: FetchOptions = OPTIONS, **kwargs: object) -> WeightsFetcher:
        cache = WeightsCache(tmp_path / "cache", limit)
        caches.append(cache)
        return WeightsFetcher(cache, options, **kwargs)  # type: ignore[arg-type]

    yield make
    for cache in caches:
        cache.release()


@pytest.fixture
def package(tmp_path: Path) -> Path:
    path = tmp_path / "package"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    pytest.importorskip("moto.server", reason="moto[server] is in the test extra")
    pytest.importorskip("boto3")
    with MotoS3() as server:
        yield server
