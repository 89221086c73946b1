"""A lean thread pool for sync model code: one hop out, one ``call_soon_threadsafe`` back.

``loop.run_in_executor`` pays for a ``concurrent.futures.Future``, its condition
variable and a chained asyncio future per call; on the replica's hot path (a sync
``predict`` per request) that is a measurable share of the work.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = object()


class WorkerThreads:
    """At most ``limit`` daemon threads, started on demand, shared by all sync calls.

    Bound to the event loop of its first call, as asyncio's locks are (a
    replica has one): the loop is not looked up again per call (in CPython
    3.11 each lookup is a ``getpid`` system call).
    """

    def __init__(self, limit: int, name: str = "predict") -> None:
        self._limit = limit
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # Calls submitted and not yet settled, counted on the loop alone (no lock):
        # a thread that has finished one is counted busy until its answer is in.
        self._busy = 0

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.submit(fn, *args)

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """``fn(*args)`` in a worker thread; its result (or exception) in the future returned."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._busy += 1
        # Every call must have a thread of its own to go to, up to the limit,
        # or a call could wait behind a slow one while the limit allows more.
        threads = self._threads
        if self._busy > len(threads) and len(threads) < self._limit:
            thread = threading.Thread(target=self._work, name=f"{self._name}_{len(threads)}", daemon=True)
            threads.append(thread)
            thread.start()
        self._queue.put((future, fn, args))
        return future

    def _settle(self, future: asyncio.Future[Any], ok: bool, value: Any) -> None:
        self._busy -= 1
        if future.cancelled():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def _work(self) -> None:
        get = self._queue.get
        settle = self._settle
        loop = self._loop
        assert loop is not None
        while True:
            item = get()
            if item is _STOP:
                return
            future, fn, args = item
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting coroutine
                ok, value = False, exc
            else:
                ok, value = True, result
            try:
                loop.call_soon_threadsafe(settle, future, ok, value)
            except RuntimeError:
                pass  # the loop is closed: nobody is waiting any more
            del item, future, fn, args, value

    def shutdown(self) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)


class ContextWorkerThreads(WorkerThreads):
    """Worker threads that run each call in a copy of its caller's context (contextvars),
    as ``asyncio.to_thread`` does: with tracing on, sync model code sees the current span."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        return super().submit(contextvars.copy_context().run, fn, *args)
