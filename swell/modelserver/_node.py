"""What runs on a Ray node: one actor per replica, supervising Swell's own
replica process (``python -m swell.modelserver``) there (the Ray backend,
``swell.serving.backends.ray``, places it).

Standard library only, like the rest of this package's import path: a Ray
worker imports this module to become the actor, and every import here is
time a cold start waits for.

The actor unpacks the package into the node's cache (fetched from Ray's object
store only on a miss), builds the requirements venv there (cached by the hash
of the requirements), starts the process listening on the node's address with
the deployment's token, and relays the process's events (live, loading, ready,
failed, exit) and its output (stdout and stderr, in batches: at most two calls a
second however much it prints) to the server, which long-polls
:meth:`ReplicaActor.events` and writes the output into the replica's log there
(``swell logs``).
Secrets reach the process in its environment, never a file on the node.
Requests never pass through here: the router talks HTTP to the process.

A *pre-started* process (``prestart``): once placed, the actor starts
``python -m swell.modelserver --await-job`` at once, which imports the
replica's runtime (most of a process's start: seconds on a loaded core) and
waits; :meth:`ReplicaActor.start` hands it the job (environment, folder) on
its stdin.  A standby actor has it ready long before the wake.  A job it
cannot take (a requirements venv, another module, different interpreter
start-up variables) gets a fresh process, as without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: ``$SWELL_RAY_CACHE`` on a node, else this under the temp folder; one folder per node below it.
CACHE_ENV = "SWELL_RAY_CACHE"
#: How long one :meth:`ReplicaActor.events` call waits for news.
EVENTS_WAIT_SECONDS = 10.0
#: With output but no event, how long :meth:`ReplicaActor.events` lets more output gather.
OUTPUT_BATCH_SECONDS = 0.5
#: Output held for the server at most; past it the oldest is dropped (and counted).
OUTPUT_BUFFER_BYTES = 1024 * 1024
_READ_BYTES = 64 * 1024
_EVENT_LINE_LIMIT = 4 * 1024 * 1024
_LOG_TAIL_BYTES = 16 * 1024
#: Written into an unpacked package once it is complete.
MARKER = ".swell-complete"
#: A package on a node that no live replica there holds, and none has taken for this long, is
#: removed when another is unpacked (the object store still has it while the server serves it).
UNUSED_PACKAGE_SECONDS = 24 * 3600.0
#: What a pre-started process runs (and the only module it can become).
PRESTART_MODULE = "swell.modelserver"
#: Variables read while the interpreter starts: a job that sets one otherwise gets a fresh process.
_STARTUP_PREFIXES = ("PYTHON", "LD_", "MALLOC_", "GLIBC_TUNABLES")


@dataclass
class _Spare:
    """A pre-started replica process waiting for its job, and the pipes it holds."""

    process: asyncio.subprocess.Process
    env: dict[str, str]
    events_r: int  # ours
    events_w: int  # the number it has
    lifeline_r: int  # the number it has
    lifeline_w: int  # ours


def node_cache(node_id: str) -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(tempfile.gettempdir(), "swell-ray")
    return Path(root) / node_id[:16]


def cached(cache: Path, digest: str) -> Path | None:
    """The unpacked package on this node, if it is there already."""
    target = cache / "packages" / digest
    return target if (target / MARKER).exists() else None


def unpack(data: bytes, cache: Path, digest: str) -> Path:
    """Unpack ``data`` into ``<cache>/packages/<digest>`` (once; atomic)."""
    if hashlib.sha256(data).hexdigest() != digest:
        raise ValueError(f"the package archive does not match its hash {digest}")
    found = cached(cache, digest)
    if found is not None:
        return found
    packages = cache / "packages"
    packages.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=packages, prefix=".unpack-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            tar.extractall(tmp, filter="data")
        (tmp / MARKER).write_text(digest + "\n")
        try:
            os.rename(tmp, packages / digest)
        except OSError:  # another replica on this node unpacked it first
            if cached(cache, digest) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return packages / digest


def hold(cache: Path, digest: str) -> int:
    """A shared lock on ``<cache>/packages/<digest>.lock`` while the returned descriptor is open
    (its actor's life: the kernel lets go when the actor ends, however it ends); taken before
    looking for the package, so :func:`prune` never removes one a live replica uses."""
    packages = cache / "packages"
    packages.mkdir(parents=True, exist_ok=True)
    path = packages / f"{digest}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                os.utime(fd)  # taken now
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # pruned while we waited for it: lock the new one


def prune(cache: Path, *, unused_seconds: float = UNUSED_PACKAGE_SECONDS) -> list[str]:
    """Remove the packages (and shipped build site-packages) that no live replica on this node
    holds (:func:`hold`) and none has taken for ``unused_seconds``, and unpacks cut short as
    long ago; return the digests removed."""
    packages = cache / "packages"
    now = time.time()
    removed = []
    for path in sorted(packages.glob("*.lock")):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if now - os.fstat(fd).st_mtime < unused_seconds or os.stat(path).st_ino != os.fstat(fd).st_ino:
                continue
            digest = path.name.removesuffix(".lock")
            shutil.rmtree(packages / digest, ignore_errors=True)
            os.unlink(path)  # under the lock: a holder waiting on it sees the change (hold)
            removed.append(digest)
        except OSError:  # held by a live replica, or gone meanwhile
            continue
        finally:
            os.close(fd)
    for leftover in packages.glob(".unpack-*"):
        with contextlib.suppress(OSError):
            if now - leftover.stat().st_mtime >= unused_seconds:
                shutil.rmtree(leftover, ignore_errors=True)
    return removed


class ReplicaActor:
    """One replica's supervisor on its node (an async Ray actor)."""

    def __init__(self, prestart: bool = False) -> None:
        self._prestart = prestart
        self._spare: asyncio.Task[_Spare | None] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._events: list[dict[str, Any]] = []
        self._news = asyncio.Event()  # an event or output
        self._evented = asyncio.Event()  # an event
        self._output = bytearray()  # not yet fetched by the server
        self._dropped = 0  # bytes of output dropped since the last fetch (the server was too slow)
        self._tail = bytearray()  # the last output, for the error of a process that exits
        self._lifeline: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._holds: list[int] = []  # locks on the packages it uses (hold), for its life

    async def where(self) -> dict[str, str]:
        """The node this actor was placed on (returns as soon as it is placed); with
        ``prestart``, the replica process starts importing its runtime now."""
        import ray

        if self._prestart and self._spare is None:
            self._spare = asyncio.get_running_loop().create_task(self._start_spare())

        return {"node_id": ray.get_runtime_context().get_node_id(), "address": ray.util.get_node_ip_address()}

    async def start(self, job: dict[str, Any]) -> dict[str, Any]:
        """Prepare the package and its environment, start the process; return its address."""
        import ray

        node_id = ray.get_runtime_context().get_node_id()
        host = ray.util.get_node_ip_address()
        cache = node_cache(node_id)
        digest = job["package_hash"]
        self._holds.append(await asyncio.to_thread(hold, cache, digest))
        package = cached(cache, digest)
        fetched = package is None
        if package is None:
            data = await job["package"][0]  # from the object store, only on a miss
            package = await asyncio.to_thread(unpack, data, cache, digest)
            await asyncio.to_thread(prune, cache)
        python = sys.executable
        if job["requirements"]:
            from swell.modelserver._environment import ensure_environment

            python = str(await asyncio.to_thread(ensure_environment, job["requirements"], cache / "envs"))
        build = job.get("build")
        if build:  # what the package's build_commands installed at push, over the requirements
            from swell.modelserver._build import layered_python

            self._holds.append(await asyncio.to_thread(hold, cache, build["hash"]))
            site = cached(cache, build["hash"])
            if site is None:
                site = await asyncio.to_thread(unpack, await build["site_packages"][0], cache, build["hash"])
            python = str(await asyncio.to_thread(layered_python, site, python, cache / "envs"))
        port = _free_port(host)
        env = _base_env()
        env.update(job["env"])
        env.update({f"TRUSS_SECRET_{name}": value for name, value in job["secrets"].items()})
        env.update({
            "SWELL_REPLICA_ID": job["replica_id"],
            "SWELL_DEPLOYMENT_ID": job["deployment_id"],
            "SWELL_REPLICA_HOST": host,
            "SWELL_REPLICA_PORT": str(port),
            "SWELL_REPLICA_TOKEN": job["token"],
            "SWELL_WEIGHTS_CACHE": str(cache / "weights"),
            # No secrets folder on a node: a stray /secrets must not shadow the environment.
            "SWELL_SECRETS_DIR": str(cache / "no-secrets"),
            "SWELL_START_MODE": "spawned",
            "PYTHONUNBUFFERED": "1",
        })
        argv = [python, "-m", job["module"], "--model-dir", str(package)]
        spare = await self._take_spare(python, job["module"], env)
        if spare is not None:
            env.update({"SWELL_EVENTS_FD": str(spare.events_w), "SWELL_LIFELINE_FD": str(spare.lifeline_r),
                        "SWELL_START_MODE": "prestarted"})
            assert spare.process.stdin is not None
            spare.process.stdin.write(json.dumps({"env": env, "cwd": str(package), "args": argv[3:]}).encode() + b"\n")
            spare.process.stdin.close()  # the job is all it reads; then its stdin is /dev/null
            self._process, events_r, self._lifeline = spare.process, spare.events_r, spare.lifeline_w
        else:
            events_r, events_w = os.pipe()
            lifeline_r, self._lifeline = os.pipe()
            env.update({"SWELL_EVENTS_FD": str(events_w), "SWELL_LIFELINE_FD": str(lifeline_r)})
            try:
                self._process = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT, pass_fds=(events_w, lifeline_r), env=env, cwd=str(package),
                )
            finally:
                os.close(events_w)
                os.close(lifeline_r)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_EVENT_LINE_LIMIT)
        pipe = os.fdopen(events_r, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        read = self._spawn(self._read(reader))
        assert self._process.stdout is not None
        pump = self._spawn(self._pump(self._process.stdout))
        self._spawn(self._wait((read, pump), transport))
        return {
            "address": f"http://{host}:{port}",
            "pid": self._process.pid,
            "argv": argv,
            "package_fetched": fetched,
            "prestarted": spare is not None,
        }

    async def events(self, cursor: int) -> dict[str, Any]:
        """The events after the first ``cursor`` and the output since the last call.

        Waits a while for news when there is none; with output but no event,
        lets more output gather for :data:`OUTPUT_BATCH_SECONDS` (an event ends
        the wait), so a model that prints on every request costs the server
        at most two calls a second, never one per line.
        """
        if len(self._events) <= cursor:
            if not self._output and not self._dropped:
                self._news.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._news.wait(), EVENTS_WAIT_SECONDS)
            if len(self._events) <= cursor and (self._output or self._dropped):
                self._evented.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._evented.wait(), OUTPUT_BATCH_SECONDS)
        output, self._output = bytes(self._output), bytearray()
        dropped, self._dropped = self._dropped, 0
        return {"events": self._events[cursor:], "output": output, "dropped": dropped}

    async def stop(self, grace_seconds: float) -> None:
        """SIGTERM, up to ``grace_seconds`` to finish in-flight work, then SIGKILL."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), max(grace_seconds, 0.0))
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    # ------------------------------------------------------------------ inside

    async def _start_spare(self) -> _Spare | None:
        """``python -m swell.modelserver --await-job``: the runtime imported, the job not yet known."""
        events_r, events_w = os.pipe()
        lifeline_r, lifeline_w = os.pipe()
        env = {**_base_env(), "PYTHONUNBUFFERED": "1"}
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", PRESTART_MODULE, "--await-job",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                pass_fds=(events_w, lifeline_r), env=env, cwd=tempfile.gettempdir(),
            )
        except OSError:
            for fd in (events_r, events_w, lifeline_r, lifeline_w):
                os.close(fd)
            return None
        os.close(events_w)  # the numbers stay valid in the child: pass_fds keeps them
        os.close(lifeline_r)
        return _Spare(process, env, events_r, events_w, lifeline_r, lifeline_w)

    async def _take_spare(self, python: str, module: str, env: dict[str, str]) -> _Spare | None:
        """The pre-started process, if it can become this job (else it is ended)."""
        if self._spare is None:
            return None
        spare, self._spare = await self._spare, None
        if spare is None:
            return None
        usable = (
            python == sys.executable and module == PRESTART_MODULE and spare.process.returncode is None
            and all(env.get(k) == spare.env.get(k) for k in {*env, *spare.env} if k.startswith(_STARTUP_PREFIXES))
        )
        if usable:
            return spare
        with contextlib.suppress(ProcessLookupError):
            spare.process.kill()
        for fd in (spare.events_r, spare.lifeline_w):
            os.close(fd)
        self._spawn(_reap(spare.process))
        return None

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _push(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        self._news.set()
        self._evented.set()

    async def _pump(self, stdout: asyncio.StreamReader) -> None:
        """The process's output into the buffer the server fetches (and the tail kept here)."""
        while chunk := await stdout.read(_READ_BYTES):
            self._output += chunk
            over = len(self._output) - OUTPUT_BUFFER_BYTES
            if over > 0:
                del self._output[:over]
                self._dropped += over
            self._tail += chunk
            if len(self._tail) > _LOG_TAIL_BYTES:
                del self._tail[: len(self._tail) - _LOG_TAIL_BYTES]
            self._news.set()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # an oversized line: skip it
                continue
            if not line:
                return
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and isinstance(event.get("event"), str):
                    self._push(event)

    async def _wait(self, readers: tuple[asyncio.Task[None], ...], transport: asyncio.BaseTransport) -> None:
        assert self._process is not None
        returncode = await self._process.wait()
        # A "failed" written just before the exit, and the last output, come first.
        await asyncio.wait(readers, timeout=1.0)
        for reader in readers:
            reader.cancel()
        transport.close()
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
        self._push({"event": "exit", "returncode": returncode, "tail": _tail(bytes(self._tail))})


def _base_env() -> dict[str, str]:
    """The node's environment for a replica process: the worker's, less Swell's own settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SWELL_")}


async def _reap(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(Exception):
        await process.wait()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _tail(output: bytes) -> str:
    """The last 40 lines of a process's output."""
    return "\n".join(output.decode("utf-8", "replace").splitlines()[-40:])
