"""The backend's side of the fork server (``_zygote.py``): start it, ask it
for replicas, learn when they exit."""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from swell.serving.backends.process._pdeathsig import die_with_parent_hook

logger = logging.getLogger("swell.serving.backends.process")

ZYGOTE_SCRIPT = Path(__file__).with_name("_zygote.py")

#: Variables read while the interpreter or the dynamic loader starts: a
#: replica that sets one differently from the fork server must be spawned.
STARTUP_PREFIXES = ("PYTHON", "LD_", "MALLOC_", "GLIBC_TUNABLES")


def forkable(env: Mapping[str, str], server_env: Mapping[str, str]) -> bool:
    """Whether a replica with ``env`` can be forked from a fork server started
    with ``server_env`` and behave as if spawned."""
    names = {k for k in (*env, *server_env) if k.startswith(STARTUP_PREFIXES)}
    return all(env.get(k) == server_env.get(k) for k in names)


class ForkedProcess:
    """A replica forked by the fork server: ``asyncio.subprocess.Process``'s
    ``pid``, ``returncode``, ``wait``, ``send_signal`` and ``kill``."""

    def __init__(self, pid: int, loop: asyncio.AbstractEventLoop) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited: asyncio.Future[int] = loop.create_future()
        self._pidfd: int | None
        try:  # signals through a pidfd cannot hit a recycled pid
            self._pidfd = os.pidfd_open(pid)
        except (OSError, AttributeError):
            self._pidfd = None

    def _set_exit(self, returncode: int) -> None:
        if self._exited.done():
            return
        self.returncode = returncode
        self._exited.set_result(returncode)
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            raise ProcessLookupError(self.pid)
        if self._pidfd is not None:
            signal.pidfd_send_signal(self._pidfd, sig)
        else:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """One ``_zygote.py`` process for one interpreter."""

    def __init__(
        self, python: str, env: Mapping[str, str], log_path: Path, preload: Sequence[str] = ()
    ) -> None:
        self.python = python
        self.env = dict(env)
        self.log_path = log_path
        self.preload = tuple(preload)  # heavy libraries to import before forking (numpy, torch)
        self.preloaded: list[str] = []  # those it could
        self.ready = False
        self.pid: int | None = None
        self._sock: socket.socket | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started: asyncio.Future[bool] | None = None
        self._pending: dict[str, asyncio.Future[ForkedProcess]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._watch: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 60.0) -> bool:
        """Start it and wait until it has imported the runtime; False if it could not."""
        loop = self._loop = asyncio.get_running_loop()
        self._started = loop.create_future()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            self._process = await asyncio.create_subprocess_exec(
                self.python, str(ZYGOTE_SCRIPT), str(theirs.fileno()), ",".join(self.preload),
                stdin=subprocess.DEVNULL, stdout=log_fd, stderr=subprocess.STDOUT,
                pass_fds=(theirs.fileno(),), env=self.env, cwd=str(self.log_path.parent),
                preexec_fn=die_with_parent_hook(),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            ours.close()
            logger.warning("fork server for %s did not start: %s", self.python, exc)
            return False
        finally:
            theirs.close()
            os.close(log_fd)
        ours.setblocking(False)
        self._sock = ours
        loop.add_reader(ours.fileno(), self._readable)
        self._watch = loop.create_task(self._watch_exit())
        try:
            self.ready = await asyncio.wait_for(asyncio.shield(self._started), timeout)
        except TimeoutError:
            self.ready = False
        if not self.ready:
            logger.warning("fork server for %s is not usable; see %s", self.python, self.log_path)
            await self.close()
        return self.ready

    async def fork(
        self,
        replica_id: str,
        module: str,
        args: Sequence[str],
        env: Mapping[str, str],
        cwd: str,
        log_fd: int,
        fds: Mapping[str, int],
        timeout: float = 10.0,
    ) -> ForkedProcess:
        """A new replica process; raises ``RuntimeError`` if the fork server cannot."""
        message = {
            "op": "fork", "id": replica_id, "module": module, "args": list(args),
            "env": dict(env), "cwd": cwd, "fd_env": list(fds),
        }
        return await self._request(replica_id, message, [log_fd, *fds.values()], timeout)

    async def standby(
        self, standby_id: str, log_fd: int, fds: Mapping[str, int], channel_fd: int, timeout: float = 10.0
    ) -> ForkedProcess:
        """A new standby replica, waiting for its assignment on ``channel_fd``
        (see ``_zygote.py``); raises ``RuntimeError`` if the fork server cannot."""
        message = {"op": "standby", "id": standby_id, "fd_env": list(fds)}
        return await self._request(standby_id, message, [log_fd, *fds.values(), channel_fd], timeout)

    async def _request(
        self, replica_id: str, message: dict[str, Any], fds: list[int], timeout: float
    ) -> ForkedProcess:
        if not self.ready or self._sock is None or self._loop is None:
            raise RuntimeError("the fork server is not running")
        future: asyncio.Future[ForkedProcess] = self._loop.create_future()
        self._pending[replica_id] = future
        passed = array.array("i", fds)
        try:
            self._sock.sendmsg(
                [json.dumps(message).encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, passed)]
            )
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except (OSError, TimeoutError) as exc:
            raise RuntimeError(f"the fork server did not fork: {exc}") from exc
        finally:
            self._pending.pop(replica_id, None)

    async def close(self, grace: float = 2.0) -> None:
        """Hang up (it exits on EOF, and replicas it forked die with it)."""
        self.ready = False
        self._hang_up()
        if self._process is not None and self._process.returncode is None:
            try:
                await asyncio.wait_for(self._process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self._process.kill()
                await self._process.wait()
        if self._watch is not None:
            await asyncio.gather(self._watch, return_exceptions=True)

    # ------------------------------------------------------------------ runner

    def _hang_up(self) -> None:
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _readable(self) -> None:
        while self._sock is not None:
            try:
                data = self._sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._gone()
                return
            try:
                message: dict[str, Any] = json.loads(data)
            except ValueError:
                continue
            self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "ready":
            self.pid = int(message["pid"])
            self.preloaded = [str(m) for m in message.get("preloaded") or []]
            if self._started is not None and not self._started.done():
                self._started.set_result(True)
        elif op == "refused":
            logger.warning("fork server refused to serve: %s", message.get("error"))
            if self._started is not None and not self._started.done():
                self._started.set_result(False)
        elif op == "forked":
            assert self._loop is not None
            child = ForkedProcess(int(message["pid"]), self._loop)
            self._children[child.pid] = child
            future = self._pending.get(str(message.get("id")))
            if future is not None and not future.done():
                future.set_result(child)
            else:  # nobody waits for it any more: end it
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
        elif op == "error":
            future = self._pending.get(str(message.get("id")))
            if future is not None and not future.done():
                future.set_exception(RuntimeError(str(message.get("error"))))
        elif op == "exit":
            exited = self._children.pop(int(message["pid"]), None)
            if exited is not None:
                exited._set_exit(int(message["returncode"]))

    def _gone(self) -> None:
        """The fork server exited: its replicas got SIGKILL from the kernel."""
        self.ready = False
        self._hang_up()
        if self._started is not None and not self._started.done():
            self._started.set_result(False)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RuntimeError("the fork server exited"))
        children, self._children = self._children, {}
        for child in children.values():
            with contextlib.suppress(ProcessLookupError, OSError):
                child.kill()
            child._set_exit(-signal.SIGKILL)

    async def _watch_exit(self) -> None:
        assert self._process is not None
        returncode = await self._process.wait()
        if self._sock is not None:
            logger.warning("fork server exited (%s); replicas will be spawned", returncode)
        # Messages it sent before dying are still in the socket: read them first.
        if self._sock is not None:
            self._readable()
        self._gone()
