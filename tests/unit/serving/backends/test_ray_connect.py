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
