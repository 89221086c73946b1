"""The ``swell`` command.

``swell serve`` runs the server; ``push``, ``predict`` and ``status`` talk to it
over HTTP, finding it through ``SWELL_URL`` and ``SWELL_API_KEY``.  Every client
command takes ``--json`` and then prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
from rich.markup import escape

from swell import __version__
from swell._cli_common import (
    CliClient,
    fail,
    find_model,
    model_path,
    new_table,
    print_pushed,
    push_directory,
    stderr_console,
)

# Commands defined in other modules, imported only when run (or listed by --help):
# `swell serve` then never carries the simulator (numpy) or the client commands.
_LAZY_COMMANDS = {
    "simulate": "swell.sim._cli:simulate",
    "advise": "swell.sim._advise_cli:advise_command",
    "watch": "swell._cli_manage:watch",
    "keys": "swell._cli_manage:keys",
    "secrets": "swell._cli_manage:secrets",
    "promote": "swell._cli_lifecycle:promote",
    "activate": "swell._cli_lifecycle:activate",
    "deactivate": "swell._cli_lifecycle:deactivate",
    "environments": "swell._cli_lifecycle:environments",
    "settings": "swell._cli_lifecycle:settings",
    "delete": "swell._cli_lifecycle:delete",
    "request": "swell._cli_async:request_command",
    "logs": "swell._cli_observe:logs_command",
    "events": "swell._cli_observe:events_command",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _LAZY_COMMANDS and cmd_name not in self.commands:
            import importlib

            module, _, attr = _LAZY_COMMANDS[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="swell")
def cli() -> None:
    """Swell: serve models that scale with their traffic, down to zero and back."""


# --------------------------------------------------------------------------- serve


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to bind.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where packages, environments, keys and logs live [default: $SWELL_DATA_DIR or ./swell-data].",
)
@click.option(
    "--database-url",
    default=None,
    envvar="SWELL_DATABASE_URL",
    help="The store [default: SQLite in the data dir]; e.g. postgresql+asyncpg://user:pass@host/db (pip install 'swell[postgres]').",
)
@click.option(
    "--deactivate-after-days",
    nargs=2,
    type=float,
    default=(14.0, 60.0),
    show_default=True,
    metavar="DEVELOPMENT PUBLISHED",
    help="Deactivate deployments with no traffic for this many days (0 turns it off).",
)
@click.option(
    "--advice-seconds",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="How often `swell advise --quick` reruns in the background on each published deployment's recorded "
    "traffic (with new requests); its digest marks `swell status` and the API's deployment view. 0 turns it off.",
)
@click.option("--max-replica-cap", default=10, show_default=True, type=int, help="Largest max_replica allowed.")
@click.option("--queue-limit", default=None, type=int, help="Answer 429 beyond this many queued requests per deployment.")
@click.option("--demo", is_flag=True, help="Push examples/iris with short autoscaling and print a curl that calls it.")
@click.option(
    "--fork-server/--no-fork-server",
    default=True,
    show_default=True,
    envvar="SWELL_FORK_SERVER",
    help="Fork replicas from a process that has already imported their runtime: a wake costs "
    "~15 ms instead of ~150 ms, for ~8 MiB more memory with one replica (less per replica after).",
)
@click.option(
    "--load-stall-seconds",
    default=300.0,
    show_default=True,
    type=float,
    envvar="SWELL_LOAD_STALL_SECONDS",
    help="A starting replica that shows no progress (no event, no bytes of weights, no log line) "
    "for this long has failed.",
)
@click.option(
    "--load-timeout-seconds",
    default=1800.0,
    show_default=True,
    type=float,
    envvar="SWELL_LOAD_TIMEOUT_SECONDS",
    help="A replica not ready this long after it started has failed, however busy its load.",
)
@click.option(
    "--prewarm-modules",
    default="numpy,torch",
    show_default=True,
    envvar="SWELL_PREWARM_MODULES",
    help="Libraries the fork server imports before it forks replicas (those installed; "
    "comma-separated, 'none' for none), so a replica's cold start does not import them.",
)
@click.option(
    "--pool-size",
    default=1,
    show_default=True,
    type=click.IntRange(0, 32),
    envvar="SWELL_POOL_SIZE",
    help="Standby replica processes kept forked and set up ahead of time (with the fork server); "
    "a wake takes one and the pool refills in the background. 0: fork each replica on demand. "
    "With --backend ray: idle actors kept placed per resource shape, each holding its resources.",
)
@click.option(
    "--max-request-mb",
    default=32.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    envvar="SWELL_MAX_REQUEST_MB",
    help="Largest predict, async_predict or management request body, in MiB; a larger one is answered 413.",
)
@click.option(
    "--max-upload-mb",
    default=2048.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    envvar="SWELL_MAX_UPLOAD_MB",
    help="Largest model package upload (swell push), in MiB; a larger one is answered 413.",
)
@click.option(
    "--max-package-mb",
    default=8192.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    envvar="SWELL_MAX_PACKAGE_MB",
    help="Largest size a pushed package may unpack to, in MiB; a larger one is answered 413 before it is written.",
)
@click.option(
    "--max-package-files",
    default=100_000,
    show_default=True,
    type=click.IntRange(min=1),
    envvar="SWELL_MAX_PACKAGE_FILES",
    help="Most files a pushed package may hold; more is answered 413.",
)
@click.option(
    "--async-max-mb-per-key",
    default=256.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    envvar="SWELL_ASYNC_MAX_MB_PER_KEY",
    help="Async inputs one API key may have waiting or running, in MiB; past it async_predict answers 429.",
)
@click.option(
    "--async-max-mb",
    default=1024.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    envvar="SWELL_ASYNC_MAX_MB",
    help="Async inputs waiting or running in all, in MiB; past it async_predict answers 429.",
)
@click.option(
    "--webhook-allow",
    "webhook_allow",
    multiple=True,
    metavar="HOST",
    help="Let webhooks reach this host (a name, an address or a network such as 10.0.0.0/8) although it is "
    "loopback, private, link-local or this server's own; repeatable. Such destinations are refused otherwise.",
)
@click.option(
    "--backend",
    default="process",
    show_default=True,
    type=click.Choice(["process", "ray"]),
    envvar="SWELL_BACKEND",
    help="What runs replicas: 'process' (processes on this machine) or 'ray' (actors on the Ray "
    "cluster at --ray-address, each running the replica process on its node; docs/cluster.md).",
)
@click.option(
    "--capacity-policy",
    default="reclaim",
    show_default=True,
    type=click.Choice(["reclaim", "off"]),
    envvar="SWELL_CAPACITY_POLICY",
    help="When a replica waits for resources (pending) and somebody waits for it: 'reclaim' stops idle replicas of "
    "other deployments above their min_replica to make room, least recently used first, never one serving a request "
    "(a called model serves); 'off' lets it wait until room frees on its own. Both backends; docs/serving.md.",
)
@click.option(
    "--ray-address",
    default="auto",
    show_default=True,
    envvar="SWELL_RAY_ADDRESS",
    help="With --backend ray: the cluster to join, 'auto' (the one this machine belongs to) or HOST:PORT of its head.",
)
@click.option(
    "--new-workspace",
    is_flag=True,
    help="If the data dir's swell.db is empty or not Swell's, move it aside and begin a new, empty workspace "
    "(without this flag such a database is refused at start).",
)
@click.option(
    "--replica-log-mb",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="Disk one replica's log may use (rotated in two halves; the oldest lines go first).",
)
@click.option(
    "--deployment-log-mb",
    default=100.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="Disk all logs of one deployment may use (the oldest replicas' files go first).",
)
@click.option(
    "--header-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    envvar="SWELL_HEADER_TIMEOUT",
    help="Seconds a request's head may take to arrive (from the connection's start, or the request's first byte); "
    "a slower client's connection is closed.",
)
@click.option(
    "--auth-failure-burst",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    envvar="SWELL_AUTH_FAILURE_BURST",
    help="Unknown or revoked API keys one client address may send at once; past it, 429 until its budget refills.",
)
@click.option(
    "--auth-failure-rate",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    envvar="SWELL_AUTH_FAILURE_RATE",
    help="How fast a client's budget of bad keys refills, per second.",
)
@click.option(
    "--body-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    envvar="SWELL_BODY_TIMEOUT",
    help="Seconds a request body may stall between two pieces before the connection is closed.",
)
@click.option(
    "--max-connections",
    default=None,
    type=click.IntRange(min=1),
    envvar="SWELL_MAX_CONNECTIONS",
    help="Most client connections open at once; over it the oldest ones still sending a request, then idle ones, "
    "are closed (never one with a request in flight). Default: the open-file limit (raised to its maximum at start) "
    "less 1024 kept for replicas and the database.",
)
@click.option(
    "--build-timeout",
    default=600.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    envvar="SWELL_BUILD_TIMEOUT",
    help="Seconds one of a package's build_commands may run at push (in the package's directory, its build "
    "environment activated); a command still running then is killed and the push fails (docs/models.md).",
)
@click.option(
    "--otlp-endpoint",
    default=None,
    envvar="SWELL_OTLP_ENDPOINT",
    metavar="URL",
    help="Send OpenTelemetry traces over OTLP/HTTP to this collector (its base URL, e.g. http://127.0.0.1:4318): "
    "each request's queue wait, cold-start wait and replica time, and the replica's model call, which also gets "
    "OTEL_EXPORTER_OTLP_ENDPOINT for its own spans. Off by default (docs/observability.md).",
)
@click.option("--tick-seconds", default=1.0, type=float, hidden=True)
@click.option(
    "--drain-grace-seconds",
    default=30.0,
    type=float,
    show_default=True,
    metavar="SECONDS",
    help="How long a replica that is leaving (scale-down, deactivation, a new version) may finish its requests "
    "and keep its websockets open before it is stopped (websockets are then closed with 1001).",
)
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning"]), hidden=True)
def serve(
    host: str,
    port: int,
    data_dir: Path | None,
    database_url: str | None,
    deactivate_after_days: tuple[float, float],
    advice_seconds: float,
    max_replica_cap: int,
    queue_limit: int | None,
    demo: bool,
    fork_server: bool,
    load_stall_seconds: float,
    load_timeout_seconds: float,
    prewarm_modules: str,
    pool_size: int,
    max_request_mb: float,
    max_upload_mb: float,
    max_package_mb: float,
    max_package_files: int,
    async_max_mb_per_key: float,
    async_max_mb: float,
    webhook_allow: tuple[str, ...],
    backend: str,
    capacity_policy: str,
    new_workspace: bool,
    ray_address: str,
    replica_log_mb: float,
    deployment_log_mb: float,
    header_timeout: float,
    auth_failure_burst: int,
    auth_failure_rate: float,
    body_timeout: float,
    max_connections: int | None,
    build_timeout: float,
    otlp_endpoint: str | None,
    tick_seconds: float,
    drain_grace_seconds: float,
    log_level: str,
) -> None:
    """Run the server: routing, autoscaling and the management API."""
    import logging

    from pydantic import ValidationError

    from swell.config import ServerSettings

    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # Drivers' own debug logs name every statement: Swell's debug is about Swell.
    # httpx logs every webhook it sends at INFO.
    for noisy in ("aiosqlite", "asyncpg", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    data_dir = data_dir or Path(os.environ.get("SWELL_DATA_DIR", "swell-data"))
    try:
        settings = ServerSettings(
            host=host,
            port=port,
            data_dir=data_dir,
            database_url=database_url,
            deactivate_development_after_days=deactivate_after_days[0] or None,
            deactivate_published_after_days=deactivate_after_days[1] or None,
            advice_seconds=advice_seconds,
            max_replica_cap=max_replica_cap,
            queue_limit=queue_limit,
            tick_seconds=tick_seconds,
            drain_grace_seconds=drain_grace_seconds,
            fork_server=fork_server,
            load_stall_seconds=load_stall_seconds,
            load_timeout_seconds=load_timeout_seconds,
            prewarm_modules=[m.strip() for m in prewarm_modules.split(",") if m.strip() not in ("", "none")],
            pool_size=pool_size,
            max_request_bytes=_mib_to_bytes(max_request_mb, "--max-request-mb"),
            max_upload_bytes=_mib_to_bytes(max_upload_mb, "--max-upload-mb"),
            max_package_bytes=_mib_to_bytes(max_package_mb, "--max-package-mb"),
            max_package_files=max_package_files,
            async_max_bytes_per_key=_mib_to_bytes(async_max_mb_per_key, "--async-max-mb-per-key"),
            async_max_bytes=_mib_to_bytes(async_max_mb, "--async-max-mb"),
            webhook_allow=list(webhook_allow),
            new_workspace=new_workspace,
            backend=backend,
            capacity_policy=capacity_policy,
            ray_address=ray_address,
            replica_log_bytes=_mib_to_bytes(replica_log_mb, "--replica-log-mb"),
            deployment_log_bytes=_mib_to_bytes(deployment_log_mb, "--deployment-log-mb"),
            header_timeout_seconds=header_timeout,
            auth_failure_burst=auth_failure_burst,
            auth_failure_rate=auth_failure_rate,
            body_timeout_seconds=body_timeout,
            max_connections=max_connections,
            build_timeout_seconds=build_timeout,
            otlp_endpoint=otlp_endpoint,
        )
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from None
    demo_dir = _examples_dir() / "iris" if demo else None
    if demo_dir is not None and not (demo_dir / "config.yaml").is_file():
        fail(
            f"--demo needs the example package {demo_dir}, which is missing; "
            "run from a checkout of Swell (examples/ sits next to the swell/ package)",
            as_json=False,
        )
    import importlib.util

    if backend == "ray" and importlib.util.find_spec("ray") is None:
        fail("--backend ray needs Ray on this machine: pip install 'ray>=2.50' (docs/cluster.md)", as_json=False)
    if otlp_endpoint and importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is None:
        fail("--otlp-endpoint needs the OTLP exporter: pip install 'swell[otel]' (docs/observability.md)", as_json=False)
    os.umask(0o077)  # what the server and its replicas write (database, logs, packages) is the user's alone
    from swell.server import ServeError, run_server

    try:
        run_server(settings, demo_dir)
    except ServeError as exc:
        fail(str(exc), as_json=False)


def _mib_to_bytes(mib: float, flag: str) -> int:
    import math

    if not math.isfinite(mib):  # FloatRange lets nan and inf through
        raise click.BadParameter(f"{mib} is not a size; give MiB > 0, e.g. 32 or 0.5", param_hint=flag)
    return max(1, int(mib * 1024 * 1024))


def _examples_dir() -> Path:
    import swell

    return Path(swell.__file__).resolve().parents[1] / "examples"


@cli.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--publish", is_flag=True, help="Create a new published deployment (else: reload the development one in place).")
@click.option("--promote", is_flag=True, help="Point the environment (production) at the new published deployment.")
@click.option("--environment", default="production", show_default=True, help="The environment --promote moves.")
@click.option("--model-name", default=None, help="Model name [default: config.yaml's model_name, else the directory's name].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def push(directory: Path, publish: bool, promote: bool, environment: str, model_name: str | None, as_json: bool) -> None:
    """Upload a model package (a Truss directory with config.yaml) as a deployment."""
    client = CliClient(as_json)
    result = push_directory(
        client, directory, model_name=model_name, publish=publish or promote, promote=promote, environment=environment
    )
    if as_json:
        click.echo(json.dumps(result))
        return
    print_pushed(client, result)


def _read_data(data: str | None, *, as_json: bool) -> bytes:
    if data is None:
        return b"{}"
    if data == "@-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        path = Path(data[1:])
        try:
            return path.read_bytes()
        except OSError as exc:
            fail(f"-d: cannot read {path}: {exc.strerror or exc}", as_json=as_json)
    return data.encode()


@cli.command()
@click.argument("model")
@click.option("-d", "--data", default=None, help="Request body: JSON text, @file, or @- for stdin [default: {}].")
@click.option("--deployment", "deployment_id", default=None, help="Call this deployment.")
@click.option("--environment", default=None, help="Call the deployment this environment points at.")
@click.option("--development", is_flag=True, help="Call the development deployment.")
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds (504).")
@click.option("--async", "run_async", is_flag=True, help="Queue it as an async request; prints its request id.")
@click.option("--webhook", default=None, help="With --async: POST the result to this http(s) URL.")
@click.option("--priority", type=click.IntRange(0, 2), default=None, help="With --async: 0 runs first, 2 last [default: 1].")
@click.option("--wait", is_flag=True, help="With --async: wait for the result and print it.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def predict(
    model: str,
    data: str | None,
    deployment_id: str | None,
    environment: str | None,
    development: bool,
    timeout: float | None,
    run_async: bool,
    webhook: str | None,
    priority: int | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Call MODEL (its id, or its name: quote one with spaces, "Test Async"); streamed answers print as they come.

    With --async the request is kept by the server and run when a replica is
    free; `swell request ID` shows it later."""
    if not run_async and (webhook is not None or priority is not None or wait):
        raise click.UsageError("--webhook, --priority and --wait go with --async")
    chosen = sum(bool(x) for x in (deployment_id, environment, development))
    if chosen > 1:
        raise click.UsageError("give at most one of --deployment, --environment, --development")
    body = _read_data(data, as_json=as_json)
    client = CliClient(as_json)
    lookup = client.send("GET", model_path(model))
    if lookup.status_code == 403:
        # An invoke key may not read the model: the server finds it by id or name as written,
        # and it calls production, the usual target.
        info: dict[str, Any] = {"id": model, "environments": {"production": True}}
    else:
        info = find_model(client, model, lookup)
    base = "/model/" + quote(str(info["id"]), safe="")
    if deployment_id:
        path = f"{base}/deployment/{quote(deployment_id, safe='')}/predict"
    elif environment:
        path = f"{base}/environments/{quote(environment, safe='')}/predict"
    elif development:
        path = f"{base}/development/predict"
    elif info.get("environments", {}).get("production"):
        path = f"{base}/environments/production/predict"
    elif info.get("development_deployment_id"):
        path = f"{base}/development/predict"
    else:
        fail(f"model {info.get('name', model)!r} has no production or development deployment to call", as_json=as_json)
    if run_async:
        from swell._cli_async import submit_async

        submit_async(client, path, body, webhook=webhook, priority=priority, wait=wait)
        return
    headers = {"content-type": "application/json"}
    if timeout is not None:
        headers["x-swell-timeout"] = str(timeout)
    with client.stream("POST", path, content=body, headers=headers) as response:
        if response.status_code >= 400 or as_json:
            response.read()
            payload = client.check(response)
            if not isinstance(payload, dict):
                payload = {"output": payload}
            click.echo(json.dumps(payload))
            return
        out = sys.stdout.buffer
        last = b""
        for chunk in response.iter_raw():
            out.write(chunk)
            out.flush()
            last = chunk or last
        if last and not last.endswith(b"\n"):
            out.write(b"\n")
            out.flush()


#: Beside a deployment's status in `swell status`: the server's background advice found better settings.
ADVICE_MARK = "⚑"


def _settings_text(settings: dict[str, Any]) -> str:
    """``min–max · target@util% · window/delay`` (`` · burst``, `` · trend`` when on), short
    enough for an 80-column table."""
    return (
        f"{settings['min_replica']}–{settings['max_replica']} · "
        f"{settings['concurrency_target']}@{settings['target_utilization_percentage']}% · "
        f"{settings['autoscaling_window']}s/{settings['scale_down_delay']}s"
        + "".join(f" · {name}" for name in ("burst", "trend") if settings.get(name))
    )


@cli.command()
@click.argument("model", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--replicas",
    "show_replicas",
    is_flag=True,
    help="Also list each replica: its state and where its cold start went "
    "(pending, process, weights, load(), total seconds).",
)
def status(model: str | None, as_json: bool, show_replicas: bool) -> None:
    """Deployments with their status, replicas and autoscaling settings."""
    client = CliClient(as_json)
    if model:
        models = [find_model(client, model)]
    else:
        models = client.request_object("GET", "/v1/models").get("models", [])
    if show_replicas:
        for entry in models:
            for dep in entry.get("deployments", []):
                view = client.request_object("GET", model_path(entry["id"], "deployments", dep["id"]))
                dep["replicas"] = view.get("replicas", [])
                dep["pending_reason"] = view.get("pending_reason")
    if as_json:
        click.echo(json.dumps({"models": models}))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    # Fits 80 columns: the model's id and the deployment's kind are in --json;
    # a development deployment says so where a published one names its
    # environments.
    table = Table(
        title=f"Swell at {client.url}",
        caption="settings: min–max replicas · target@utilization · window/scale-down delay [· extras on]",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=0,
    )
    table.add_column("model", overflow="fold", max_width=13)
    table.add_column("deployment", no_wrap=True)
    table.add_column("serves", min_width=11, max_width=11)
    table.add_column("status", no_wrap=True)
    table.add_column("ready", no_wrap=True, justify="right")
    table.add_column("settings", min_width=22)
    colours = {"Active": "green", "Scaled to zero": "dim", "Failed": "red", "Unhealthy": "red"}
    advised: list[str] = []
    for entry in models:
        for dep in entry.get("deployments", []):
            state = str(dep["status"])
            advice = dep.get("advice")
            if isinstance(advice, dict):
                advised.append(f"{ADVICE_MARK} {dep['id']}: {advice.get('summary', '')} ({advice.get('command', 'swell advise')})")
            if dep.get("kind") == "development":
                serves = "development"
            else:
                serves = _serves_text(dep)
            table.add_row(
                escape(str(entry["name"])),
                escape(str(dep["id"])),
                escape(serves),
                f"[{colours.get(state, 'yellow')}]{escape(state)}[/]" + (f" {ADVICE_MARK}" if isinstance(advice, dict) else ""),
                f"{dep['replicas_ready']}/{dep['replicas_total']}",
                _settings_text(dep["autoscaling_settings"]),
            )
    if not models:
        stderr_console().print("no models yet; push one with `swell push DIR`")
        return
    Console().print(table)
    for line in advised:  # the background advice found settings worth a look
        Console().print(escape(line), soft_wrap=True)
    for entry in models:  # capacity pressure: which replica was stopped to make room, and why
        for dep in entry.get("deployments", []):
            if reclaimed := dep.get("capacity_reclaimed"):
                Console(soft_wrap=True).print(f"{escape(str(dep['id']))}: {escape(str(reclaimed['message']))} ({reclaimed['at']})")
    if show_replicas:
        Console().print(_replicas_table(models))


def _serves_text(dep: dict[str, Any]) -> str:
    """The environments a published deployment serves, with its share where a rolling promotion splits one."""
    shares: dict[str, int] = dep.get("traffic") or dict.fromkeys(dep.get("environments", []), 100)
    return ", ".join(env if share >= 100 else f"{env} {share}%" for env, share in shares.items()) or "—"


def _replicas_table(models: list[dict[str, Any]]) -> Any:
    """One row per replica: state and cold start seconds by phase."""
    table = new_table(
        "Replicas (cold start, seconds)",
        caption="pending: waiting for resources · process: until its server accepts · start: prewarmed (a standby), forked (from the fork server) or spawned",
    )
    for name, justify in (("deployment", "left"), ("replica", "left"), ("state", "left"), ("pending", "right"),
                          ("process", "right"), ("weights", "right"), ("load", "right"), ("total", "right"),
                          ("start", "left")):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]

    def seconds(value: Any) -> str:
        return "—" if value is None else f"{float(value):.2f}"

    for entry in models:
        for dep in entry.get("deployments", []):
            for replica in dep.get("replicas") or []:
                cold = replica.get("cold_start") or {}
                state = str(replica.get("state", ""))
                if state == "pending" and replica.get("reason"):
                    state = f"pending: {replica['reason']}"
                table.add_row(
                    escape(str(dep["id"])),
                    escape(str(replica.get("id", ""))),
                    escape(state),
                    seconds(cold.get("pending_seconds")),
                    seconds(cold.get("process_seconds")),
                    seconds(cold.get("weights_seconds")),
                    seconds(cold.get("load_seconds")),
                    seconds(cold.get("total_seconds")),
                    escape(str(cold.get("start") or "")),
                )
    return table


# --------------------------------------------------------------------------- entry point


def main() -> None:
    cli()
