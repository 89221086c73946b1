"""The fork server: a process that has imported the model server's runtime and
forks a replica from itself on request.

Run by the backend as a *script* (``python .../_zygote.py FD``), so that it
imports nothing of the router.  Importing the runtime is most of a cold
start (interpreter, uvicorn, httptools, uvloop: ~150 ms on one core); a fork
of a process that has done it costs a few milliseconds, and the replica
shares those pages with this process instead of holding its own copy.

Protocol, one JSON object per SOCK_SEQPACKET message on fd ``FD``:

- backend → here: ``{"op": "fork", "id", "module", "args", "env", "cwd",
  "fd_env": [name, name]}`` with three descriptors attached (log, then the
  two named in ``fd_env``);
- here → backend: ``{"op": "ready", "pid", "preloaded"}`` once imported;
  ``{"op": "forked", "id", "pid"}`` or ``{"op": "error", "id", "error"}``;
  ``{"op": "exit", "pid", "returncode"}`` (negative: killed by that signal).

- backend → here: ``{"op": "standby", "id", "fd_env": [name, name]}`` with
  four descriptors (log, the two named in ``fd_env``, then the standby's end
  of its assignment socket): fork a *standby* replica, which does every step
  of a replica's start that does not depend on the model and then waits for
  ``{"op": "assign", "id", "module", "args", "env", "cwd"}`` (with the
  replica's log attached) on that socket; answered like a fork.

EOF on the socket (the server is gone) ends this process, and with it every
replica it forked: each has ``PR_SET_PDEATHSIG`` = SIGKILL towards it, as it
has towards the server.  A standby also exits on EOF of its assignment
socket, whose other end only the server holds.
"""

from __future__ import annotations

import array
import ctypes
import ctypes.util
import gc
import json
import os
import signal
import socket
import sys
import threading
from typing import Any

#: What ``python -m swell.modelserver`` imports before it runs user code.
PRELOAD = (
    "swell.modelserver",
    "swell.modelserver._server",
    "swell.modelserver._app",
    "swell.modelserver._wrapper",
    "swell.modelserver._codec",
    "swell.modelserver._config",
    "swell.http",
    "swell.http._httptools",
    "swell.http._fastpath",
    "swell.modelserver._weights",
    "swell.weights",  # the weights fetcher and its HTTP client: ~0.1 s of a cold start that has weights
    "yaml",
    "uvicorn",
    "uvicorn.config",
    "uvicorn.server",
    "uvicorn.main",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.loops.uvloop",
    "uvicorn.lifespan.off",
    "uvloop",
    "httptools",
    "runpy",
)

_MAX_MESSAGE = 1 << 20
_FDS = 3  # log and two named ones; a standby's request has its assignment socket too
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15  # what ps -o comm and top show: tells replicas from the fork server


def _load_prctl() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return prctl


def _set_name(prctl: Any, name: str) -> None:
    if prctl is not None:
        prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


class _Job:
    def __init__(self, module: str, args: list[str]) -> None:
        self.module = module
        self.args = args


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    try:
        sock.send(json.dumps(message).encode())
    except OSError:
        pass  # the server is gone; the next recv says so


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(sock, {"op": "exit", "pid": pid, "returncode": os.waitstatus_to_exitcode(status)})


def _receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    fds = array.array("i")
    data, ancdata, _flags, _addr = sock.recvmsg(_MAX_MESSAGE, socket.CMSG_SPACE((_FDS + 1) * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    if not data:
        for fd in fds:
            os.close(fd)
        return None
    return json.loads(data), list(fds)


def _after_fork(sock: socket.socket, zygote: int, prctl: Any, name: str, log_fd: int) -> None:
    """In a forked child: the fork server's signal set-up undone, die with it,
    its socket closed, stdio onto ``log_fd``."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != zygote:
        os._exit(1)
    _set_name(prctl, name)
    sock.close()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    _onto_stdio(log_fd)


def _onto_stdio(log_fd: int) -> None:
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)


def _become(message: dict[str, Any], fd_env: dict[str, str], prctl: Any) -> _Job:
    """Take the replica's environment and directory, then hand back what to run."""
    _set_name(prctl, f"swell {message['id']}")
    env = dict(message["env"])
    env.update(fd_env)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(message["cwd"])
    # As ``python -m`` would have it: the working directory first on the path.
    sys.path[0] = os.getcwd()
    return _Job(message["module"], list(message["args"]))


def _inherit(names: list[str], fds: list[int]) -> dict[str, str]:
    for fd in fds:
        os.set_inheritable(fd, True)
    return {name: str(fd) for name, fd in zip(names, fds, strict=True)}


def _become_replica(sock: socket.socket, message: dict[str, Any], fds: list[int], zygote: int,
                    prctl: Any) -> _Job:
    """In the forked child: take the replica's descriptors, environment and
    directory, then hand back what to run."""
    log_fd, *passed = fds
    _after_fork(sock, zygote, prctl, f"swell {message['id']}", log_fd)
    return _become(message, _inherit(message["fd_env"], passed), prctl)


def _stand_by(sock: socket.socket, message: dict[str, Any], fds: list[int], zygote: int,
              prctl: Any) -> _Job:
    """In a forked standby: the replica's start-up up to its model, then wait
    for the assignment; exit if the server hangs up first."""
    log_fd, *passed, channel_fd = fds
    _after_fork(sock, zygote, prctl, "swell-standby", log_fd)
    fd_env = _inherit(message["fd_env"], passed)
    channel = socket.socket(fileno=channel_fd)
    try:
        received = _receive(channel)
    except (OSError, ValueError):
        received = None
    channel.close()
    if received is None:
        os._exit(0)
    assignment, assigned_fds = received
    if assignment.get("op") != "assign" or len(assigned_fds) != 1:
        os._exit(3)
    _onto_stdio(assigned_fds[0])
    return _become(assignment, fd_env, prctl)


def serve(fd: int, heavy: tuple[str, ...] = ()) -> _Job:
    """Fork replicas until the server hangs up; returns only in a child.

    ``heavy`` are the libraries the deployments need (numpy, torch, ...):
    imported here once, a replica forked after finds them in ``sys.modules``
    instead of spending its cold start importing them.
    """
    sock = socket.socket(fileno=fd)
    prctl = _load_prctl()
    _set_name(prctl, "swell-forksrv")
    # httpx (preloaded below) imports its command-line tool, and with it rich and
    # pygments, whenever they are installed, as they are beside Swell's CLI: ~4 MiB
    # every replica would share for nothing.  This makes its import take httpx's own
    # "CLI not installed" path; a model that imports rich still gets it.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[assignment]
    for name in PRELOAD:
        try:
            __import__(name)
        except Exception:  # noqa: BLE001, S110 - a missing optional piece is imported later, in the replica
            pass
    try:  # the first HTTP client costs ~60 ms of lazy imports and certificates: pay it here, once
        import httpx

        httpx.Client().close()
    except Exception:  # noqa: BLE001, S110 - the replica pays it, then
        pass
    preloaded = []
    for name in heavy:
        before = threading.active_count()
        try:
            __import__(name)
        except Exception as exc:  # noqa: BLE001 - the replica imports it itself, and says why it failed
            print(f"swell fork server: could not preload {name}: {exc!r}", file=sys.stderr, flush=True)
            continue
        if threading.active_count() != before:
            print(f"swell fork server: preloading {name} started a thread", file=sys.stderr, flush=True)
        preloaded.append(name)
    if threading.active_count() != 1:
        # fork() copies only the calling thread: a replica forked from here
        # would miss the others.  Refuse; the backend spawns instead.
        _send(sock, {"op": "refused", "error": f"{threading.active_count()} threads after preload"})
        os._exit(2)
    # Keep the imported objects out of the collector's reach: a collection in a
    # replica would otherwise write to (and so copy) every page they live on.
    gc.collect()
    gc.freeze()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the server, which ends us
    signal.signal(signal.SIGCHLD, lambda *_: _reap(sock))
    zygote = os.getpid()
    _send(sock, {"op": "ready", "pid": zygote, "preloaded": preloaded})
    while True:
        received = _receive(sock)
        if received is None:
            os._exit(0)
        message, fds = received
        op = message.get("op")
        if op not in ("fork", "standby") or len(fds) != _FDS + (op == "standby"):
            for passed_fd in fds:
                os.close(passed_fd)
            _send(sock, {"op": "error", "id": message.get("id"), "error": "bad fork request"})
            continue
        # No exit report may overtake the "forked" one.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        try:
            pid = os.fork()
        except OSError as exc:
            _send(sock, {"op": "error", "id": message["id"], "error": f"fork failed: {exc}"})
            pid = -1
        if pid == 0:
            if op == "standby":
                return _stand_by(sock, message, fds, zygote, prctl)
            return _become_replica(sock, message, fds, zygote, prctl)
        for passed_fd in fds:
            os.close(passed_fd)
        if pid > 0:
            _send(sock, {"op": "forked", "id": message["id"], "pid": pid})
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})


if __name__ == "__main__":
    job = serve(int(sys.argv[1]), tuple(m for m in (sys.argv[2] if len(sys.argv) > 2 else "").split(",") if m))
    import runpy

    sys.argv = ["-m", *job.args]
    runpy.run_module(job.module, run_name="__main__", alter_sys=True)
