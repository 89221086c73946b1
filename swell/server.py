"""The server's composition root: what ``swell serve`` builds and runs.

One place wires the parts together: the backend (``process``: replicas on Unix
sockets and the fork server; or ``ray``), the control plane over it, the ASGI app in front,
and uvicorn with Swell's fast HTTP path.  ``swell.cli`` parses the flags into
:class:`~swell.config.ServerSettings` and calls :func:`run_server`; nothing
here is imported by the client commands.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import logging
import os
import socket
import tempfile
from functools import partial
from pathlib import Path

import uvicorn
from rich.console import Console

from swell import __version__
from swell._archive import make_archive
from swell.client import describe_error
from swell.config import ServerSettings
from swell.control import ApiError, ControlPlane, SwellApp
from swell.dashboard import Dashboard, run_advise
from swell.http import (
    WS_MAX_MESSAGE_BYTES,
    ConnectionGuard,
    LazyWebSocketProtocol,
    fast_path_protocol,
    use_batch_scheduling,
)
from swell.serving import otlp_tracing
from swell.serving.backends import make_backend

__all__ = ["ServeError", "bind_listener", "run_server"]

log = logging.getLogger("swell")

# File descriptors kept back from the connection cap: replicas' sockets and
# logs, the database, packages being written.
_FD_RESERVE = 1024
_MIN_CONNECTIONS = 64


def raise_open_file_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit; the limit now."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("could not raise the open-file limit from %d to %d", soft, target)
    return soft


def connection_cap(settings: ServerSettings, open_files: int) -> int:
    """--max-connections, or what the open-file limit leaves after the reserve."""
    if settings.max_connections is not None:
        return settings.max_connections
    return max(_MIN_CONNECTIONS, open_files - _FD_RESERVE)


class ServeError(Exception):
    """What stops ``swell serve`` before anything is created: one message for the user."""


def bind_listener(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound first: a port in use is found before the
    workspace exists (a first start creates its key, and a key created by a server
    that then could not listen would never be shown)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ServeError(f"--host {host!r} is not an address of this machine ({exc.strerror}); pass --host 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart reuses TIME_WAIT ports
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(
                f"port {port} on {host} is in use (another Swell, or another program); "
                f"stop it or pass --port, e.g. --port {port + 1}"
            ) from None
        if exc.errno == errno.EACCES:
            raise ServeError(f"port {port} on {host} needs privileges this user lacks; pass --port 1024 or above") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ServeError(f"--host {host} is not an address of this machine; pass --host 127.0.0.1") from None
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def run_server(settings: ServerSettings, demo_dir: Path | None = None) -> None:
    """Serve until Ctrl-C or SIGTERM; with ``demo_dir``, push that package as model ``iris`` once up.

    Raises :class:`ServeError` when the address cannot be bound, before the data dir is touched."""
    listener = bind_listener(settings.host, settings.port)
    use_batch_scheduling()  # no wake-up preemption ping-pong with the replicas; before any thread starts
    data_dir = Path(settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = settings.model_copy(update={"data_dir": data_dir})
    backend = make_backend(settings)
    env_key = os.environ.get("SWELL_API_KEY") or None
    # Spans only with --otlp-endpoint: opentelemetry is not even imported without it.
    tracing = otlp_tracing(settings.otlp_endpoint) if settings.otlp_endpoint else None
    plane = ControlPlane(settings, backend, api_key=env_key, tracing=tracing,
                         advise=partial(run_advise, quick=True))  # advice in the background, CPU bounded
    guard = ConnectionGuard(
        settings.header_timeout_seconds, settings.body_timeout_seconds, connection_cap(settings, raise_open_file_limit())
    )
    app = SwellApp(plane)
    app.connections = guard  # its counts on /metrics
    config = uvicorn.Config(
        Dashboard(app),  # the web dashboard at /, /docs offline; the rest goes to SwellApp
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # Predict requests skip uvicorn's per-request machinery; the guard's
        # read timeouts and cap keep slow clients from holding the door.
        http=fast_path_protocol(b"POST /model/", guard),
        # Truss websocket models (…/websocket, docs/api.md); the protocol loads on the first one.
        ws=LazyWebSocketProtocol,
        ws_max_size=WS_MAX_MESSAGE_BYTES,
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # one ASGI layer less on every request; we bind 127.0.0.1
        server_header=False,
        log_config=None,
        timeout_graceful_shutdown=int(settings.drain_grace_seconds) + 5,
    )
    server = uvicorn.Server(config)
    plane.should_stop = lambda: server.should_exit  # log and event follows end, not the shutdown's wait
    out = Console(soft_wrap=True, highlight=False)  # stdout; never wrap a command someone will paste

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.05)
        # Start-up's objects live as long as the server: keep the collector off them.
        gc.collect()
        gc.freeze()
        bound_port = listener.getsockname()[1]
        url = f"http://{settings.host}:{bound_port}"
        new_key = plane.new_key
        out.print(f"[bold green]Swell {__version__}[/] serving on [bold]{url}[/]  (data: {data_dir})")
        out.print(f"Dashboard: [bold]{url}/[/] (sign in with a workspace key)  API docs: {url}/docs")
        if new_key:
            out.print(
                f"API key (shown once; keep it): [bold]{new_key}[/]\n"
                f"  export SWELL_URL={url} SWELL_API_KEY={new_key}"
            )
        elif env_key:
            out.print("API key: the one in $SWELL_API_KEY")
        else:
            out.print("API key: created earlier (only its hash is kept; `swell keys create` makes another); set SWELL_API_KEY")
        if demo_dir is not None:
            await _push_demo(plane, demo_dir, url, new_key or env_key, out)

    async def prewarm() -> None:
        # The fork server imports the replicas' runtime now, so the first wake
        # is a fork plus the model's load(), not a fresh interpreter.
        try:
            await backend.prewarm()
        except Exception:
            log.warning("could not start the replicas' fork server; replicas will be spawned", exc_info=True)

    async def main() -> None:
        task = asyncio.create_task(announce())
        warming = asyncio.create_task(prewarm() if settings.fork_server else asyncio.sleep(0))
        try:
            await server.serve(sockets=[listener])
        finally:
            task.cancel()
            warming.cancel()

    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            asyncio.run(main())
        else:
            uvloop.run(main())
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its clean shutdown
        pass
    finally:
        if tracing is not None:
            tracing.close()  # the spans still batched go out


async def _push_demo(plane: ControlPlane, demo_dir: Path, url: str, key: str | None, out: Console) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "package.tar.gz"
        make_archive(demo_dir, archive)
        try:
            result = await plane.push(archive, model_name="iris", publish=True, promote=True)
        except ApiError as exc:
            log.error("demo push failed: %s", describe_error(exc.payload, exc.status))
            return
    await plane.promotion.patch_settings(result.model_id, result.deployment_id, {"autoscaling_window": 10, "scale_down_delay": 15})
    shown_key = key or "$SWELL_API_KEY"
    record = plane.registry.deployments[result.deployment_id]
    body = json.dumps(record.config.model_metadata.get("example_model_input", {}))
    out.print(
        f"\nDemo: model [bold]iris[/] ({result.model_id}) deployed as {result.deployment_id}, "
        "autoscaling window 10 s, scale-down delay 15 s.\nCall it (the first call wakes a replica):\n"
    )
    out.print(
        f"  curl -s -X POST {url}/model/{result.model_id}/environments/production/predict \\\n"
        f"    -H 'Authorization: Api-Key {shown_key}' -d '{body}'\n",
        markup=False,
        highlight=False,
    )
    out.print("Watch this log: the replica scales to zero ~25 s after the last call and wakes on the next.\n")
