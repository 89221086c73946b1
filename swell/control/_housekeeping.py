"""Housekeeping: last-use times written to the store, idle deployments deactivated,
advice on each deployment's recorded traffic refreshed in the background.

Runs every ``housekeeping_seconds`` (and once at a clean stop, so last-use
times survive it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from swell.control._advice import AdviceCache, stop
from swell.control._keys import ApiKeys
from swell.control._lifecycle import Lifecycle
from swell.control._registry import DeploymentKind, DeploymentRecord
from swell.control._shared import Part, Shared
from swell.serving import BuildState

__all__ = ["Housekeeping"]

log = logging.getLogger("swell.control")


class Housekeeping(Part):
    def __init__(
        self, shared: Shared, keys: ApiKeys, lifecycle: Lifecycle, advice: AdviceCache
    ) -> None:
        super().__init__(shared)
        self.keys = keys
        self.lifecycle = lifecycle
        self.advice = advice
        self._seen_active: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="swell-housekeeping")

    async def close(self) -> None:
        await self.advice.close()
        await stop(self._task)

    async def _loop(self) -> None:
        while True:
            await self.clock.sleep(self.settings.housekeeping_seconds)
            try:
                await self.run()
            except Exception:
                log.exception("housekeeping failed")

    async def run(self, *, deactivate: bool = True) -> None:
        """Write last-use times to the store; deactivate deployments idle for too long."""
        now = self.wall()
        used: dict[str, float] = {}
        for scaled in self.controller:
            if scaled.last_active is not None and self._seen_active.get(scaled.id) != scaled.last_active:
                self._seen_active[scaled.id] = scaled.last_active
                record = self.registry.deployments.get(scaled.id)
                if record is not None:
                    record.last_request_at = used[record.id] = now
        keys_used = self.keys.take_used()
        if used or keys_used:
            async with self.store.transaction() as tx:
                await tx.touch_deployments(used)
                await tx.touch_keys(keys_used)
        if not deactivate:
            return
        self.refresh_advice()
        for record in list(self.registry.deployments.values()):
            days = self._idle_limit_days(record)
            if days is None or not record.active or record.build is not BuildState.BUILT:
                continue
            since = max(t for t in (record.last_request_at, record.activated_at, record.created_at) if t is not None)
            live = self.controller.get(record.id)
            busy = live is not None and live.router.concurrency > 0
            if now - since >= days * 86400 and not busy:
                async with self._lock:
                    if record.active:
                        await self.lifecycle.deactivate_record(record, f"no traffic for {days:g} days")

    def refresh_advice(self) -> None:
        """Start advising, in the background, on each published deployment that is due."""
        advice = self.advice
        now = self.clock.now()
        jobs = []
        for scaled in self.controller:
            record = self.registry.deployments.get(scaled.id)
            if record is None or record.kind is DeploymentKind.DEVELOPMENT or scaled.retiring:
                continue
            arrivals = scaled.router.arrivals
            if advice.due(record.id, arrivals, now):
                def read(record: DeploymentRecord = record) -> tuple[dict[str, Any], dict[str, Any]]:
                    view = self.lifecycle.views.deployment_view(record)
                    return view, self.lifecycle.views.traffic(record.model_id, record.id)
                jobs.append((record.id, record.model_id, read, arrivals))
        advice.forget(set(self.registry.deployments))
        advice.start(jobs, now, self.settings.max_replica_cap)

    def _idle_limit_days(self, record: DeploymentRecord) -> float | None:
        if record.kind is DeploymentKind.DEVELOPMENT:
            return self.settings.deactivate_development_after_days
        return self.settings.deactivate_published_after_days
