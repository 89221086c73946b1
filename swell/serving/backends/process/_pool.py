"""The standby pool: replicas forked from the fork server ahead of time.

A standby has done every step of a replica's start that does not depend on
the model: the fork itself (page tables of a fork server that imported
numpy/torch), the post-fork set-up (die-with-parent, signals, name, stdio),
and the plumbing the backend reads a replica by (its events pipe and its
lifeline are made and handed over when the standby is made).  It then waits
on its own socket for an *assignment*: the replica id, the environment (its
socket path, secrets dir, ``CUDA_VISIBLE_DEVICES`` …), the package directory
and the replica's log.  A wake takes a standby and sends it one; resource
limits are applied to its pid afterwards, as to a forked replica.  The pool
refills in the background, never while a replica waits for resources or the
placement has no memory (or CPU) left for one more process.

The HTTP server is not built ahead: the model server builds it around the
model's config, so that stays in the replica's start (about a millisecond).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swell.serving.backends.process._forkserver import ForkedProcess, ForkServer
from swell.serving.backends.process._resources import Capacity, Placement, format_memory

logger = logging.getLogger("swell.serving.backends.process")

#: What the placement counts for one standby: its own pages, beyond those it
#: shares with the fork server (bench/idle_memory.py measures ~2-3 MiB unique;
#: this leaves room for the pages a replica's start-up dirties).
STANDBY_MEMORY = 32 * 1024 * 1024

#: After a standby died standing by, how long before the pool makes another.
_RETRY_SECONDS = 1.0

#: The descriptors a standby holds for its replica-to-be, by the variable that names them.
EVENTS_FD = "SWELL_EVENTS_FD"
LIFELINE_FD = "SWELL_LIFELINE_FD"


def pool_room(
    capacity: Capacity | None,
    used: Placement,
    pending: int,
    cpu_overcommit: float = 1.0,
    standby_memory: int = STANDBY_MEMORY,
) -> str | None:
    """Why one more standby may not be made now, or ``None`` if it may.

    Replicas come first: none while a replica waits for resources; none that
    would take memory the placement has promised, or CPU it has promised in
    full.  ``capacity`` is ``None`` where resources are not placed.
    """
    if pending:
        return f"{pending} replica(s) wait for resources"
    if capacity is None:
        return None
    if used.memory + standby_memory > capacity.memory:
        free = format_memory(max(0, capacity.memory - used.memory))
        return f"memory: {free} of {format_memory(capacity.memory)} free, a standby counts {format_memory(standby_memory)}"
    cpus = capacity.cpu * cpu_overcommit
    if used.cpu > 0 and used.cpu >= cpus - 1e-9:
        return f"CPU: all {cpus:g} promised to replicas"
    return None


def to_make(size: int, standing: int, making: int) -> int:
    """How many standbys to start making now."""
    return max(0, size - standing - making)


def assignment(
    replica_id: str, module: str, args: Sequence[str], env: Mapping[str, str], cwd: str
) -> dict[str, Any]:
    """The message that turns a standby into ``replica_id``; the descriptors it
    already holds (``EVENTS_FD``, ``LIFELINE_FD``) it names itself."""
    return {
        "op": "assign", "id": replica_id, "module": module, "args": list(args), "cwd": cwd,
        "env": {k: v for k, v in env.items() if k not in (EVENTS_FD, LIFELINE_FD)},
    }


@dataclass(eq=False)
class Standby:
    """One standby process and the backend's ends of what it holds."""

    id: str
    process: ForkedProcess
    channel: socket.socket | None  # the assignment goes here
    events_r: int | None  # the replica's events pipe, read end
    lifeline_w: int | None  # its lifeline, write end: closing it tells it to exit

    def release(self) -> None:
        """Close the backend's ends (the standby, if alive, sees EOF and exits)."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        for name in ("events_r", "lifeline_w"):
            fd = getattr(self, name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, None)


class StandbyPool:
    """Keeps ``size`` standbys forked from the fork server ``server()`` returns.

    ``room()`` says why not to make one now (``None``: go ahead).  Nothing
    here waits on a wake: :meth:`take` is synchronous, refills run as tasks.
    """

    def __init__(
        self,
        size: int,
        log_path: Path,
        server: Callable[[], ForkServer | None],
        room: Callable[[], Awaitable[str | None]],
    ) -> None:
        self.size = size
        self.log_path = log_path
        self._server = server
        self._room = room
        self._standing: list[Standby] = []
        self._refill_task: asyncio.Task[None] | None = None
        self._again = False
        self._closed = False
        self._watchers: set[asyncio.Task[None]] = set()
        self._said: str | None = None  # the last reason not to refill, said once
        self._later: asyncio.TimerHandle | None = None

    @property
    def standing(self) -> int:
        return len(self._standing)

    def pids(self) -> list[int]:
        return [s.process.pid for s in self._standing]

    def take(self) -> Standby | None:
        """A live standby, out of the pool, or ``None``.

        It does not refill: the caller calls :meth:`refill` once the wake is
        over, so that making the next standby (a fork of the whole fork
        server, on the same cores) does not slow the replica that is starting.
        """
        while self._standing:
            standby = self._standing.pop(0)
            if standby.process.returncode is None and standby.channel is not None:
                return standby
            standby.release()
        return None

    def assign(
        self, standby: Standby, replica_id: str, module: str, args: Sequence[str],
        env: Mapping[str, str], cwd: str, log_fd: int,
    ) -> bool:
        """Send the assignment; False if the standby is gone (its fds are released)."""
        message = assignment(replica_id, module, args, env, cwd)
        channel = standby.channel
        try:
            if channel is None:
                raise OSError("no assignment socket")
            channel.sendmsg(
                [json.dumps(message).encode()],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [log_fd]))],
            )
        except OSError as exc:
            logger.warning("standby %s (pid %s) could not take replica %s: %s",
                           standby.id, standby.process.pid, replica_id, exc)
            standby.release()
            with contextlib.suppress(ProcessLookupError, OSError):
                standby.process.kill()
            return False
        # Sent: the standby reads it before the EOF this gives it.
        channel.close()
        standby.channel = None
        return True

    def refill(self, delay: float = 0.0) -> None:
        """Top the pool up in the background (again, if a refill runs now),
        after ``delay`` seconds if given."""
        if self._closed or self.size <= 0:
            return
        if delay > 0:
            if self._later is None or self._later.cancelled():
                self._later = asyncio.get_running_loop().call_later(delay, self._refill_later)
            return
        if self._refill_task is not None and not self._refill_task.done():
            self._again = True
            return
        self._refill_task = asyncio.get_running_loop().create_task(self._refill())

    def _refill_later(self) -> None:
        self._later = None
        self.refill()

    async def filled(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for the refill under way, if any."""
        task = self._refill_task
        if task is not None and not task.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), timeout)

    async def close(self) -> None:
        """Stop refilling and end every standby."""
        self._closed = True
        if self._later is not None:
            self._later.cancel()
        if self._refill_task is not None:
            self._refill_task.cancel()
            await asyncio.gather(self._refill_task, return_exceptions=True)
        standing, self._standing = self._standing, []
        for standby in standing:
            standby.release()
            with contextlib.suppress(ProcessLookupError, OSError):
                standby.process.kill()
        for watcher in list(self._watchers):
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)

    # ------------------------------------------------------------------ runner

    async def _refill(self) -> None:
        while True:
            self._again = False
            while not self._closed and to_make(self.size, len(self._standing), 0) > 0:
                server = self._server()
                if server is None or not server.ready:
                    return
                why = await self._room()
                if why is not None:
                    if why != self._said:
                        logger.info("standby pool: not refilled now (%s)", why)
                    self._said = why
                    return
                self._said = None
                if not await self._make(server):
                    return  # said why; the next wake or exit tries again
            if not self._again or self._closed:
                return

    async def _make(self, server: ForkServer) -> bool:
        standby_id = "s-" + secrets.token_hex(3)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        events_r, events_w = os.pipe()
        lifeline_r, lifeline_w = os.pipe()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            process = await server.standby(
                standby_id, log_fd, {EVENTS_FD: events_w, LIFELINE_FD: lifeline_r}, theirs.fileno()
            )
        except RuntimeError as exc:
            ours.close()
            for fd in (events_r, lifeline_w):
                os.close(fd)
            logger.warning("standby pool: %s", exc)
            return False
        finally:
            # The standby holds its own copies now.
            theirs.close()
            for fd in (events_w, lifeline_r, log_fd):
                os.close(fd)
        standby = Standby(standby_id, process, ours, events_r, lifeline_w)
        if self._closed:
            standby.release()
            with contextlib.suppress(ProcessLookupError, OSError):
                process.kill()
            return False
        self._standing.append(standby)
        watcher = asyncio.get_running_loop().create_task(self._watch(standby))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        logger.debug("standby %s (pid %s) ready", standby_id, process.pid)
        return True

    async def _watch(self, standby: Standby) -> None:
        returncode = await standby.process.wait()
        if standby in self._standing:  # died standing by (taken ones are the backend's)
            self._standing.remove(standby)
            standby.release()
            if not self._closed:
                logger.warning("standby %s (pid %s) exited (%s) before a wake took it",
                               standby.id, standby.process.pid, returncode)
                # Not at once: standbys that die as soon as made would fork in a loop.
                self.refill(_RETRY_SECONDS)
