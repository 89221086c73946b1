"""Replicas on a Ray cluster: placement and supervision by Ray, requests by Swell.

Each replica is a :class:`ReplicaActor` that Ray places with the model's
resources; the actor starts Swell's own replica process on its node and relays
its events and its output here (the output goes into the replica's log on
this machine, capped and rotated like the process backend's: ``swell logs``).
The router talks HTTP straight to that process (its ``http://NODE:PORT``
address, with the deployment's token): Ray is never on the request path.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import math
import os
import secrets as _secrets
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swell.modelserver import ReplicaActor, build_site_packages
from swell.serving._backend import (
    Replica,
    ReplicaSpec,
    ReplicaState,
    StateCallback,
    report_state,
)
from swell.serving._logs import LogLimits, LogWriter, ReplicaLogs
from swell.serving.backends.process import (
    describe_exit,
    exit_state,
    new_replica_id,
    next_state,
    parse_event,
)
from swell.serving.backends.ray._package import pack
from swell.serving.backends.ray._placement import (
    PLACING,
    NodeView,
    actor_options,
    death_message,
    free_by_node,
    job_env,
    node_label,
    pending_reason,
    resource_demand,
    start_failure,
)

__all__ = ["RayBackend"]

logger = logging.getLogger("swell.serving.backends.ray")

#: After the process exits or the stop's grace, how long the actor's last events may take.
_STOP_SLACK_SECONDS = 10.0
#: What the cluster has free is known from the last look while a replica waits (every
#: ``pending_poll_seconds``); capacity pressure trusts a look this many polls old at most,
#: and counts what replicas gave back within as long.
_FREE_FRESH_POLLS = 3.0
#: A standby actor that Ray has not placed by then is dropped (starting its
#: worker takes seconds on a busy node).  A replica that waits for room drops
#: every standby at once, placed or not: standbys never hold room it needs.
_STANDBY_PLACE_SECONDS = 30.0


#: (when, node, what it held): a replica Ray has let go of.
_Released = tuple[float, str, dict[str, float]]


@dataclass(eq=False)
class _Handle:
    replica: Replica
    on_change: StateCallback
    actor: Any
    options: dict[str, Any]
    log: LogWriter
    where: dict[str, str] | None = None  # known at once when it took a standby
    stopping: bool = False
    killed: bool = False  # ray.kill'ed by us
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _Standby:
    """An actor placed ahead of time, idle, for the next replica of its shape."""

    actor: Any
    key: tuple[Any, ...]
    where: dict[str, str] | None = None
    task: asyncio.Task[None] | None = None
    holds: dict[str, float] = field(default_factory=dict)

    @property
    def node(self) -> str | None:
        return node_label(self.where["node_id"], self.where["address"]) if self.where is not None else None


def _shape(options: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, tuple(sorted(v.items())) if isinstance(v, dict) else v) for k, v in options.items()))


class RayBackend:
    """Run each replica as a Ray actor supervising ``python -m swell.modelserver``.

    ``address`` is Ray's: ``auto`` (the cluster this machine belongs to, or
    ``$RAY_ADDRESS``) or ``HOST:PORT`` of its head (GCS).  The server joins it
    as a driver at the first replica (or :meth:`connect`).  Replicas ask Ray
    for the package's ``resources`` (:func:`actor_options`), plus
    ``resources`` given here (custom Ray resources every replica needs, such
    as a node label).  ``module`` is what the node runs with ``-m``.

    ``standbys`` (``swell serve --pool-size``) actors per resource shape are
    kept placed and idle once a replica of that shape has been ready, so a
    wake skips Ray's placement and worker start (seconds); each holds its
    shape's resources on the cluster.  They give way: a replica that Ray
    cannot place takes a placed standby of its shape, or else every standby
    is dropped to free room; a standby not placed within a few seconds is
    dropped too.

    ``prestart``: each actor starts the replica process as soon as it is
    placed (it imports the runtime, then waits for its job), so a wake that
    takes a standby skips the interpreter's start too; ``$SWELL_RAY_PRESTART=0``
    turns it off when not given (for comparisons).

    Each replica's output (shipped by its actor in batches) goes to
    ``log_dir/<deployment_id>/<replica_id>.log`` on this machine, capped by
    ``log_limits`` (a private temporary folder when ``log_dir`` is not given).
    """

    def __init__(
        self,
        address: str = "auto",
        *,
        namespace: str = "swell",
        module: str = "swell.modelserver",
        resources: dict[str, float] | None = None,
        close_grace_seconds: float = 5.0,
        failed_grace_seconds: float = 5.0,
        pending_poll_seconds: float = 1.0,
        standbys: int = 1,
        log_dir: Path | None = None,
        log_limits: LogLimits | None = None,
        prestart: bool | None = None,
    ) -> None:
        self.address = address
        self._prestart = os.environ.get("SWELL_RAY_PRESTART", "1") != "0" if prestart is None else prestart
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._log_limits = log_limits
        self._logs: ReplicaLogs | None = None
        self._namespace = namespace
        self._module = module
        self._resources = dict(resources or {})
        self._close_grace = close_grace_seconds
        self._failed_grace = failed_grace_seconds
        self._poll = pending_poll_seconds
        self._handles: dict[str, _Handle] = {}
        self._tokens: dict[str, str] = {}
        self._packages: dict[Path, tuple[str, Any]] = {}  # package dir -> (sha256, object ref)
        self._actor_class: Any = None
        self._pool_size = standbys
        self._standbys: dict[tuple[Any, ...], list[_Standby]] = {}
        self._closed = False
        self._connected = False
        self._connect_lock = asyncio.Lock()
        # Capacity pressure (serving/_capacity.py): each node's free resources at the last
        # look, when it was taken, and what replicas gave back since (Ray's view lags).
        self._free: dict[str, dict[str, float]] = {}
        self._free_at = -math.inf
        self._released: list[_Released] = []
        # A dropped standby holds its node until Ray has ended it (seconds, if its worker was
        # still starting), and an unplaced one's node is not known: a look taken while any is
        # going, or within a few polls after, is no measure of the room.
        self._standbys_going = 0
        self._unsettled_until = -math.inf
        self._background: set[asyncio.Task[None]] = set()  # held here (the loop holds tasks weakly); close() ends them

    # ------------------------------------------------------------------ public

    @property
    def logs(self) -> ReplicaLogs:
        """Every replica's output, capped and rotated (``swell logs`` reads it)."""
        if self._logs is None:
            if self._log_dir is None:
                self._log_dir = Path(tempfile.mkdtemp(prefix="swell-ray-logs-"))
            self._logs = ReplicaLogs(self._log_dir, self._log_limits)
        return self._logs

    async def connect(self) -> None:
        """Join the Ray cluster (once); raises if it cannot be reached.

        Serialised: the server's prewarm and a first replica's start may both
        ask at once, and a second ``ray.init`` in flight raises."""
        async with self._connect_lock:
            if not self._connected:
                await asyncio.to_thread(self._init)
                self._connected = True

    async def prewarm(self) -> bool:
        """Join the cluster at server start (``swell serve`` calls it): an
        unreachable cluster is said at once, not at the first request."""
        try:
            await self.connect()
        except Exception as exc:  # noqa: BLE001 -- ray.init raises ConnectionError, RuntimeError, ValueError...
            logger.error("could not join the Ray cluster at %s: %s", self.address, exc)
            return False
        return True

    def _init(self) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, namespace=self._namespace, log_to_driver=False,
                     logging_level=logging.WARNING)
        self._actor_class = ray.remote(ReplicaActor)
        logger.info("ray: joined the cluster at %s (%d node(s) alive)",
                    self.address, sum(1 for n in ray.nodes() if n.get("Alive")))

    async def start(self, spec: ReplicaSpec, on_change: StateCallback) -> Replica:
        """Ask Ray for an actor; return at once in PENDING (STARTING once placed)."""
        if self._closed:
            raise RuntimeError("the Ray backend is closed")
        await self.connect()
        replica = Replica(
            id=new_replica_id(self._handles),
            deployment_id=spec.deployment_id,
            state=ReplicaState.PENDING,
            created_at=time.monotonic(),
            reason=PLACING,
            token=self._tokens.setdefault(spec.deployment_id, _secrets.token_urlsafe(24)),
        )
        digest, ref = await self._package(spec.package_dir)
        options = {**actor_options(spec.config.resources), "max_restarts": 0, "max_task_retries": 0}
        if self._resources:
            options["resources"] = dict(self._resources)
        replica.holds = resource_demand(options)
        job = {
            "replica_id": replica.id,
            "deployment_id": spec.deployment_id,
            "package_hash": digest,
            "package": [ref],  # in a list: the node fetches it only when its cache lacks it
            "requirements": spec.config.requirements_in(spec.package_dir) if spec.python != sys.executable else [],
            "env": job_env(os.environ, spec.config.environment_variables, spec.env),
            "secrets": _read_secrets(spec.secrets_dir),
            "token": replica.token,
            "module": self._module,
        }
        site = build_site_packages(spec.python)
        if site is not None:  # what build_commands installed travels like the package
            build_digest, build_ref = await self._package(site)
            build: dict[str, Any] = {"hash": build_digest, "site_packages": [build_ref]}
            job["build"] = build
        if self._closed:  # closed while it packed: nothing would stop what it placed now
            raise RuntimeError("the Ray backend is closed")
        log = self.logs.writer(spec.deployment_id, replica.id)
        standby = self._take_standby(_shape(options))
        if standby is not None:
            replica.start_mode = "prewarmed"
            handle = _Handle(replica, on_change, standby.actor, options, log, where=standby.where)
        else:
            replica.start_mode = "spawned"
            actor = self._actor_class.options(**options).remote(self._prestart)
            handle = _Handle(replica, on_change, actor, options, log)
        self._handles[replica.id] = handle
        handle.task = asyncio.get_running_loop().create_task(self._run(handle, job))
        return replica

    async def stop(self, replica: Replica, grace_seconds: float) -> None:
        """SIGTERM on the node, up to ``grace_seconds``, then SIGKILL; the actor ends."""
        handle = self._handles.get(replica.id)
        if handle is None:
            return
        if not handle.stopping:
            handle.stopping = True
            if replica.state.alive:
                self._set(handle, ReplicaState.DRAINING)
        if replica.address:
            with contextlib.suppress(Exception):  # a dead actor or node: nothing left to stop
                await asyncio.wait_for(handle.actor.stop.remote(grace_seconds), grace_seconds + _STOP_SLACK_SECONDS)
        else:  # not placed or not started yet: nothing runs but the actor
            self._kill(handle)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(handle.done.wait(), _STOP_SLACK_SECONDS)
        if not handle.done.is_set() and handle.task is not None:
            handle.task.cancel()
            self._kill(handle)
            self._finish(handle, ReplicaState.STOPPED)

    def list(self) -> list[Replica]:
        return [h.replica for h in self._handles.values()]

    def free_resources(self) -> dict[str, dict[str, float]] | None:
        """What each node had free at the last look (taken while a replica waits), with what
        replicas have given back since; ``None`` when that look is too old to go by."""
        now = time.monotonic()
        stale = now - self._free_at > self._poll * _FREE_FRESH_POLLS
        if stale or self._standbys_going or self._free_at < self._unsettled_until:
            return None
        free = {node: dict(amounts) for node, amounts in self._free.items()}
        given_back = [(node, holds) for _, node, holds in self._recently_released(now)]
        for standbys in self._standbys.values():  # they give way to any replica that waits
            given_back += [(node, s.holds) for s in standbys if (node := s.node) is not None]
        for node, holds in given_back:
            amounts = free.setdefault(node, {})
            for name, amount in holds.items():
                amounts[name] = amounts.get(name, 0.0) + amount
        return free

    def place_first(self, replica: Replica) -> None:
        """Ray places what waits as it sees fit: nothing to reorder here."""

    def _recently_released(self, now: float) -> builtins.list[_Released]:
        """What replicas gave back lately: Ray's view of a node lags their end by up to a
        poll or so; counting it twice for a moment stops one replica too few, never one too many."""
        horizon = now - self._poll * _FREE_FRESH_POLLS
        self._released = [entry for entry in self._released if entry[0] > horizon]
        return self._released

    async def close(self) -> None:
        """Stop every replica (``close_grace_seconds`` each) and leave the cluster."""
        self._closed = True
        for standbys in list(self._standbys.values()):
            for standby in list(standbys):
                self._drop_standby(standby)
        handles = list(self._handles.values())
        await asyncio.gather(*(self.stop(h.replica, self._close_grace) for h in handles), return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._packages.clear()
        if self._connected:
            import ray

            with contextlib.suppress(Exception):
                await asyncio.to_thread(ray.shutdown)
            self._connected = False

    # ------------------------------------------------------------------ runner

    async def _package(self, package_dir: Path) -> tuple[str, Any]:
        """The package in Ray's object store, once per package folder.

        The server removes a package's folder a while after its deployment is
        deleted or replaced (control/_lifecycle.py); its object goes too, at the
        next new package, so a server pushed to for months does not pin every
        version it ever served in the cluster's object store.
        """
        found = self._packages.get(package_dir)
        if found is None:
            import ray

            for gone in [path for path in self._packages if not path.exists()]:
                del self._packages[gone]  # a job still in flight holds its own reference
            digest, data = await asyncio.to_thread(pack, package_dir)
            found = self._packages[package_dir] = (digest, ray.put(data))
        return found

    async def _run(self, handle: _Handle, job: dict[str, Any]) -> None:
        from ray.exceptions import RayActorError, RayError

        replica = handle.replica
        try:
            where = await self._placed(handle)
            if where is None:  # asked to stop while it waited
                return
            replica.node = node_label(where["node_id"], where["address"])
            replica.reason = None
            replica.marks["placed"] = time.monotonic()
            if handle.stopping:  # placed as the stop came: it is draining, never starting again
                return
            self._set(handle, ReplicaState.STARTING)
            try:
                started = await self._starting(handle, job)
            except RayActorError:
                if replica.start_mode != "prewarmed" or handle.killed:
                    raise
                # The standby died idle (its node was lost): start a fresh actor instead.
                replica.start_mode = "spawned"
                handle.where = None
                handle.actor = self._actor_class.options(**handle.options).remote(self._prestart)
                where = await self._placed(handle)
                if where is None:
                    return
                replica.node = node_label(where["node_id"], where["address"])
                started = await self._starting(handle, job)
            replica.address = started["address"]
            replica.pid = started["pid"]
            replica.marks["spawned"] = time.monotonic()
            how = "its pre-started process" if started.get("prestarted") else "a fresh process"
            handle.log.note(f"started replica {replica.id} of {replica.deployment_id} on {replica.node} in {how} "
                            f"(pid {replica.pid}, {replica.address}): {' '.join(started['argv'])}")
            logger.info("replica %s of %s on %s: %s", replica.id, replica.deployment_id, replica.node, replica.address)
            cursor = 0
            while True:
                news = await handle.actor.events.remote(cursor)
                if news["output"] or news["dropped"]:
                    await asyncio.to_thread(self._log_output, handle, news["output"], news["dropped"])
                events = news["events"]
                cursor += len(events)
                for event in events:
                    if event.get("event") == "exit":
                        self._exited(handle, event)
                        return
                    self._apply(handle, event)
        except asyncio.CancelledError:
            raise
        except RayActorError as exc:
            if handle.killed:
                self._finish(handle, ReplicaState.STOPPED)
            else:
                cause = str(exc)
                replica.error = death_message(replica.node, cause)
                logger.warning("replica %s: %s", replica.id, replica.error.splitlines()[0])
                self._finish(handle, ReplicaState.FAILED)
        except RayError as exc:  # the node could not prepare it (unpack, requirements, spawn)
            replica.error = start_failure(replica.node, str(exc), getattr(exc, "cause", None))
            logger.warning("replica %s: %s", replica.id, replica.error)
            self._finish(handle, ReplicaState.FAILED)
        except Exception as exc:  # a fault of ours: the replica fails saying so, never stays as it was
            replica.error = f"the server lost track of it: {type(exc).__name__}: {exc}"
            logger.exception("replica %s of %s: supervising it failed", replica.id, replica.deployment_id)
            self._finish(handle, ReplicaState.STOPPED if handle.stopping else ReplicaState.FAILED)
        finally:
            self._kill(handle)
            if not handle.done.is_set():
                self._finish(handle, ReplicaState.STOPPED if handle.stopping else ReplicaState.FAILED)

    async def _starting(self, handle: _Handle, job: dict[str, Any]) -> dict[str, Any]:
        """The actor's start: it unpacks the package and builds a requirements venv on its node
        (minutes for a big one), sending nothing meanwhile.  A call in flight is its sign of
        life every poll (the load's stall limit is for a replica that says nothing; its total
        limit still holds); a lost node or actor fails the call."""
        call = asyncio.ensure_future(handle.actor.start.remote(job))
        try:
            while True:
                done, _ = await asyncio.wait([call], timeout=self._poll)
                if done:
                    return dict(call.result())
                handle.replica.progress += 1
        finally:
            call.cancel()

    def _log_output(self, handle: _Handle, output: bytes, dropped: int) -> None:
        handle.replica.progress += 1  # a sign of life while it loads
        if dropped:
            handle.log.note(f"{dropped} bytes of output were dropped on the node (more than it holds between fetches)")
        handle.log.feed(output)

    async def _placed(self, handle: _Handle) -> dict[str, str] | None:
        """Wait for Ray to place the actor, saying why not meanwhile; ``None``: asked to stop
        meanwhile (it takes no standby then, and makes none give way)."""
        if handle.where is not None:
            return handle.where
        where = asyncio.ensure_future(handle.actor.where.remote())
        try:
            while True:
                done, _ = await asyncio.wait([where], timeout=self._poll)
                if done:
                    return where.result()
                if handle.stopping:
                    return None
                standby = self._take_standby(_shape(handle.options))
                if standby is not None and standby.where is not None:  # placed meanwhile: use it
                    self._kill(handle)
                    handle.killed = False
                    handle.actor, handle.replica.start_mode = standby.actor, "prewarmed"
                    return standby.where
                for standbys in list(self._standbys.values()):  # give way to a replica that waits
                    for idle in list(standbys):
                        self._drop_standby(idle)
                try:
                    reason = await asyncio.to_thread(self._why_pending, handle.options)
                except Exception as exc:  # noqa: BLE001 -- only the words for why it waits: it waits on
                    logger.debug("replica %s: could not read the cluster's state: %s", handle.replica.id, exc)
                    continue
                if reason != handle.replica.reason:
                    logger.info("replica %s of %s pending: %s", handle.replica.id, handle.replica.deployment_id, reason)
                    handle.replica.reason = reason
        finally:
            where.cancel()

    def _why_pending(self, options: dict[str, Any]) -> str:
        import ray

        try:
            from ray._private.state import (
                available_resources_per_node,  # no public per-node view
            )

            available = available_resources_per_node()
        except Exception:  # noqa: BLE001 -- a private API of Ray's; without it, judge by totals only
            available = {}
        nodes = [
            NodeView(
                node_id=n["NodeID"], address=n.get("NodeManagerAddress", ""), alive=bool(n.get("Alive")),
                total=n.get("Resources", {}), available=available.get(n["NodeID"], n.get("Resources", {})),
            )
            for n in ray.nodes()
        ]
        self._free, self._free_at = free_by_node(nodes), time.monotonic()
        return pending_reason(options, nodes)

    def _apply(self, handle: _Handle, data: dict[str, Any]) -> None:
        import json

        event = parse_event(json.dumps(data))
        if event is None:
            return
        replica = handle.replica
        replica.progress += 1
        if event.kind == "live":
            replica.marks.setdefault("live", time.monotonic())
        state = next_state(replica.state, event)
        if state is replica.state:
            return
        if state is ReplicaState.READY:
            self._refill(handle.options)
            replica.ready_at = time.monotonic()
            replica.marks.setdefault("live", replica.ready_at)
            replica.load_seconds = event.load_seconds
            replica.weights_seconds = event.weights_seconds
        if state is ReplicaState.FAILED:
            replica.error = event.error or "the replica reported a failure without a traceback"
            self._spawn(self._stop_quietly(handle, self._failed_grace))
        self._set(handle, state)

    async def _stop_quietly(self, handle: _Handle, grace: float) -> None:
        with contextlib.suppress(Exception):
            await handle.actor.stop.remote(grace)

    def _exited(self, handle: _Handle, event: dict[str, Any]) -> None:
        replica = handle.replica
        returncode = event.get("returncode")
        state = exit_state(replica.state, stopping=handle.stopping, returncode=returncode)
        if state is ReplicaState.FAILED and replica.state is not ReplicaState.FAILED:
            tail = event.get("tail") or ""
            replica.error = f"replica {describe_exit(returncode)} on {replica.node}" + (
                f"; last lines of its log:\n{tail}" if tail else ""
            )
            logger.warning("replica %s %s on %s", replica.id, describe_exit(returncode), replica.node)
        self._finish(handle, state)

    def _finish(self, handle: _Handle, state: ReplicaState) -> None:
        if handle.done.is_set():
            return
        self._handles.pop(handle.replica.id, None)
        deployment_id = handle.replica.deployment_id
        if not any(h.replica.deployment_id == deployment_id for h in self._handles.values()):
            self._tokens.pop(deployment_id, None)  # its last replica: a later one gets a new token
        if handle.replica.error and state is ReplicaState.FAILED:
            handle.log.note(handle.replica.error)
        handle.log.close()
        handle.done.set()
        if handle.replica.node is not None:  # placed: Ray gives back what it held
            now = time.monotonic()
            self._recently_released(now).append((now, handle.replica.node, dict(handle.replica.holds)))
        if state is not handle.replica.state:
            self._set(handle, state)

    # ------------------------------------------------------------------ standbys

    def _take_standby(self, key: tuple[Any, ...]) -> _Standby | None:
        for standby in self._standbys.get(key, []):
            if standby.where is not None:
                self._standbys[key].remove(standby)
                return standby
        return None

    def _refill(self, options: dict[str, Any]) -> None:
        """Place standbys of this shape up to the pool size, unless a replica waits for room."""
        if self._closed or self._pool_size <= 0:
            return
        if any(h.replica.state is ReplicaState.PENDING for h in self._handles.values()):
            return
        key = _shape(options)
        standbys = self._standbys.setdefault(key, [])
        for _ in range(self._pool_size - len(standbys)):
            actor = self._actor_class.options(**options).remote(self._prestart)
            standby = _Standby(actor, key, holds=resource_demand(options))
            standbys.append(standby)
            standby.task = asyncio.get_running_loop().create_task(self._place_standby(standby))

    async def _place_standby(self, standby: _Standby) -> None:
        try:
            standby.where = await asyncio.wait_for(standby.actor.where.remote(), _STANDBY_PLACE_SECONDS)
        except Exception:  # noqa: BLE001 -- not placed in time, or its node is gone: either way, drop it
            self._drop_standby(standby)

    def _drop_standby(self, standby: _Standby) -> None:
        standbys = self._standbys.get(standby.key, [])
        if standby in standbys:
            standbys.remove(standby)
            if not self._closed:
                self._standbys_going += 1
                self._spawn(self._standby_gone(standby.actor))
        if standby.task is not None and not standby.task.done() and standby.task is not asyncio.current_task():
            standby.task.cancel()
        import ray

        with contextlib.suppress(Exception):
            ray.kill(standby.actor, no_restart=True)

    async def _standby_gone(self, actor: Any) -> None:
        """Wait until Ray has ended a dropped standby (a call to it fails), then a few polls more."""
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(actor.where.remote(), _STANDBY_PLACE_SECONDS)
        finally:
            self._standbys_going -= 1
            # Its worker may still be exiting: Ray shows its resources free up to ~2 s later.
            settled = time.monotonic() + self._poll * _FREE_FRESH_POLLS
            self._unsettled_until = max(self._unsettled_until, settled)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _kill(self, handle: _Handle) -> None:
        if handle.killed:
            return
        handle.killed = True
        import ray

        with contextlib.suppress(Exception):
            ray.kill(handle.actor, no_restart=True)

    def _set(self, handle: _Handle, state: ReplicaState) -> None:
        report_state(handle.replica, state, handle.on_change)


def _read_secrets(directory: Path | None) -> dict[str, str]:
    """The deployment's secrets, in memory: they travel in the actor call, never a node's file."""
    if directory is None or not directory.is_dir():
        return {}
    return {p.name: p.read_text() for p in sorted(directory.iterdir()) if p.is_file()}
