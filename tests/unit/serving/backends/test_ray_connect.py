"""The Ray backend's own bookkeeping, without a cluster (its placement rules: test_ray_placement.py)."""

from __future__ import annotations

import asyncio
import threading
import time

from swell.serving.backends.ray import RayBackend


async def test_concurrent_connects_join_the_cluster_once() -> None:
    # The server's prewarm and the first replica's start ask at once; a second
    # ray.init while the first is in flight raises ("called ray.init twice").
    backend = RayBackend("127.0.0.1:1")
    joins: list[int] = []
    inside = threading.Lock()

    def init() -> None:
        assert inside.acquire(blocking=False), "a second join began while one was in flight"
        try:
            time.sleep(0.05)  # ray.init takes a while (a thread of its own)
            joins.append(1)
        finally:
            inside.release()

    backend._init = init  # type: ignore[method-assign]
    await asyncio.gather(backend.connect(), backend.connect(), backend.prewarm())
    assert joins == [1]


async def test_a_package_s_object_is_let_go_once_its_folder_is_removed(tmp_path, monkeypatch) -> None:
    # ray.put is the only cluster call: what it was given is what the store would pin.
    import ray

    stored: list[bytes] = []
    monkeypatch.setattr(ray, "put", lambda data: stored.append(data) or f"ref-{len(stored)}")
    backend = RayBackend("127.0.0.1:1")
    folders = []
    for version in ("v1", "v2"):
        folder = tmp_path / version
        (folder / "model").mkdir(parents=True)
        (folder / "model" / "model.py").write_text(f"# {version}\n")
        folders.append(folder)
    first = await backend._package(folders[0])
    assert await backend._package(folders[0]) == first  # packed and stored once
    (folders[0] / "model" / "model.py").unlink()
    (folders[0] / "model").rmdir()
    folders[0].rmdir()  # the deployment was deleted: its folder removed later
    second = await backend._package(folders[1])
    assert second != first and len(stored) == 2
    assert list(backend._packages) == [folders[1]]
