from __future__ import annotations

import asyncio
import threading

import pytest

from swell.modelserver._workers import WorkerThreads


async def test_calls_run_in_worker_threads_and_return_or_raise() -> None:
    workers = WorkerThreads(2)
    assert await workers.run(lambda: threading.current_thread().name) != threading.current_thread().name
    with pytest.raises(ZeroDivisionError):
        await workers.run(lambda: 1 / 0)
    workers.shutdown()


async def test_up_to_limit_calls_overlap_and_never_more() -> None:
    limit = 3
    workers = WorkerThreads(limit)
    barrier = threading.Barrier(limit, timeout=10)  # passes only if `limit` calls run at once
    lock = threading.Lock()
    active = {"now": 0, "max": 0}

    def call() -> None:
        with lock:
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
        barrier.wait()
        with lock:
            active["now"] -= 1

    # Two rounds: threads that went idle are reused, and each queued call finds a free one.
    await asyncio.gather(*(workers.run(call) for _ in range(limit)))
    await asyncio.gather(*(workers.run(call) for _ in range(limit)))
    await asyncio.gather(*(workers.run(lambda: None) for _ in range(4 * limit)))
    assert active["max"] == limit
    assert len(workers._threads) == limit
    workers.shutdown()


async def test_submit_hands_back_a_future_of_the_loop() -> None:
    workers = WorkerThreads(1)
    future = workers.submit(lambda x: x + 1, 1)
    assert future.get_loop() is asyncio.get_running_loop()
    assert await future == 2
    workers.shutdown()
