"""The control loop: every tick, the pure rule decides and this runner acts.

Per deployment and per tick: read the router's mean concurrency since the last
tick into the window, call :func:`swell.autoscaling.decide`, then start
replicas through the backend or drain them.  A request that finds no replica
calls the rule at once (``wake``) instead of waiting for the tick; a replica
reports READY through the backend's callback, never by being polled.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from bisect import bisect_left
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from swell.autoscaling import (
    Clock,
    ConcurrencyWindow,
    Decision,
    Observation,
    RealClock,
    decide,
)
from swell.config import AutoscalingSettings, ServerSettings
from swell.serving._backend import (
    CapacityView,
    Replica,
    ReplicaBackend,
    ReplicaSpec,
    ReplicaState,
)
from swell.serving._capacity import Idle, Reclaim, Waiting, choose_reclaims
from swell.serving._cold_start import cold_start_of
from swell.serving._deployment import (
    COLD_START_BUCKETS,
    DeploymentSpec,
    ReplicaRecord,
    ScaledDeployment,
)
from swell.serving._events import EventSink, NullSink
from swell.serving._router import ReplicaHandle, Tracing, Unavailable
from swell.serving._status import scale_down_choice

__all__ = ["COLD_START_BUCKETS", "Controller", "ScaledDeployment"]

log = logging.getLogger("swell.scaler")

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
# A replica that dies while serving (a crash, kill -9, its memory limit)
# within this long of becoming ready counts toward a crash loop, as
# Kubernetes' CrashLoopBackOff counts restarts; one that served longer starts
# the count afresh, and so does any replica that stays ready this long.
CRASH_LOOP_WINDOW_SECONDS = 60.0
# From this many such deaths in a row, with no replica left to serve, the
# deployment answers 503 (as for a failed load) instead of holding requests
# through the back-off; a single death only delays them by one start.
CRASH_LOOP_FAIL_FAST = 2


class Controller:
    """Runs the rule for every deployment and acts on its decisions."""

    def __init__(
        self,
        backend: ReplicaBackend,
        *,
        settings: ServerSettings | None = None,
        clock: Clock | None = None,
        wall_clock: Callable[[], float] = time.time,
        events: EventSink | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.backend = backend
        self.tracing = tracing  # every router's request spans (swell serve --otlp-endpoint); None: off
        self.events: EventSink = events or NullSink()  # what the operator is told (docs/control.md, Events)
        self.settings = settings or ServerSettings()
        self.clock: Clock = clock or RealClock()
        self.wall = wall_clock  # the traffic history's timestamps (unix seconds)
        self._deployments: dict[str, ScaledDeployment] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._closing = False
        # Capacity pressure needs the backend to say what is free (both real backends do).
        free = getattr(backend, "free_resources", None)
        self._capacity: CapacityView | None = backend if callable(free) else None  # type: ignore[assignment]

    # ------------------------------------------------------------------ registry

    def add(
        self,
        deployment_id: str,
        *,
        name: str,
        spec: ReplicaSpec,
        settings: AutoscalingSettings,
        queue_limit: int | None = None,
        status_url: str | None = None,
    ) -> ScaledDeployment:
        """Put a deployment under the loop; its router is ``.router`` of the result."""
        scaled = ScaledDeployment(
            self,
            deployment_id,
            name=name,
            spec=DeploymentSpec(settings, spec),
            window=ConcurrencyWindow(self.clock.now()),
            queue_limit=queue_limit,
            status_url=status_url,
            drain_grace=self.settings.drain_grace_seconds,
        )
        self._deployments[deployment_id] = scaled
        return scaled

    def get(self, deployment_id: str) -> ScaledDeployment | None:
        return self._deployments.get(deployment_id)

    def __iter__(self) -> Iterator[ScaledDeployment]:
        return iter(list(self._deployments.values()))

    def retire(self, deployment_id: str) -> None:
        """Scale a deployment away: it serves what it holds, then its replicas stop."""
        scaled = self._deployments.get(deployment_id)
        if scaled is not None:
            scaled.retiring = True
            self._retire_step(scaled)

    def unretire(self, deployment_id: str) -> ScaledDeployment | None:
        """Keep a retiring deployment after all (activated again before it had gone)."""
        scaled = self._deployments.get(deployment_id)
        if scaled is not None:
            scaled.retiring = False
        return scaled

    def hold(self, deployment_id: str, replicas: int, *, until: float = math.inf) -> None:
        """Keep at least ``replicas`` running until ``until`` (the clock's time),
        whatever the rule says: a promotion warms the new deployment up to the
        old one's size, and holds it there while the window fills with traffic."""
        scaled = self._deployments[deployment_id]
        scaled.floor = min(replicas, scaled.spec.settings.max_replica)
        scaled.floor_until = until
        self._decide(scaled, self.clock.now())

    def reload(self, deployment_id: str, spec: ReplicaSpec) -> int:
        """Replace every replica with one running ``spec`` (a development push).

        Requests queued or arriving meanwhile wait in the router, as they do
        on a cold start; requests in flight finish on the old replicas, which
        then stop.  Returns how many replicas were started.
        """
        scaled = self._deployments[deployment_id]
        router = scaled.router
        scaled.spec = DeploymentSpec(scaled.spec.settings, spec)
        old = [h for h in router.handles.values() if h.serving]
        replace = len(old) + scaled.condition.pending_starts
        for handle in old:
            self._drain(scaled, handle)
        # Starts already under way run the old code: count them out, start anew.
        scaled.condition.clear_failures()
        start = replace or (1 if router.queued else 0)
        for _ in range(start):
            self._start(scaled)
        log.info("%s: reloading with new code (%d replica(s) replaced)", router.name, len(old))
        self.events.record(deployment_id, "reloaded", f"new code: {len(old)} replica(s) replaced", replaced=len(old))
        return start

    def ready_count(self, deployment_id: str) -> int:
        scaled = self._deployments.get(deployment_id)
        if scaled is None:
            return 0
        return scaled.router.ready_count

    def update_settings(self, deployment_id: str, settings: AutoscalingSettings) -> None:
        """New settings; the rule uses them from the next tick."""
        scaled = self._deployments[deployment_id]
        scaled.spec = DeploymentSpec(settings, scaled.spec.replica)

    # ------------------------------------------------------------------ the loop

    async def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._run(), name="swell-control-loop")

    async def _run(self) -> None:
        tick = self.settings.tick_seconds
        while True:
            await self.clock.sleep(tick)
            try:
                await self.tick()
            except Exception:  # the loop must outlive a bad tick
                log.exception("control loop tick failed")

    async def tick(self) -> None:
        """One pass of the rule over every deployment."""
        now = self.clock.now()
        for scaled in list(self._deployments.values()):
            try:
                self._tick_one(scaled, now)
            except Exception:  # one broken deployment must not starve the others
                log.exception("%s: control loop tick failed", scaled.router.name)
        self._make_room()
        await self._settle()

    def _tick_one(self, scaled: ScaledDeployment, now: float) -> None:
        router = scaled.router
        mean = router.take_mean(now)
        if now > scaled.window.last_time:
            scaled.busy += mean * (now - scaled.window.last_time)
        scaled.window.record(now, mean)
        arrivals = router.arrivals - scaled.arrivals_seen
        scaled.arrivals_seen = router.arrivals
        scaled.history.record(self.wall(), arrivals, mean)
        if mean > 0 or router.concurrency:
            scaled.last_active = now
        if scaled.retiring:
            self._retire_step(scaled)
            return
        condition = scaled.condition
        if condition.unavailable is not None and now >= condition.retry_at:
            condition.unavailable = None  # the next request may try again
        self._check_load_timeouts(scaled, now)
        if condition.crashes:
            self._check_crash_loop(scaled, now)
        self._decide(scaled, now)

    async def _settle(self) -> None:
        """Let the starts this tick asked for reach the backend."""
        await asyncio.sleep(0)

    def _decide(self, scaled: ScaledDeployment, now: float, demand: int = 0) -> None:
        router = scaled.router
        serving = router.serving_count
        if scaled.floor and now >= scaled.floor_until:
            scaled.floor = 0  # the promotion's hold is over
        extras = scaled.extras()
        if scaled.ceiling is not None and (router.arrivals != scaled.ceiling_arrivals or router.queued):
            scaled.ceiling = None  # it was called again: it serves
        observation = Observation(
            now,
            max(router.concurrency, demand),
            serving,
            ready=router.ready_count if extras.burst else None,  # burst counts only ready replicas as draining the queue
            wall=self.wall(),  # for schedules
            promotion_floor=scaled.floor,
            promotion_until=scaled.floor_until,
            backoff_until=scaled.condition.retry_at,
            failing=scaled.condition.load_failing or scaled.condition.crashes > 0,
            ceiling=scaled.ceiling,
        )
        decision, scaled.state = decide(scaled.spec.settings, scaled.window, scaled.state, observation, extras)
        scaled.decision = decision
        scaled.decided_at = now
        if decision.target != serving:
            self._apply(scaled, decision)

    def wake(self, scaled: ScaledDeployment, demand: int = 0) -> None:
        """A request found no replica: run the rule now, not at the next tick.

        ``demand`` counts callers that did not queue (a 202's, who asked not
        to wait): they wake the deployment as waiting requests would.
        """
        if self._closing or self._deployments.get(scaled.id) is not scaled:
            return
        # A retiring deployment still serves the requests it holds (its
        # replicas stop only once its queue is empty), so it may wake too;
        # a caller who did not queue has nothing there to be served.
        if demand and scaled.retiring:
            return
        self._decide(scaled, self.clock.now(), demand=demand)

    # ------------------------------------------------------------------ acting

    def _apply(self, scaled: ScaledDeployment, decision: Decision) -> None:
        router = scaled.router
        serving = router.serving_count
        target = decision.target
        if target > serving:
            for handle in list(router.handles.values()):
                if serving >= target:
                    break
                if handle.draining and not handle.stopping and not handle.broken and handle.state.alive:
                    router.undrain(handle)
                    serving += 1
            need = target - serving
            if need <= 0:
                log.info("%s: %s (kept draining replicas)", router.name, decision.reason)
                self._decided(scaled, decision, serving, "kept draining replicas")
                return
            log.info("%s: %s", router.name, decision.reason)
            self._decided(scaled, decision, serving)
            for _ in range(need):
                self._start(scaled)
        elif target < serving:
            candidates = [h for h in router.handles.values() if h.serving]
            victims = scale_down_choice(candidates, serving - target)
            if victims:
                log.info("%s: %s", router.name, decision.reason)
                self._decided(scaled, decision, serving)
            for handle in victims:
                self._drain(scaled, handle)

    # ------------------------------------------------------------------ capacity pressure

    def reclaim(self) -> list[Reclaim]:
        """Stop idle replicas of other deployments to make room for replicas that wait for
        resources (``--capacity-policy reclaim``; the choice is :func:`choose_reclaims`)."""
        if self.settings.capacity_policy != "reclaim" or self._capacity is None or self._closing:
            return []
        if not any(  # the common tick: nothing waits for room, so build no snapshot
            h.state is ReplicaState.PENDING and h.serving
            for scaled in self._deployments.values()
            for h in scaled.router.handles.values()
        ):
            return []
        now = self.clock.now()
        waiting: list[tuple[float, Waiting]] = []
        idle: list[Idle] = []
        leaving: list[Replica] = []
        for scaled in self._deployments.values():
            router = scaled.router
            name = f"{router.name}/{scaled.id}"
            floor = max(
                scaled.spec.settings.min_replica,
                scaled.decision.floor if scaled.decision is not None else 0,
                scaled.floor if now < scaled.floor_until else 0,
            )
            ready = sum(1 for h in router.handles.values() if h.serving and h.ready)
            for handle in router.handles.values():
                replica = handle.replica
                if not replica.holds:
                    continue
                if not handle.serving:
                    if replica.state.alive or replica.state is ReplicaState.DRAINING:
                        leaving.append(replica)  # what it holds comes back when it has gone
                elif handle.state is ReplicaState.PENDING:
                    demand = router.queued > 0 or ready < floor
                    waiting.append((replica.created_at, Waiting(scaled.id, name, replica.id, replica.holds, demand)))
                elif handle.ready and not scaled.retiring:
                    record = scaled.condition.replicas.get(replica.id)
                    ready_since = record.ready_since if record is not None and record.ready_since is not None else now
                    idle.append(Idle(
                        scaled.id, name, replica.id, replica.holds,
                        last_used=max(ready_since, scaled.last_active if scaled.last_active is not None else ready_since),
                        in_flight=handle.in_flight, queued=router.queued,
                        replicas=router.serving_count, min_replica=floor, node=replica.node or "",
                    ))
        if not waiting:
            return []
        free = self._capacity.free_resources()
        if free is None:
            return []
        room = {node: dict(amounts) for node, amounts in free.items()}
        for replica in leaving:
            amounts = room.setdefault(replica.node or "", {})
            for resource, amount in replica.holds.items():
                amounts[resource] = amounts.get(resource, 0.0) + amount
        waiting.sort(key=lambda item: item[0])
        chosen = choose_reclaims([w for _, w in waiting], idle, room, now)
        for reclaim in chosen:
            self._reclaimed(reclaim, now)
        for deployment_id, replica_id in dict.fromkeys((r.waiting.deployment_id, r.waiting.replica_id) for r in chosen):
            handle = self._deployments[deployment_id].router.handles.get(replica_id)
            if handle is not None:
                self._capacity.place_first(handle.replica)  # the room it was made goes to it
        return chosen

    def _make_room(self) -> None:
        try:
            self.reclaim()
        except Exception:  # the loop and the start that asked must outlive it
            log.exception("capacity pressure failed")

    def _reclaimed(self, reclaim: Reclaim, now: float) -> None:
        victim, asking = reclaim.victim, reclaim.waiting
        scaled = self._deployments[victim.deployment_id]
        handle = scaled.router.handles.get(victim.replica_id)
        if handle is None or not handle.serving:
            return
        log.info("%s", reclaim.reason)
        details = {
            "replica_id": victim.replica_id, "replica_deployment_id": victim.deployment_id,
            "for_deployment_id": asking.deployment_id, "for_replica_id": asking.replica_id,
            "idle_seconds": round(now - victim.last_used, 3), "needs": dict(asking.needs),
        }
        wall = self.wall()
        for deployment_id in (victim.deployment_id, asking.deployment_id):
            self.events.record(deployment_id, "capacity_reclaimed", reclaim.reason, **details)
            if (touched := self._deployments.get(deployment_id)) is not None:
                touched.reclaimed = (wall, reclaim.reason)
        self._drain(scaled, handle)
        # It keeps the replicas it has under way, not those that wait for room too.
        router = scaled.router
        scaled.ceiling = sum(1 for h in router.handles.values() if h.serving and h.state is not ReplicaState.PENDING)
        scaled.ceiling_arrivals = router.arrivals

    def _decided(self, scaled: ScaledDeployment, decision: Decision, replicas: int, note: str = "") -> None:
        self.events.record(
            scaled.id,
            decision.action.value,
            decision.reason + (f" ({note})" if note else ""),
            replicas=replicas,
            target=decision.target,
            average=round(decision.average, 3),
            wanted=decision.wanted,
        )

    def _start(self, scaled: ScaledDeployment) -> None:
        scaled.condition.pending_starts += 1
        self._spawn(self._start_one(scaled))

    async def _start_one(self, scaled: ScaledDeployment) -> None:
        router = scaled.router
        spec = scaled.spec.replica
        try:
            replica = await self.backend.start(spec, self._on_change)
        except Exception as exc:
            scaled.condition.pending_starts -= 1
            log.exception("%s: could not start a replica", router.name)
            self._load_failed(scaled, f"could not start a replica: {exc}")
            return
        scaled.condition.pending_starts -= 1
        self.events.record(
            scaled.id, "replica_started", f"replica {replica.id} {replica.state.value}"
            + (f": {replica.reason}" if replica.reason else ""), replica_id=replica.id, start_mode=replica.start_mode,
        )
        if not replica.state.alive and replica.id not in router.handles:
            # It failed before it existed (could not spawn): no callback will
            # follow, so this is the only news; without it waiters would hang.
            self._load_failed(scaled, replica.error or f"the replica {replica.state.value} as it started")
            return
        self._on_change(replica)
        if replica.state is ReplicaState.PENDING and replica.holds:
            self._make_room()  # now, not at the next tick
        if scaled.spec.replica is not spec:  # reloaded while this one started: it runs the old code
            handle = router.handles.get(replica.id)
            if handle is not None and handle.serving:
                self._drain(scaled, handle)

    def _drain(self, scaled: ScaledDeployment, handle: ReplicaHandle) -> None:
        self.events.record(scaled.id, "replica_draining", f"replica {handle.id} draining", replica_id=handle.id)
        if scaled.router.drain(handle):
            self._stop(scaled, handle)

    def drained(self, scaled: ScaledDeployment, handle: ReplicaHandle) -> None:
        """A draining replica has answered its last request: stop it."""
        if self._deployments.get(scaled.id) is scaled and not handle.stopping:
            self._stop(scaled, handle)

    def replace_broken(self, scaled: ScaledDeployment, handle: ReplicaHandle) -> None:
        """A replica dropped a request: stop it; the rule starts its replacement."""
        if self._deployments.get(scaled.id) is not scaled:
            return
        log.warning("%s: replica %s dropped a connection; replacing it", scaled.router.name, handle.id)
        self._stop(scaled, handle)

    def _stop(self, scaled: ScaledDeployment, handle: ReplicaHandle, grace: float | None = None) -> None:
        handle.stopping = True
        wait = self.settings.drain_grace_seconds if grace is None else grace
        self._spawn(self._stop_one(handle.replica, wait))

    async def _stop_one(self, replica: Replica, grace: float) -> None:
        try:
            await self.backend.stop(replica, grace)
        except Exception:
            log.exception("stopping replica %s failed", replica.id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _retire_step(self, scaled: ScaledDeployment) -> None:
        router = scaled.router
        if router.queued:
            return  # it serves what it holds first
        for handle in list(router.handles.values()):
            if not handle.draining and not handle.stopping:
                self._drain(scaled, handle)
        if not router.handles and not scaled.condition.pending_starts:
            self._deployments.pop(scaled.id, None)

    def _check_load_timeouts(self, scaled: ScaledDeployment, now: float) -> None:
        """Fail a start that makes no progress for ``load_stall_seconds``, or
        that has not finished within ``load_timeout_seconds`` however busy.

        ``runtime.load_timeout_seconds`` in the model's config.yaml overrides
        the server's total.  Progress is the replica's counter, which its backend bumps on every
        sign of life (an event, bytes of weights, a log line); time spent
        ``pending`` (waiting for resources) counts toward neither limit.
        """
        own = scaled.spec.replica.config.runtime.load_timeout_seconds
        total = own or self.settings.load_timeout_seconds
        total_name = "runtime.load_timeout_seconds" if own else "load_timeout_seconds"
        records = scaled.condition.replicas
        for handle in list(scaled.router.handles.values()):
            record = records.get(handle.id)
            if not handle.serving or handle.ready or record is None:
                continue
            if handle.state is ReplicaState.PENDING:
                record.started_at = record.progress_at = now
                continue
            reason = load_verdict(
                record, handle.replica.progress, now,
                stall=self.settings.load_stall_seconds, total=total, total_name=total_name,
            )
            if reason is not None:
                log.warning("%s: replica %s %s", scaled.router.name, handle.id, reason)
                self._stop(scaled, handle, grace=0)
                self._load_failed(scaled, f"the model {reason}")

    # ------------------------------------------------------------------ backend news

    def _on_change(self, replica: Replica) -> None:
        """The backend's news about a replica, read here and only here: what it
        means for the deployment (started, ready, crashed, failed to load, stopped
        as asked) and what the router is told to do about it."""
        scaled = self._deployments.get(replica.deployment_id)
        if scaled is None:
            if replica.state.alive and not self._closing:
                self._spawn(self._stop_one(replica, 0))
            return
        router = scaled.router
        handle = router.handles.get(replica.id)
        state = replica.state
        now = self.clock.now()
        if state in (ReplicaState.STOPPED, ReplicaState.FAILED):
            if handle is not None:
                router.forget(handle)
                record = scaled.condition.replicas.pop(replica.id, None)
                self._ended(scaled, handle, record, now)
            return
        if state is ReplicaState.DRAINING:
            if handle is not None:
                router.drain(handle)
            return
        if handle is None:
            handle = router.add(replica)
            scaled.condition.replicas[replica.id] = ReplicaRecord(now, replica.progress, now)
        else:
            handle.replica = replica
        if state is ReplicaState.READY and handle.pool is None and not handle.broken:
            router.ready(handle)
            self._became_ready(scaled, handle, now)

    def _ended(self, scaled: ScaledDeployment, handle: ReplicaHandle, record: ReplicaRecord | None, now: float) -> None:
        """A replica stopped or failed: as asked, after serving (a crash), or before it was ready."""
        replica = handle.replica
        state = replica.state
        if (handle.draining or handle.stopping) and not handle.broken:  # a stop we asked for (a broken one died first)
            log.debug("%s: replica %s %s", scaled.router.name, replica.id, state.value)
            self.events.record(scaled.id, "replica_stopped", f"replica {replica.id} stopped", replica_id=replica.id)
        elif handle.pool is not None:
            ready_since = record.ready_since if record is not None else None
            self._crashed(scaled, replica, now - ready_since if ready_since is not None else 0.0, now)
        else:
            started_at = record.started_at if record is not None else now
            cold = cold_start_of(replica, fallback_total=now - started_at)
            self.events.record(
                scaled.id, "replica_failed", f"replica {replica.id} {state.value} before it was ready",
                replica_id=replica.id, cold_start=cold.as_dict() if cold else None,
            )
            self._load_failed(scaled, replica.error or f"the replica {state.value} before it was ready")

    def _became_ready(self, scaled: ScaledDeployment, handle: ReplicaHandle, now: float) -> None:
        router = scaled.router
        replica = handle.replica
        condition = scaled.condition
        record = condition.replicas[replica.id]
        condition.failures = 0
        condition.load_failing = False
        if not condition.crashes:  # a crash loop's error stays until a replica has served a while
            condition.error = None
        record.ready_since = now
        condition.unavailable = None
        cold = cold_start_of(replica, fallback_total=now - record.started_at)
        assert cold is not None
        record.cold_start = cold
        seconds = cold.total
        scaled.cold_start_counts[bisect_left(COLD_START_BUCKETS, seconds)] += 1
        scaled.cold_start_sum += seconds
        scaled.cold_phases.observe(cold)
        condition.cold_start_estimate = seconds
        detail = cold.describe()
        log.info(
            "%s: replica %s ready in %.2f s%s%s",
            router.name,
            replica.id,
            seconds,
            f" ({detail})" if detail else "",
            f" [{cold.start}]" if cold.start else "",
        )
        self.events.record(
            scaled.id, "replica_ready", f"replica {replica.id} ready in {seconds:.2f} s" + (f" ({detail})" if detail else ""),
            replica_id=replica.id, cold_start=cold.as_dict(),
        )

    def _crashed(self, scaled: ScaledDeployment, replica: Replica, uptime: float, now: float) -> None:
        """A ready replica died without being asked to (crash, kill -9, memory limit).

        Its requests in flight have been answered by the router (502, or sent
        elsewhere); here it is counted and replaced: at once if it had served
        for :data:`CRASH_LOOP_WINDOW_SECONDS`, else, when no replica is left
        ready, after :func:`crash_backoff` (the first at once, then the same
        exponential back-off as a failed load).  With a
        ready sibling the deployment still serves, so the replacement starts
        at once: a poison request or a stray kill costs one start, not a
        minute of capacity.
        """
        router = scaled.router
        condition = scaled.condition
        detail = replica.error or (
            f"it {replica.state.value} after dropping a connection"
            if replica.state is ReplicaState.STOPPED
            else "it exited"
        )
        condition.error = f"replica {replica.id} failed while serving: {detail}"
        self.events.record(scaled.id, "replica_failed", condition.error, replica_id=replica.id, uptime=round(uptime, 3))
        if uptime >= CRASH_LOOP_WINDOW_SECONDS:
            condition.crashes = 0
            log.warning(
                "%s: replica %s failed after serving %.0f s: %s; replacing it",
                router.name,
                replica.id,
                uptime,
                _first_line(detail),
            )
        else:
            condition.crashes += 1
            ready = any(h.ready and h.serving for h in router.handles.values())
            backoff = 0.0
            if not ready:
                backoff = crash_backoff(condition.crashes)
                condition.retry_at = max(condition.retry_at, now + backoff)
            log.warning(
                "%s: replica %s failed %.0f s after becoming ready (%d in a row): %s; %s",
                router.name,
                replica.id,
                uptime,
                condition.crashes,
                _first_line(detail),
                f"next start in {backoff:g} s" if backoff else "replacing it",
            )
            if not ready and condition.crashes >= CRASH_LOOP_FAIL_FAST and router.serving_count == 0:
                condition.unavailable = (
                    f"the model keeps failing soon after it is ready ({condition.crashes} replicas in a row; "
                    f"next start in {backoff:g} s): {_first_line(detail)}"
                )
                failed = router.fail_queued(Unavailable(503, "deployment unhealthy", condition.error))
                if failed:
                    log.warning("%s: answered %d waiting request(s) with 503", router.name, failed)
                return
        if not scaled.retiring or (router.queued and router.serving_count == 0):
            self.wake(scaled)  # the replacement starts now, or at the first tick after the back-off

    def _check_crash_loop(self, scaled: ScaledDeployment, now: float) -> None:
        """A replica that has stayed ready for the crash-loop window ends the loop."""
        condition = scaled.condition
        for replica_id, record in condition.replicas.items():
            since = record.ready_since
            handle = scaled.router.handles.get(replica_id)
            if (
                since is not None
                and handle is not None
                and handle.serving
                and handle.ready
                and now - since >= CRASH_LOOP_WINDOW_SECONDS
            ):
                log.info(
                    "%s: replica %s has served %.0f s: the crash loop is over", scaled.router.name, replica_id, now - since
                )
                condition.crashes = 0
                if not condition.load_failing:
                    condition.error = None
                return

    def _load_failed(self, scaled: ScaledDeployment, error: str) -> None:
        router = scaled.router
        condition = scaled.condition
        now = self.clock.now()
        condition.failures += 1
        condition.error = error
        backoff = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (condition.failures - 1))
        condition.retry_at = now + backoff
        self.events.record(
            scaled.id, "load_failed", f"a replica failed to load ({condition.failures} in a row; next try in {backoff:g} s): "
            f"{error}", failures=condition.failures, retry_in=backoff,
        )
        log.warning(
            "%s: a replica failed to load (%d in a row): %s; next try in %g s",
            router.name,
            condition.failures,
            _last_line(error),
            backoff,
        )
        if router.serving_count == 0:
            condition.load_failing = True
            condition.unavailable = f"the model failed to load: {_last_line(error)}"
            failed = router.fail_queued(Unavailable(503, "deployment failed to load", error))
            if failed:
                log.warning("%s: answered %d waiting request(s) with 503", router.name, failed)

    # ------------------------------------------------------------------ shutdown

    async def close(self) -> None:
        """Stop the loop and every replica (server shutdown)."""
        self._closing = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
        for scaled in self._deployments.values():
            scaled.router.fail_queued(Unavailable(503, "server shutting down", "the server is stopping"))
            scaled.condition.unavailable = "the server is stopping"
        stops = [
            self._stop_one(h.replica, self.settings.drain_grace_seconds)
            for scaled in self._deployments.values()
            for h in scaled.router.handles.values()
            if h.state.alive
        ]
        if stops:
            await asyncio.gather(*stops, return_exceptions=True)
        try:
            await self.backend.close()
        except Exception:
            log.exception("closing the backend failed")
        for task in list(self._tasks):
            task.cancel()


def crash_backoff(crashes: int) -> float:
    """Seconds before replacing the ``crashes``-th replica in a row that died
    soon after becoming ready: the first at once (it may have been a stray
    kill or a poison request), then 1, 2, 4 … up to :data:`BACKOFF_MAX_SECONDS`."""
    if crashes <= 1:
        return 0.0
    return min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (crashes - 2))


def load_verdict(
    record: ReplicaRecord,
    progress: int,
    now: float,
    *,
    stall: float,
    total: float,
    total_name: str = "load_timeout_seconds",
) -> str | None:
    """Why a starting replica has failed (``None``: let it go on).

    Updates the record of its progress: a change of the replica's ``progress``
    counter since the last look restarts the stall clock.
    """
    if progress != record.progress_seen:
        record.progress_seen = progress
        record.progress_at = now
    if now - record.progress_at > stall:
        return (
            f"made no progress while starting for {now - record.progress_at:.0f} s "
            f"(no event, no bytes of weights, no log line; load_stall_seconds is {stall:g})"
        )
    if now - record.started_at > total:
        return f"did not finish loading within {total:g} s ({total_name})"
    return None


def _first_line(text: str) -> str:
    """How a replica died: the backend's error leads with it (its log's tail follows)."""
    return text.strip().split("\n", 1)[0].strip()


def _last_line(text: str | None) -> str:
    if not text:
        return ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""
