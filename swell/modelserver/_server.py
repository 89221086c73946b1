"""Process entry point of a replica: env contract, events pipe, lifeline, uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import uvicorn

from swell.http import WS_MAX_MESSAGE_BYTES, LazyWebSocketProtocol, fast_path_protocol, use_batch_scheduling
from swell.modelserver._app import ReplicaApp
from swell.modelserver._config import load_truss_config
from swell.modelserver._otlp import OTLP_ENDPOINT_ENV
from swell.modelserver._token import TOKEN_ENV, require_token
from swell.modelserver._weights import fetch_weights
from swell.modelserver._wrapper import ModelWrapper

logger = logging.getLogger("swell.modelserver")

DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
# Keep router connections alive across idle gaps; uvicorn's default of 5 s would
# make a pooled connection race its own close.
KEEP_ALIVE_SECONDS = 75
# The router's predict requests skip uvicorn's per-request machinery; the rest is uvicorn's.
_PROTOCOL = fast_path_protocol(b"POST /v1/models/")
# After a failed load, how long uvicorn gets to wind down before a hard exit.
FAILED_EXIT_GRACE_SECONDS = 5.0
LIFELINE_EXIT_CODE = 1
FAILED_EXIT_CODE = 1
PR_SET_PDEATHSIG = 1


class EventWriter:
    """One JSON object per line on the inherited ``SWELL_EVENTS_FD`` pipe (if any)."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        if self._fd is None:
            return
        data = (json.dumps({"event": event, **fields}) + "\n").encode()
        with self._lock:
            try:
                while data:
                    written = os.write(self._fd, data)
                    data = data[written:]
            except OSError:
                self._fd = None  # the reader is gone; the lifeline decides whether we live


def _env_fd(name: str) -> int | None:
    value = os.environ.get(name)
    if not value:
        return None
    fd = int(value)
    try:
        os.set_inheritable(fd, False)  # model subprocesses must not hold our pipes open
    except OSError:
        return None
    return fd


def _watch_lifeline(fd: int) -> None:
    while True:
        try:
            data = os.read(fd, 4096)
        except InterruptedError:
            continue
        except OSError:
            data = b""
        if not data:
            try:
                os.write(2, b"swell.modelserver: lifeline closed (parent gone); exiting\n")
            finally:
                os._exit(LIFELINE_EXIT_CODE)


def _die_with_parent(original_ppid: int) -> None:
    """PR_SET_PDEATHSIG(SIGKILL), then make sure the parent did not die before it took effect.

    Note: Linux fires it when the parent *thread* that forked us exits.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != original_ppid:
        os._exit(LIFELINE_EXIT_CODE)


def _listen_address() -> dict[str, Any]:
    uds = os.environ.get("SWELL_REPLICA_SOCKET")
    if uds:
        return {"uds": os.path.abspath(uds)}
    port = os.environ.get("SWELL_REPLICA_PORT") or os.environ.get("INFERENCE_SERVER_PORT") or DEFAULT_PORT
    return {"host": os.environ.get("SWELL_REPLICA_HOST") or DEFAULT_HOST, "port": int(port)}


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # model code logging at INFO shows, as under Truss
    logger.setLevel(os.environ.get("SWELL_LOG_LEVEL", "INFO").upper())


#: What uvicorn and the weights fetcher import only when they first run.
_LAZY_IMPORTS = (
    "uvicorn.protocols.http.httptools_impl", "uvicorn.loops.uvloop", "uvicorn.lifespan.off", "uvloop", "httptools",
    "swell.weights", "yaml",
)


def await_job() -> list[str]:
    """A pre-started replica process (the Ray backend's, on its node): import
    what a start would, then wait for the job, one JSON line on stdin
    (``{"env", "cwd", "args"}``); take its environment and folder and return
    the arguments for :func:`main`.  EOF first (the actor is gone): exit."""
    import importlib

    for name in _LAZY_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional piece: the replica imports it itself, or does without
            pass
    line = sys.stdin.buffer.readline()
    if not line:
        raise SystemExit(0)
    job = json.loads(line)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # as a spawned replica: nothing to read
    os.close(devnull)
    os.environ.clear()
    os.environ.update(job["env"])
    os.chdir(job["cwd"])
    sys.path[0] = os.getcwd()  # as ``python -m`` run there would have it
    return list(job["args"])


def _interpreter_first_on_path() -> None:
    """The replica's Python and the console scripts of its environment come first on PATH,
    as in Truss's image, where requirements are installed into the one Python on PATH:
    model code that starts ``python3 -m vllm.entrypoints…`` or ``vllm serve`` in ``load()``
    gets this environment's, not the machine's."""
    bin_dir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", os.defpath)
    if path.split(os.pathsep, 1)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + path
    if sys.prefix != sys.base_prefix:
        os.environ["VIRTUAL_ENV"] = sys.prefix


def main(argv: list[str] | None = None) -> int:
    """Run one replica until SIGTERM (exit 0) or a failed load (exit 1)."""
    original_ppid = os.getppid()
    parser = argparse.ArgumentParser(prog="python -m swell.modelserver",
                                     description="Serve one Truss model package.")
    parser.add_argument("--model-dir", required=True, help="the Truss package (config.yaml + model/model.py)")
    args = parser.parse_args(argv)

    use_batch_scheduling()  # before any thread starts: threads inherit it
    lifeline = _env_fd("SWELL_LIFELINE_FD")
    if lifeline is not None:
        threading.Thread(target=_watch_lifeline, args=(lifeline,), name="lifeline", daemon=True).start()
    _die_with_parent(original_ppid)
    events = EventWriter(_env_fd("SWELL_EVENTS_FD"))
    _setup_logging()

    package_dir = Path(args.model_dir).resolve()
    try:
        config = load_truss_config(package_dir)
    except Exception as exc:
        text = "".join(traceback.format_exception(exc))
        events.emit("failed", error=text)
        sys.stderr.write(text)
        return FAILED_EXIT_CODE
    # Visible at import time of model.py and everywhere after, as Truss's runtime sets
    # them. A value the launcher already set wins: it is the outer runtime's override.
    for name, value in config["environment_variables"].items():
        os.environ.setdefault(name, value)
    _interpreter_first_on_path()
    address = _listen_address()  # before chdir: a relative socket path means the launcher's cwd
    os.chdir(package_dir)  # Truss's cwd is /app: relative data/ resolves against the package

    wrapper = ModelWrapper(config, package_dir)
    tracing = None
    if os.environ.get(OTLP_ENDPOINT_ENV):  # swell serve --otlp-endpoint: opentelemetry is imported only then
        from swell.modelserver.tracing import replica_tracing

        tracing = replica_tracing()
    app = ReplicaApp(wrapper, tracing)
    token = os.environ.pop(TOKEN_ENV, "")  # not for model code (or its subprocesses) to read
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    uv_config = uvicorn.Config(
        require_token(app, token) if token else app, **address, loop=loop, http=_PROTOCOL, lifespan="off",
        ws=LazyWebSocketProtocol, ws_max_size=WS_MAX_MESSAGE_BYTES,  # Truss's websocket models (ReplicaApp.websocket)
        interface="asgi3", access_log=False, log_config=None, log_level="warning",
        server_header=False, proxy_headers=False, timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=None,
    )
    server = ReplicaServer(uv_config, wrapper, events)
    # uvicorn re-raises the signal that stopped it once it has restored the previous
    # handlers; make that a no-op so a graceful SIGTERM ends in exit status 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits this way when it cannot bind
        code = exc.code if isinstance(exc.code, int) else 1
        if code:
            events.emit("failed", error=f"the replica's HTTP server could not start on {address} (exit {code})")
        return code
    uds = uv_config.uds
    if uds:
        try:
            os.unlink(uds)
        except OSError:
            pass
    app.workers.shutdown()
    if tracing is not None:
        tracing.close()  # the spans still batched go out before the replica exits
    return FAILED_EXIT_CODE if server.load_failed else 0


class ReplicaServer(uvicorn.Server):
    """uvicorn.Server that reports `live` once it accepts, then starts the load thread."""

    def __init__(self, config: uvicorn.Config, wrapper: ModelWrapper, events: EventWriter) -> None:
        super().__init__(config)
        self.wrapper = wrapper
        self.events = events
        self.load_failed = False

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        if self.should_exit:
            return
        self.events.emit("live")
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._load, args=(loop,), name="load", daemon=True).start()

    def _load(self, loop: asyncio.AbstractEventLoop) -> None:
        wrapper, events = self.wrapper, self.events
        events.emit("loading")
        fetch_started = time.perf_counter()
        fetched = fetch_weights(wrapper, events)
        weights_seconds = time.perf_counter() - fetch_started
        if fetched and wrapper.load():
            # The model and the runtime live as long as the replica: keep the
            # collector's full passes off them (they cost every request a share).
            gc.collect()
            gc.freeze()
            load_seconds = wrapper.load_seconds or 0.0
            # How this process came to be: forked from the prewarmed fork
            # server, or a fresh interpreter (set by the process backend).
            start_mode = os.environ.get("SWELL_START_MODE")
            if start_mode:
                logger.info("[%s] model.load() completed in %d ms", start_mode, load_seconds * 1000)
            events.emit("ready", load_seconds=round(load_seconds, 3), weights_seconds=round(weights_seconds, 3))
            return
        self.load_failed = True
        events.emit("failed", error=wrapper.error)
        sys.stderr.write(wrapper.error or "model load failed\n")
        sys.stderr.flush()
        loop.call_soon_threadsafe(setattr, self, "should_exit", True)
        # Truss exits on a failed load; do so even if a client holds a connection open.
        timer = threading.Timer(FAILED_EXIT_GRACE_SECONDS, os._exit, args=(FAILED_EXIT_CODE,))
        timer.daemon = True
        timer.start()
