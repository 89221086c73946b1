"""Replicas as local OS processes: the runner around ``_lifecycle``."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from swell.files import claim, sweep
from swell.serving._backend import (
    Replica,
    ReplicaSpec,
    ReplicaState,
    StateCallback,
    report_state,
)
from swell.serving._logs import LogCapture, LogLimits, ReplicaLogs, strip_stamps
from swell.serving.backends.process._forkserver import ForkServer, forkable
from swell.serving.backends.process._lifecycle import (
    ReplicaEvent,
    describe_exit,
    exit_state,
    new_replica_id,
    next_state,
    parse_event,
    replica_env,
    socket_path,
    tail_lines,
)
from swell.serving.backends.process._pdeathsig import die_with_parent_hook
from swell.serving.backends.process._pool import Standby, StandbyPool, pool_room
from swell.serving.backends.process._resources import (
    Capacity,
    Enforcer,
    Placement,
    ResourceRequest,
    cuda_visible_devices,
    detect_enforcer,
    format_memory,
    free_amounts,
    machine_capacity,
    memory_exceeded_message,
    pick_cores,
    place,
    remove_stale_groups,
    request_of,
)

__all__ = ["ProcessBackend"]

logger = logging.getLogger("swell.serving.backends.process")

#: A ``failed`` event carries a whole traceback on one line.
_EVENT_LINE_LIMIT = 4 * 1024 * 1024
#: After the process exits, how long to wait for the rest of its events.
_EVENTS_DRAIN_SECONDS = 1.0
_LOG_TAIL_LINES = 40
#: How often a starting replica's log is looked at for progress.
_LOG_POLL_SECONDS = 1.0
#: How often a fork server is started (again, after it died) before replicas
#: are only spawned.
_FORK_SERVER_STARTS = 3
#: Heavy libraries the fork server imports (when installed) so that replicas
#: forked from it do not: a model importing numpy starts ~0.1 s sooner, torch ~1-2 s.
DEFAULT_PREWARM_MODULES = ("numpy", "torch")
#: Standby replicas kept ready (``swell serve --pool-size``; docs/serving.md
#: has the idle memory each costs).
DEFAULT_POOL_SIZE = 1
#: How long the fork server's start waits for the pool's first standby.
_POOL_FIRST_FILL_SECONDS = 5.0
#: After a wake's replica is ready, how long before the pool makes the next
#: standby: the queued requests go first (a fork on the same cores slows them).
_POOL_REFILL_DELAY_SECONDS = 0.5


class _Process(Protocol):
    """What the runner needs of a child: a spawned one or a forked one."""

    pid: int

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


@dataclass(eq=False)
class _Handle:
    replica: Replica
    process: _Process
    on_change: StateCallback
    log_path: Path
    capture: LogCapture
    lifeline: int | None  # write end; closing it tells the replica to exit
    socket: Path | None
    stopping: bool = False
    terminated: bool = False  # SIGTERM sent; a second one could force-quit uvicorn
    killed: bool = False  # SIGKILL sent by us (after the grace period)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    reservation: _Reservation | None = None


@dataclass
class _Reservation:
    """What a replica holds of the machine, until its process is gone."""

    request: ResourceRequest
    gpus: tuple[int, ...] = ()
    cores: tuple[int, ...] = ()
    group: str | None = None  # the enforcer's handle (a cgroup)


@dataclass
class _Pending:
    replica: Replica
    spec: ReplicaSpec
    on_change: StateCallback
    request: ResourceRequest
    first: bool = False  # others are stopped to make room for it: it goes before those that asked earlier


PRIVATE_PREFIX = "swell-"


def remove_leftovers() -> list[Path]:
    """Remove what servers killed with ``kill -9`` left: their socket folders (under the temp
    dir) and their cgroups.  Run at start; what a live server holds is never touched."""
    removed = sweep(Path(tempfile.gettempdir()), PRIVATE_PREFIX) + remove_stale_groups()
    for path in removed:
        logger.info("removed %s, left by a server that was killed", path)
    return removed


class ProcessBackend:
    """Run each replica as a child process: ``python -m swell.modelserver``.

    ``run_dir`` holds the replicas' Unix sockets (a private ``/tmp/swell-…``
    directory is used when it is not given or its paths would be too long for
    ``AF_UNIX``); ``log_dir`` receives ``<deployment_id>/<replica_id>.log``
    with each replica's stdout and stderr (default: ``run_dir/logs``, or
    ``logs`` in the private directory).

    Replicas die with the server, even on ``kill -9``: the kernel sends them
    SIGKILL (``PR_SET_PDEATHSIG``) and their lifeline pipe reaches EOF.

    With ``warm_start`` (the default), replicas that run on the server's own
    interpreter are forked from a *fork server* that has already imported the
    model server's runtime, so a cold start is a fork plus the model's own
    ``load()`` rather than a fresh interpreter.  The fork server starts with
    :meth:`prewarm`, or else with the first replica, which waits for it (that
    costs about what spawning the replica would).  If it dies, it is started
    again, up to three times in all.
    Replicas on another interpreter (a deployment's virtual environment), or
    whose environment changes how the interpreter starts (``PYTHON*``,
    ``LD_*``), are always spawned.

    With ``pool_size`` > 0 (and ``warm_start``), that many *standby* replicas
    are forked ahead of time and set up as far as a replica gets without its
    model (``_pool.py``); a wake takes one (``start_mode`` "prewarmed") and
    the pool refills in the background, when the placement has room.  With
    the pool empty or 0, a replica is forked on demand ("forked").

    ``weights_cache`` is the folder where replicas keep the weights they fetch,
    shared by all of them (default: ``$SWELL_WEIGHTS_CACHE``, else ``weights``
    next to ``log_dir``, which is ``DATA_DIR/weights`` under ``swell serve``).

    ``transport="tcp"`` gives each replica a port on 127.0.0.1 instead of a
    socket; ``module`` is the module run with ``-m`` (tests replace it).
    """

    def __init__(
        self,
        run_dir: Path | None = None,
        log_dir: Path | None = None,
        *,
        transport: Literal["unix", "tcp"] = "unix",
        module: str = "swell.modelserver",
        close_grace_seconds: float = 5.0,
        failed_grace_seconds: float = 5.0,
        warm_start: bool = True,
        weights_cache: Path | None = None,
        enforce_resources: bool = True,
        capacity: Capacity | None = None,
        enforcer: Enforcer | None = None,
        prewarm_modules: Sequence[str] = DEFAULT_PREWARM_MODULES,
        cpu_overcommit: float = 1.0,
        pool_size: int = DEFAULT_POOL_SIZE,
        log_limits: LogLimits | None = None,
    ) -> None:
        if transport not in ("unix", "tcp"):
            raise ValueError(f"transport: {transport!r} is not allowed; must be 'unix' or 'tcp'")
        self._run_dir = Path(run_dir) if run_dir is not None else None
        self._private_dir: Path | None = None
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._log_limits = log_limits or LogLimits()
        self._logs: ReplicaLogs | None = None
        self._transport = transport
        self._module = module
        self._close_grace = close_grace_seconds
        self._failed_grace = failed_grace_seconds
        self._handles: dict[str, _Handle] = {}
        self._closed = False
        self._warm_start = warm_start
        self._fork_server: ForkServer | None = None
        self._fork_server_task: asyncio.Task[bool] | None = None
        self._fork_server_starts = 0
        # Shared by every replica on the machine (docs/weights.md); by default
        # next to the logs, i.e. DATA_DIR/weights under `swell serve`.
        self._weights_cache = Path(weights_cache) if weights_cache is not None else None
        # Resources (``resources:`` of config.yaml): placed against what the
        # machine has, enforced by ``_resources``; found out at first use.
        self._enforce = enforce_resources
        self._prewarm_modules = tuple(prewarm_modules)
        self._cpu_overcommit = cpu_overcommit
        self._capacity = capacity
        self._enforcer = enforcer
        self._enforcer_said = False
        self._used = Placement()
        self._pending: list[_Pending] = []
        self._pool: StandbyPool | None = None
        if pool_size < 0:
            raise ValueError(f"pool_size: {pool_size} is not allowed; must be 0 or more")
        self._pool_size = pool_size if warm_start else 0

    # ------------------------------------------------------------------ public

    @property
    def log_dir(self) -> Path:
        if self._log_dir is None:
            self._log_dir = (self._run_dir or self._private()) / "logs"
        return self._log_dir

    @property
    def weights_cache(self) -> Path:
        """The weights cache replicas share (``SWELL_WEIGHTS_CACHE`` in their environment)."""
        if self._weights_cache is None:
            configured = os.environ.get("SWELL_WEIGHTS_CACHE")
            self._weights_cache = Path(configured) if configured else self.log_dir.parent / "weights"
        return self._weights_cache

    @property
    def logs(self) -> ReplicaLogs:
        """Every replica's log, capped and rotated (``swell.serving._logs``)."""
        if self._logs is None:
            self._logs = ReplicaLogs(self.log_dir, self._log_limits)
        return self._logs

    def log_path(self, replica: Replica) -> Path:
        """Where the replica's stdout and stderr go."""
        return self.logs.path(replica.deployment_id, replica.id)

    async def prewarm(self) -> bool:
        """Start the fork server now (if ``warm_start``); True once it can fork.

        ``start`` calls it too, so this only moves the fork server's own start
        (about one cold start) off the first replica's path.
        """
        if not self._warm_start or self._closed:
            return False
        server = self._fork_server
        if server is not None and server.ready:
            return True
        task = self._fork_server_task
        if task is None or (task.done() and self._fork_server_starts < _FORK_SERVER_STARTS):
            self._fork_server_starts += 1
            task = self._fork_server_task = asyncio.get_running_loop().create_task(
                self._start_fork_server()
            )
        return await asyncio.shield(task) and self.warm

    @property
    def warm(self) -> bool:
        """Whether replicas on the server's interpreter are forked now."""
        return self._fork_server is not None and self._fork_server.ready

    async def start(self, spec: ReplicaSpec, on_change: StateCallback) -> Replica:
        """Spawn a replica; return at once in STARTING (FAILED if it could not
        spawn or can never fit; PENDING while the machine lacks what it asks)."""
        if self._closed:
            raise RuntimeError("the process backend is closed")
        replica_id = new_replica_id({*self._handles, *(p.replica.id for p in self._pending)})
        replica = Replica(
            id=replica_id,
            deployment_id=spec.deployment_id,
            state=ReplicaState.STARTING,
            created_at=time.monotonic(),
        )
        request = request_of(spec.config.resources) if self._enforce else ResourceRequest()
        reservation: _Reservation | None = None
        if not request.empty:
            replica.holds = request.amounts()
            capacity = await self._machine()
            fits, why, gpus = place(request, capacity, self._used, self._cpu_overcommit)
            if why is not None and why.startswith("never: "):
                replica.state = ReplicaState.FAILED
                replica.error = f"this replica can not run on this machine: {why.removeprefix('never: ')}"
                logger.warning("replica %s: %s", replica_id, replica.error)
                return replica
            if not fits:
                replica.state = ReplicaState.PENDING
                replica.reason = why
                self._pending.append(_Pending(replica, spec, on_change, request))
                logger.info("replica %s of %s pending: %s", replica_id, spec.deployment_id, why)
                return replica
            reservation = self._reserve(request, gpus)
        return await self._launch(replica, spec, on_change, reservation)

    async def _launch(
        self, replica: Replica, spec: ReplicaSpec, on_change: StateCallback, reservation: _Reservation | None
    ) -> Replica:
        replica_id = replica.id
        swell_vars = {
            "SWELL_REPLICA_ID": replica_id,
            "SWELL_DEPLOYMENT_ID": spec.deployment_id,
        }
        sock: Path | None = None
        if self._transport == "unix":
            sock = self._socket_path(replica_id)
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
            swell_vars["SWELL_REPLICA_SOCKET"] = str(sock)
            address = f"unix:{sock}"
        else:
            port = _free_port()
            swell_vars["SWELL_REPLICA_PORT"] = str(port)
            address = f"http://127.0.0.1:{port}"
        if spec.secrets_dir is not None:
            swell_vars["SWELL_SECRETS_DIR"] = str(spec.secrets_dir)
        # The weights cache, and the server's SWELL_WEIGHTS_* settings (size limit, parts).
        swell_vars.update({k: v for k, v in os.environ.items() if k.startswith("SWELL_WEIGHTS_")})
        swell_vars["SWELL_WEIGHTS_CACHE"] = str(self.weights_cache)

        log_path = self.log_path(replica)
        capture = self.logs.capture(spec.deployment_id, replica_id)
        env = replica_env(os.environ, spec, swell_vars)
        if reservation is not None and reservation.request.gpus:
            env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices(reservation.gpus)
        env.setdefault("PYTHONUNBUFFERED", "1")  # logs reach the file as they happen
        log_fd = capture.write_fd  # a pipe: the server stamps, caps and rotates what comes through
        argv = [spec.python, "-m", self._module, "--model-dir", str(spec.package_dir)]
        forkable = await self._forkable(spec, env)
        standby = self._pool.take() if forkable and self._pool is not None else None
        if standby is not None and standby.events_r is not None and standby.lifeline_w is not None:
            # The standby already holds the replica's pipes: use our ends.
            events_r, lifeline_w = standby.events_r, standby.lifeline_w
            events_w = lifeline_r = -1
        else:
            events_r, events_w = os.pipe()
            lifeline_r, lifeline_w = os.pipe()
        env["SWELL_EVENTS_FD"] = str(events_w)
        env["SWELL_LIFELINE_FD"] = str(lifeline_r)
        try:
            capture.note(f"starting replica {replica_id} of {spec.deployment_id}: {' '.join(argv)}")
            process: _Process | None = None
            if standby is not None:
                process = self._assign(standby, replica_id, spec, env, log_fd)
                replica.start_mode = "prewarmed"
                if process is None:  # it died standing by: the plumbing it held is gone
                    events_r, events_w = os.pipe()
                    lifeline_r, lifeline_w = os.pipe()
                    env["SWELL_EVENTS_FD"] = str(events_w)
                    env["SWELL_LIFELINE_FD"] = str(lifeline_r)
            if process is None and forkable:
                process = await self._fork(replica_id, spec, env, log_fd, events_w, lifeline_r)
                replica.start_mode = "forked"
            if process is None:
                replica.start_mode = "spawned"
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_fd,
                    stderr=subprocess.STDOUT,
                    pass_fds=(events_w, lifeline_r),
                    env={**env, "SWELL_START_MODE": "spawned"},
                    cwd=str(spec.package_dir),
                    start_new_session=False,
                    preexec_fn=die_with_parent_hook(),
                )
        except (OSError, subprocess.SubprocessError) as exc:
            for fd in (events_r, lifeline_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            if standby is not None and standby.channel is not None:  # taken, never assigned: end it
                standby.events_r = standby.lifeline_w = None  # closed just above
                standby.release()
                with contextlib.suppress(ProcessLookupError, OSError):
                    standby.process.kill()
            replica.state = ReplicaState.FAILED
            replica.error = f"could not start the replica process ({' '.join(argv)}): {exc}"
            capture.note(replica.error)
            capture.close()
            logger.warning("replica %s: %s", replica_id, replica.error)
            if reservation is not None:
                self._unreserve(reservation)
            return replica
        else:
            capture.start()
        finally:
            # The child holds its own copies now; ours would hide its EOF.
            for fd in (events_w, lifeline_r, log_fd):
                if fd >= 0:
                    os.close(fd)

        replica.pid = process.pid
        replica.marks["spawned"] = time.monotonic()
        if reservation is not None:
            self._limit(replica, process.pid, reservation)
        handle = _Handle(
            replica=replica,
            process=process,
            on_change=on_change,
            log_path=log_path,
            capture=capture,
            lifeline=lifeline_w,
            socket=sock,
            reservation=reservation,
        )
        self._handles[replica_id] = handle
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_EVENT_LINE_LIMIT)
        pipe = os.fdopen(events_r, "rb", buffering=0)
        try:
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), pipe
            )
        except BaseException:
            pipe.close()
            raise
        handle.reader = self._spawn(handle, self._read_events(handle, reader, address))
        self._spawn(handle, self._watch(handle, transport))
        self._spawn(handle, self._watch_log(handle))
        logger.debug("replica %s (pid %s) starting: %s", replica_id, process.pid, address)
        return replica

    async def stop(self, replica: Replica, grace_seconds: float) -> None:
        """SIGTERM, up to ``grace_seconds`` to finish in-flight work, then SIGKILL.

        Returns once the process is gone; the replica ends STOPPED (or stays
        FAILED, keeping its error).
        """
        handle = self._handles.get(replica.id)
        if handle is None:
            for pending in self._pending:
                if pending.replica.id == replica.id:
                    self._pending.remove(pending)
                    pending.replica.state = ReplicaState.STOPPED
                    self._notify(pending.on_change, pending.replica)
                    break
            return
        if not handle.exited.is_set() and not handle.stopping:
            handle.stopping = True
            if handle.replica.state.alive:
                self._set(handle, ReplicaState.DRAINING)
        await self._terminate(handle, grace_seconds)

    def list(self) -> list[Replica]:
        """Replicas whose processes have not been reaped yet, and pending ones."""
        return [h.replica for h in self._handles.values()] + [p.replica for p in self._pending]

    async def close(self) -> None:
        """Stop every replica at once, with ``close_grace_seconds`` each."""
        self._closed = True
        pending, self._pending = self._pending, []
        for waiting in pending:
            waiting.replica.state = ReplicaState.STOPPED
            self._notify(waiting.on_change, waiting.replica)
        handles = list(self._handles.values())
        await asyncio.gather(
            *(self.stop(h.replica, self._close_grace) for h in handles), return_exceptions=True
        )
        tasks = [t for h in handles for t in h.tasks]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._fork_server_task is not None:
            await asyncio.gather(self._fork_server_task, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()
        if self._fork_server is not None:
            await self._fork_server.close()
            self._fork_server = None
        if self._enforcer is not None:
            self._enforcer.close()
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    # ------------------------------------------------------------------ resources

    def free_resources(self) -> dict[str, dict[str, float]] | None:
        """What the machine has free now (capacity pressure); ``None`` before any replica asked for resources."""
        if self._capacity is None:
            return None
        return {"": free_amounts(self._capacity, self._used, self._cpu_overcommit)}

    def place_first(self, replica: Replica) -> None:
        """Room that frees goes to this pending replica first (capacity pressure stops others for it)."""
        entry = next((p for p in self._pending if p.replica.id == replica.id), None)
        if entry is None or entry.first:
            return
        self._pending.remove(entry)
        entry.first = True
        self._pending.insert(sum(1 for p in self._pending if p.first), entry)
        self._place_pending()

    async def _machine(self) -> Capacity:
        if self._capacity is None:
            # nvidia-smi can take a second or two: not on the event loop.
            self._capacity = await asyncio.to_thread(machine_capacity)
            gpus = ", ".join(f"{g.index}: {g.name}" for g in self._capacity.gpus) or self._capacity.gpu_note
            logger.info(
                "resources: the machine has %g CPU, %s of memory, GPUs: %s",
                self._capacity.cpu, format_memory(self._capacity.memory), gpus,
            )
        return self._capacity

    def _reserve(self, request: ResourceRequest, gpus: tuple[int, ...]) -> _Reservation:
        used = self._used
        cores = pick_cores(request, used, sorted(os.sched_getaffinity(0)))
        used.cpu += request.cpu or 0.0
        used.memory += request.memory or 0
        used.gpus.update(gpus)
        for core in cores:
            used.cpu_load[core] = used.cpu_load.get(core, 0.0) + (request.cpu or 0.0) / len(cores)
        return _Reservation(request, gpus, cores)

    def _unreserve(self, reservation: _Reservation) -> None:
        used, request = self._used, reservation.request
        used.cpu = max(0.0, used.cpu - (request.cpu or 0.0))
        used.memory = max(0, used.memory - (request.memory or 0))
        used.gpus.difference_update(reservation.gpus)
        for core in reservation.cores:
            used.cpu_load[core] = max(0.0, used.cpu_load.get(core, 0.0) - (request.cpu or 0.0) / len(reservation.cores))
        if self._enforcer is not None:
            self._enforcer.release(reservation.group)
        self._place_pending()

    def _limit(self, replica: Replica, pid: int, reservation: _Reservation) -> None:
        if self._enforcer is None:
            self._enforcer = detect_enforcer()
        if not self._enforcer_said:
            self._enforcer_said = True
            logger.info("resources: %s", self._enforcer.describe())
        cores = reservation.cores if self._enforcer.mode == "affinity+rlimit" else ()
        try:
            reservation.group = self._enforcer.apply(replica.id, pid, reservation.request, cores)
        except OSError as exc:
            logger.warning("replica %s: could not apply its resource limits (%s)", replica.id, exc)

    def _place_pending(self) -> None:
        """Start the pending replicas that fit now, first come first served."""
        if self._closed or not self._pending or self._capacity is None:
            return
        for waiting in list(self._pending):
            fits, why, gpus = place(waiting.request, self._capacity, self._used, self._cpu_overcommit)
            if not fits:
                if waiting.replica.reason != why:
                    waiting.replica.reason = why
                continue
            self._pending.remove(waiting)
            reservation = self._reserve(waiting.request, gpus)
            waiting.replica.state = ReplicaState.STARTING
            waiting.replica.reason = None
            self._notify(waiting.on_change, waiting.replica)
            asyncio.get_running_loop().create_task(self._launch_pending(waiting, reservation))

    async def _launch_pending(self, waiting: _Pending, reservation: _Reservation) -> None:
        replica = await self._launch(waiting.replica, waiting.spec, waiting.on_change, reservation)
        if replica.state is ReplicaState.FAILED:  # could not spawn: nobody else will say so
            self._notify(waiting.on_change, replica)

    def _notify(self, on_change: StateCallback, replica: Replica) -> None:
        try:
            on_change(replica)
        except Exception:
            logger.exception("state callback failed for replica %s", replica.id)

    def _memory_error(self, handle: _Handle, error: str | None) -> str | None:
        """The message for a replica that ran out of its memory limit, if it did."""
        reservation = handle.reservation
        if reservation is None or reservation.request.memory is None:
            return None
        limit = reservation.request.memory_text
        if self._enforcer is not None and self._enforcer.oom_killed(reservation.group):
            return memory_exceeded_message(limit, "killed by the kernel's OOM killer")
        if error and "MemoryError" in error:
            return memory_exceeded_message(limit, "an allocation failed with MemoryError")
        return None

    # ------------------------------------------------------------------ runner

    async def _forkable(self, spec: ReplicaSpec, env: dict[str, str]) -> bool:
        if not self._warm_start or spec.python != sys.executable:
            return False
        # Starting the fork server costs about what spawning this replica
        # would, and then every replica shares its pages: wait for it.
        if not await self.prewarm():
            return False
        server = self._fork_server
        return server is not None and server.ready and forkable(env, server.env)

    async def _start_fork_server(self) -> bool:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWELL_")}
        env.setdefault("PYTHONUNBUFFERED", "1")
        # Only what is installed: a missing library is not an error here.
        heavy = [m for m in self._prewarm_modules if _installed(m)]
        server = ForkServer(sys.executable, env, self.log_dir / "forkserver.log", preload=heavy)
        ready = await server.start()
        if not ready or self._closed:
            await server.close()
            return False
        logger.info(
            "fork server ready (pid %s): replicas start prewarmed, with the runtime%s imported",
            server.pid,
            "".join(f", {m}" for m in server.preloaded),
        )
        old, self._fork_server = self._fork_server, server
        if old is not None:
            await old.close()
        if self._pool_size > 0:
            if self._pool is None:
                self._pool = StandbyPool(
                    self._pool_size, self.log_dir / "pool.log", lambda: self._fork_server, self._pool_room
                )
            self._pool.refill()
            # The first wake right after start-up finds a standby (a fork: milliseconds).
            await self._pool.filled(_POOL_FIRST_FILL_SECONDS)
        return True

    async def _pool_room(self) -> str | None:
        capacity = await self._machine() if self._enforce else None
        return pool_room(capacity, self._used, len(self._pending), self._cpu_overcommit)

    @property
    def standby_pids(self) -> tuple[int, ...]:
        """The standby replicas' processes (none without a pool)."""
        return tuple(self._pool.pids()) if self._pool is not None else ()

    def _assign(
        self, standby: Standby, replica_id: str, spec: ReplicaSpec, env: dict[str, str], log_fd: int
    ) -> _Process | None:
        assert self._pool is not None
        child_env = {**env, "SWELL_START_MODE": "prewarmed"}
        if not self._pool.assign(standby, replica_id, self._module, ["--model-dir", str(spec.package_dir)],
                                 child_env, str(spec.package_dir), log_fd):
            return None
        # The replica's pipes are its own now; the backend keeps its ends through the handle.
        standby.events_r = standby.lifeline_w = None
        return standby.process

    async def _fork(
        self, replica_id: str, spec: ReplicaSpec, env: dict[str, str], log_fd: int,
        events_w: int, lifeline_r: int,
    ) -> _Process | None:
        assert self._fork_server is not None
        child_env = {k: v for k, v in env.items() if k not in ("SWELL_EVENTS_FD", "SWELL_LIFELINE_FD")}
        child_env["SWELL_START_MODE"] = "forked"
        try:
            return await self._fork_server.fork(
                replica_id,
                self._module,
                ["--model-dir", str(spec.package_dir)],
                child_env,
                str(spec.package_dir),
                log_fd,
                {"SWELL_EVENTS_FD": events_w, "SWELL_LIFELINE_FD": lifeline_r},
            )
        except RuntimeError as exc:
            logger.warning("replica %s: %s; spawning it instead", replica_id, exc)
            return None

    def _private(self) -> Path:
        if self._private_dir is None:
            self._private_dir = Path(tempfile.mkdtemp(prefix=PRIVATE_PREFIX))
            claim(self._private_dir)  # if this server is killed, the next start removes it
        return self._private_dir

    def _socket_path(self, replica_id: str) -> Path:
        if self._run_dir is not None:
            self._run_dir.mkdir(parents=True, exist_ok=True)
            path = socket_path(self._run_dir, replica_id)
            if path is not None:
                return path
        path = socket_path(self._private(), replica_id)
        if path is None:  # only if TMPDIR itself is absurdly long
            raise RuntimeError(f"no directory short enough for a Unix socket: {self._private()}")
        return path

    def _spawn(self, handle: _Handle, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        handle.tasks.add(task)
        task.add_done_callback(handle.tasks.discard)
        return task

    def _set(self, handle: _Handle, state: ReplicaState) -> None:
        report_state(handle.replica, state, handle.on_change)

    async def _read_events(self, handle: _Handle, reader: asyncio.StreamReader, address: str) -> None:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # one line over the limit: skip it, keep reading
                logger.warning("replica %s wrote an oversized event line", handle.replica.id)
                continue
            if not line:
                return
            event = parse_event(line)
            if event is not None:
                self._apply(handle, event, address)

    def _apply(self, handle: _Handle, event: ReplicaEvent, address: str) -> None:
        replica = handle.replica
        replica.progress += 1  # any event is a sign of life (weights_progress most of all)
        if event.kind == "live":
            replica.marks.setdefault("live", time.monotonic())
        state = next_state(replica.state, event)
        if state is replica.state:
            return
        if state in (ReplicaState.LOADING, ReplicaState.READY):
            replica.address = address
        if state is ReplicaState.READY:
            replica.ready_at = time.monotonic()
            replica.marks.setdefault("live", replica.ready_at)
            replica.load_seconds = event.load_seconds
            replica.weights_seconds = event.weights_seconds
        if state in (ReplicaState.READY, ReplicaState.FAILED) and self._pool is not None:
            # The wake is over: make the next standby once the requests that
            # waited for it have been answered.
            self._pool.refill(_POOL_REFILL_DELAY_SECONDS)
        if state is ReplicaState.FAILED:
            replica.error = event.error or "the replica reported a failure without a traceback"
            exceeded = self._memory_error(handle, replica.error)
            if exceeded:
                replica.error = f"{exceeded}\n{replica.error}"
            # A replica that cannot load serves nothing; free what it holds.
            self._spawn(handle, self._terminate(handle, self._failed_grace))
        self._set(handle, state)

    async def _watch_log(self, handle: _Handle) -> None:
        """While it starts, a line in its log is progress (print, logging, a
        library's progress bar): bump the counter when the file grows."""
        replica = handle.replica
        size = -1
        while replica.state in (ReplicaState.PENDING, ReplicaState.STARTING, ReplicaState.LOADING):
            try:
                now_size = os.stat(handle.log_path).st_size
            except OSError:
                now_size = size
            if now_size != size:
                if size >= 0:
                    replica.progress += 1
                size = now_size
            try:
                await asyncio.wait_for(handle.exited.wait(), _LOG_POLL_SECONDS)
                return
            except TimeoutError:
                pass

    async def _terminate(self, handle: _Handle, grace_seconds: float) -> None:
        if handle.exited.is_set():
            return
        if not handle.terminated:
            handle.terminated = True
            with contextlib.suppress(ProcessLookupError):
                handle.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(handle.exited.wait(), timeout=max(grace_seconds, 0.0))
        except TimeoutError:
            handle.killed = True
            with contextlib.suppress(ProcessLookupError):
                handle.process.kill()
            await handle.exited.wait()

    async def _watch(self, handle: _Handle, transport: asyncio.ReadTransport) -> None:
        returncode = await handle.process.wait()
        # Let a "failed" event written just before exiting win over the log tail.
        if handle.reader is not None:
            _, pending = await asyncio.wait([handle.reader], timeout=_EVENTS_DRAIN_SECONDS)
            for task in pending:  # a grandchild still holds the pipe open
                task.cancel()
        transport.close()
        if handle.lifeline is not None:
            os.close(handle.lifeline)
            handle.lifeline = None
        if handle.socket is not None:
            with contextlib.suppress(OSError):
                handle.socket.unlink()
        replica = handle.replica
        state = exit_state(replica.state, stopping=handle.stopping, returncode=returncode, killed=handle.killed)
        # Its last words reach the file before they are read (a grandchild holding the pipe: not waited for).
        await asyncio.to_thread(handle.capture.join, _EVENTS_DRAIN_SECONDS)
        if state is ReplicaState.FAILED and replica.state is not ReplicaState.FAILED:
            tail = strip_stamps(tail_lines(handle.log_path, _LOG_TAIL_LINES))
            exceeded = self._memory_error(handle, tail)
            replica.error = f"replica {describe_exit(returncode)}" + (
                f"; last lines of {handle.log_path}:\n{tail}" if tail else ""
            )
            if exceeded:
                replica.error = f"{exceeded}\n{replica.error}"
            logger.warning("replica %s %s", replica.id, exceeded or describe_exit(returncode))
        self._handles.pop(replica.id, None)
        handle.exited.set()
        if self._pool is not None and not self._closed:
            self._pool.refill(_POOL_REFILL_DELAY_SECONDS)  # a wake that never got ready, or room it held
        if handle.reservation is not None:
            self._unreserve(handle.reservation)
        if state is not replica.state:
            self._set(handle, state)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (the replica binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
