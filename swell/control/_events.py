"""Events: what happened to each deployment, kept in the store and told to followers.

The control loop (``swell.serving.Controller``) and the control plane record
every scaling decision they act on, with the rule's own reason, and every
replica start, ready, drain, stop and failure, settings change, promotion and
(de)activation.  ``record`` only appends to a list: a task writes the rows in
one transaction (the store is never waited for on the control loop), keeps the
last :data:`EVENTS_KEPT` per deployment, and hands each written row, with its
id, to whoever follows that deployment (``GET …/events?follow=true``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from swell.control._store import Store
from swell.control._time import iso

__all__ = ["EVENTS_KEPT", "EventLog", "event_view"]

log = logging.getLogger("swell.events")

EVENTS_KEPT = 1000
_TRIM_EVERY = 100  # a deployment's old events are deleted after this many new ones
_FOLLOWER_BACKLOG = 10_000  # a follower this far behind loses events, never the server its memory


class EventLog:
    """The :class:`swell.serving.EventSink` of the control plane."""

    def __init__(self, store: Store, wall: Callable[[], float], *, keep: int = EVENTS_KEPT) -> None:
        self.store = store
        self.wall = wall
        self.keep = keep
        self._pending: list[dict[str, Any]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._followers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._since_trim: Counter[str] = Counter()
        self._forgotten: set[str] = set()
        self._purge: set[str] = set()

    def record(self, deployment_id: str, kind: str, message: str, **fields: Any) -> None:
        if deployment_id in self._forgotten:
            return
        self._pending.append(
            {"deployment_id": deployment_id, "at": self.wall(), "kind": kind, "message": message, "details": fields}
        )
        if self._wake is not None:
            self._wake.set()

    def forget(self, deployment_id: str) -> None:
        """A deleted deployment: drop what is not written yet, and whatever comes later."""
        self._forgotten.add(deployment_id)
        self._purge.add(deployment_id)  # rows a write under way adds are deleted after it
        self._pending = [row for row in self._pending if row["deployment_id"] != deployment_id]
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> None:
        self._wake = asyncio.Event()
        if self._pending:
            self._wake.set()
        self._task = asyncio.create_task(self._run(), name="swell-events")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # the store is down: these events are lost, the loop is not
                log.exception("could not write events")

    async def flush(self) -> None:
        """Write what was recorded so far, then tell followers."""
        async with self._lock:
            rows, self._pending = self._pending, []
            purge, self._purge = self._purge, set()
            if not rows and not purge:
                return
            async with self.store.transaction() as tx:
                for deployment_id in purge:
                    await tx.delete_events(deployment_id)
                for row in rows:
                    row["id"] = await tx.add_event(row)
                    self._since_trim[row["deployment_id"]] += 1
                for deployment_id, count in list(self._since_trim.items()):
                    if count >= _TRIM_EVERY:
                        await tx.trim_events(deployment_id, self.keep)
                        del self._since_trim[deployment_id]
        for row in rows:
            for queue in self._followers.get(row["deployment_id"], ()):
                if queue.qsize() < _FOLLOWER_BACKLOG:
                    queue.put_nowait(row)

    async def history(
        self, deployment_id: str, *, since: float | None = None, after_id: int = 0, limit: int = EVENTS_KEPT
    ) -> list[Mapping[str, Any]]:
        """The deployment's kept events, oldest first (what was just recorded included)."""
        await self.flush()
        return await self.store.events(deployment_id, since=since, after_id=after_id, limit=limit)

    @contextmanager
    def follow(self, deployment_id: str) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        """A queue that receives each event of ``deployment_id`` once it is written."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._followers.setdefault(deployment_id, set()).add(queue)
        try:
            yield queue
        finally:
            followers = self._followers.get(deployment_id)
            if followers is not None:
                followers.discard(queue)
                if not followers:
                    del self._followers[deployment_id]


def event_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "time": iso(row["at"]),
        "deployment_id": row["deployment_id"],
        "kind": row["kind"],
        "message": row["message"],
        "details": row["details"],
    }
