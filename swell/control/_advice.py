"""Advice on a deployment's own history, computed in the background and cached.

``swell advise`` replays hundreds of candidate settings: far too slow to run when
someone asks for a status.  So housekeeping runs it here, one deployment at a
time, at most every ``advice_seconds`` per deployment and only when new traffic
has been recorded since, through a runner passed in at construction (the server
passes the dashboard's, which runs the CLI as a child process with a time limit;
tests pass a fake).  What the API and ``swell status`` show is :func:`notable`'s
digest of the last answer: present only when the findings would save at least
:data:`SAVES_PERCENT` % of replica-seconds or remove most cold-start waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

__all__ = ["MIN_REQUESTS", "SAVES_PERCENT", "AdviceCache", "AdviseRunner", "notable", "stop"]

log = logging.getLogger("swell.control")

#: Findings that save at least this share of replica-seconds are worth a marker.
SAVES_PERCENT = 20
#: A deployment whose recorded history holds fewer requests is not advised on (too little to judge).
MIN_REQUESTS = 100
#: Seconds before a failed background run is tried again; doubled for each failure in a
#: row, up to the usual spacing (a run that times out costs up to two minutes of CPU).
RETRY_SECONDS = 300.0
#: Cold-start waits count as "many" from this share of requests, and "most removed" from half of them.
_MANY_WAITS = 0.1

#: ``(deployment view, traffic history, max_replica cap) -> swell advise --json's answer``.
AdviseRunner = Callable[[Mapping[str, Any], Mapping[str, Any], int], Awaitable[dict[str, Any]]]


def _metric(metrics: Any, name: str) -> float:
    value = metrics.get(name) if isinstance(metrics, Mapping) else None
    return float(value) if isinstance(value, (int, float)) else 0.0


def _candidates(advice: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """Every point advise recommends, with its simulated metrics: the findings together, the
    settings with the extras it offers, and each option of its menu."""
    out: list[tuple[str, Mapping[str, Any]]] = []
    recommended = advice.get("recommended") or {}
    if advice.get("findings"):
        out.append(("the recommended settings", recommended.get("metrics") or {}))
    extras = advice.get("with_extras") or {}
    if extras.get("metrics"):
        out.append(("the settings with " + " and ".join(extras.get("extras") or {}), extras["metrics"]))
    for option in advice.get("menu") or []:
        out.append((f"the {option.get('name')} option", option.get("metrics") or {}))
    return out


def notable(
    advice: Mapping[str, Any], *, requests: int, model_id: str, deployment_id: str
) -> dict[str, Any] | None:
    """What to tell the operator of ``swell advise``'s answer, or None when it is not worth a marker.

    Worth it: a recommendation that saves ≥ :data:`SAVES_PERCENT` % of replica-seconds at no
    more cold-start waits, or one that removes most of them when many requests wait for one.
    """
    current = (advice.get("current") or {}).get("metrics") or {}
    cost, waits = _metric(current, "replica_seconds"), _metric(current, "requests_delayed_by_cold_start")
    saves = removes = 0.0
    save_from = remove_from = ""
    for label, metrics in _candidates(advice):
        c, w = _metric(metrics, "replica_seconds"), _metric(metrics, "requests_delayed_by_cold_start")
        if cost > 0 and c < cost and w <= waits:
            share = 100 * (cost - c) / cost
            if share > saves:
                saves, save_from = share, label
        if waits > 0 and w < waits and (waits - w) / waits > removes:
            removes, remove_from = (waits - w) / waits, label
    many_waits = requests > 0 and waits >= _MANY_WAITS * requests
    if saves < SAVES_PERCENT and not (many_waits and removes > 0.5):
        return None
    parts = []
    if saves >= SAVES_PERCENT:
        parts.append(f"{save_from} would save {saves:.0f} % of replica-seconds")
    if many_waits and removes > 0.5:
        parts.append(f"{remove_from} would remove {100 * removes:.0f} % of {waits:,.0f} cold-start waits")
    ref = f"{quote(model_id, safe='')}/deployments/{quote(deployment_id, safe='')}"
    return {
        "saves_percent": round(saves),
        "cold_start_waits_removed_percent": round(100 * removes) if many_waits else 0,
        "summary": "; ".join(parts).capitalize() + ".",
        "url": f"/ui/models/{ref}",  # the dashboard's page: run the advice there, apply a PATCH in a click
        "command": f"swell advise --deployment {model_id}/{deployment_id}",
    }


@dataclass(slots=True)
class _Entry:
    computed_at: float  # the clock's time of the run
    arrivals: int  # the history's requests when it ran (no new traffic: no new run)
    digest: dict[str, Any] | None  # notable()'s answer; None: nothing worth a marker
    failures: int = 0  # runs in a row that failed since (then computed_at is the last failure's time)


class AdviceCache:
    """The last advice per deployment and when it is due again."""

    def __init__(self, runner: AdviseRunner | None, *, every: float, min_requests: int = MIN_REQUESTS) -> None:
        self.runner = runner
        self.every = every  # seconds between runs for one deployment (0: never run)
        self.min_requests = min_requests
        self._entries: dict[str, _Entry] = {}
        self._task: asyncio.Task[None] | None = None

    def get(self, deployment_id: str) -> dict[str, Any] | None:
        entry = self._entries.get(deployment_id)
        return entry.digest if entry is not None else None

    def due(self, deployment_id: str, arrivals: int, now: float) -> bool:
        """Whether a deployment whose history holds ``arrivals`` requests should be advised on at ``now``."""
        if self.runner is None or self.every <= 0 or arrivals < self.min_requests:
            return False
        entry = self._entries.get(deployment_id)
        if entry is None:
            return True
        if entry.failures:  # busy, too slow, bad history: tried again after a back-off, not every round
            return now - entry.computed_at >= min(self.every, RETRY_SECONDS * 2 ** (entry.failures - 1))
        return now - entry.computed_at >= self.every and arrivals != entry.arrivals

    def forget(self, keep: set[str]) -> None:
        for gone in set(self._entries) - keep:
            del self._entries[gone]

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, jobs: list[tuple[str, str, Callable[[], tuple[Mapping[str, Any], Mapping[str, Any]]], int]],
              now: float, cap: int) -> None:
        """Run ``jobs`` (deployment id, model id, what to advise on, its requests) in the background,
        one after the other; nothing when a previous round still runs."""
        if jobs and not self.running:
            self._task = asyncio.create_task(self.run(jobs, now, cap), name="swell-advice")

    async def run(self, jobs: list[tuple[str, str, Callable[[], tuple[Mapping[str, Any], Mapping[str, Any]]], int]],
                  now: float, cap: int) -> None:
        assert self.runner is not None
        for deployment_id, model_id, read, arrivals in jobs:
            view, traffic = read()
            try:
                answer = await self.runner(view, traffic, cap)
            except Exception as exc:  # busy with a dashboard run, too slow, bad history: later
                log.info("background advice for %s skipped: %s", deployment_id, exc)
                last = self._entries.get(deployment_id)
                self._entries[deployment_id] = _Entry(
                    now, arrivals, last.digest if last is not None else None, (last.failures if last else 0) + 1
                )
                continue
            digest = notable(answer, requests=arrivals, model_id=model_id, deployment_id=deployment_id)
            self._entries[deployment_id] = _Entry(now, arrivals, digest)
            if digest is not None:
                log.info("advice for %s: %s", deployment_id, digest["summary"])

    async def close(self) -> None:
        await stop(self._task)


async def stop(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task of the plane's and wait until it has ended."""
    if task is not None:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
