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


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class WorkerThreads:
    """At most ``limit`` daemon threads, started on demand, shared by all sync calls."""

    def __init__(self, limit: int, name: str = "predict") -> None:
        self._limit = limit
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for work
        self._queued = 0  # calls submitted, not yet picked up
        self._lock = threading.Lock()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        thread = None
        with self._lock:
            self._queued += 1
            # Every queued call must have a thread of its own to go to, up to the limit,
            # or a call could wait behind a slow one while the limit allows more.
            if self._queued > self._idle and len(self._threads) < self._limit:
                thread = threading.Thread(target=self._work, name=f"{self._name}_{len(self._threads)}",
                                          daemon=True)
                self._threads.append(thread)
        if thread is not None:
            thread.start()
        self._queue.put((loop, future, fn, args))
        return await future

    def _work(self) -> None:
        get = self._queue.get
        while True:
            with self._lock:
                self._idle += 1
            item = get()
            if item is _STOP:
                return
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            loop, future, fn, args = item
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting coroutine
                ok, value = False, exc
            else:
                ok, value = True, result
            try:
                loop.call_soon_threadsafe(_settle, future, ok, value)
            except RuntimeError:
                pass  # the loop is closed: nobody is waiting any more
            del item, loop, future, fn, args, value

    def shutdown(self) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)


class ContextWorkerThreads(WorkerThreads):
    """Worker threads that run each call in a copy of its caller's context (contextvars),
    as ``asyncio.to_thread`` does: with tracing on, sync model code sees the current span."""

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await super().run(contextvars.copy_context().run, fn, *args)
