"""``swell advise``: findings on a trace file or a deployment's recorded traffic."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import click
import numpy as np

from swell.client import Client, ClientError
from swell.config import SettingsError, parse_autoscaling
from swell.sim._advise import Advice, AdviseSetup, advise, service_from_history, traffic_to_arrivals
from swell.sim._cli import _Refused, given_settings, settings_options
from swell.sim._errors import SimulationError
from swell.sim._models import ColdStart, ServiceTime
from swell.sim._trace import SYNTHETIC_GRAMMAR, load_trace

_HELP = f"""Tell what autoscaling settings will cost on real traffic, and what would do better.

\b
Traffic: TRACE (a CSV file or a synthetic spec, as for 'swell simulate'), or
--deployment MODEL/DEPLOYMENT: the per-second history the server recorded
(SWELL_URL, SWELL_API_KEY); its current settings are read from the server
unless settings flags are given.
\b
{SYNTHETIC_GRAMMAR}

Each finding says what is wrong, why, the recommended settings and their
simulated effect next to the current (replica-seconds, requests delayed by a
cold start, p99 queue wait). Recommendations come from replaying the traffic
through the live rule over candidate settings: checks for known mistakes, then
a joint search over every setting for the fewest replica-seconds at the current
latency (or within --queue-wait-p99), then the opt-in extras, offered only when
Pareto-better. A hundred or two replays: seconds to a minute on a day-long trace;
--jobs N replays up to N candidates at once, one process each (same advice). --json prints one object
{{"findings": [...], "summary", "current", "recommended", "menu"}}; --patch prints only
the recommended settings as the body for PATCH .../autoscaling_settings.
The menu: the current point and up to three settings on the cost/latency
front (cheapest at today's latency, balanced, fastest within 3x today's
replica-seconds), each a PATCH body with its simulated effect; --patch
--option NAME prints one of them.
"""


def _parse_start(value: str | None) -> float | None:
    if value is None:
        return None
    text = value.strip().removesuffix("Z").removesuffix("z")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _Refused(f"--start {value!r}: expected an ISO 8601 date-time such as 2024-05-01T00:00:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _fetch(deployment: str, path: str) -> Any:
    """``GET /v1/models/{model}/deployments/{deployment}/{path}`` through the server's client."""
    model, sep, dep = deployment.rpartition("/")  # a model's name may hold '/'; a deployment id never does
    if not sep or not model or not dep:
        raise _Refused(f"--deployment {deployment!r}: expected MODEL/DEPLOYMENT (ids or names)")
    try:
        return Client().request_object("GET", f"/v1/models/{quote(model, safe='')}/deployments/{quote(dep, safe='')}/{path}")
    except ClientError as exc:
        raise _Refused(exc.message) from None


@click.command("advise", help=_HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("trace", metavar="[TRACE]", required=False)
@click.option("--deployment", metavar="MODEL/DEPLOYMENT", default=None,
              help="Advise on the traffic the server recorded for this deployment.")
@settings_options
@click.option("--cold-start", default="30", show_default=True, metavar="SPEC", help="Seconds, or a distribution.")
@click.option("--service-time", default=None, metavar="SPEC",
              help="Seconds, column, or tokens (default: as simulate; for --deployment, measured by Little's law).")
@click.option("--model", "model_name", default=None, metavar="NAME", help="Only rows whose 'model' column is NAME.")
@click.option("--start", "start", default=None, metavar="ISO",
              help="Wall-clock time of the trace's first request, for daily peaks (default: 1970-01-01T00:00Z).")
@click.option("--timezone", "zone", default="UTC", show_default=True, help="Time zone of a proposed schedule.")
@click.option("--queue-wait-p99", "queue_wait_p99", type=click.FloatRange(min=0), default=None, metavar="S",
              help="The p99 queue wait you accept (s): the joint search looks for the cheapest settings within "
                   "it. Default: the current settings' (×1.2 + 0.5 s).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for synthetic traces and cold starts.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.option("--patch", "as_patch", is_flag=True, help="Print only the recommended settings (PATCH body).")
@click.option("--option", "option", type=click.Choice(["cheapest", "balanced", "fastest"]), default=None,
              help="With --patch: print that menu option's settings instead (absent from the menu: an error).")
@click.option("--quick", is_flag=True,
              help="Only the single checks and the menu, without the joint search and the extras: a few dozen "
                   "replays instead of a hundred or more (what the server runs in the background).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Replay up to N candidates at once, each in its own process; the advice is the same.")
def advise_command(
    trace: str | None,
    deployment: str | None,
    max_replica_cap: int,
    predict_concurrency: int,
    cold_start: str,
    service_time: str | None,
    model_name: str | None,
    start: str | None,
    zone: str,
    queue_wait_p99: float | None,
    seed: int,
    as_json: bool,
    as_patch: bool,
    option: str | None,
    quick: bool,
    jobs: int,
    **overrides: Any,
) -> None:
    if (trace is None) == (deployment is None):
        raise _Refused("give a TRACE or --deployment MODEL/DEPLOYMENT (one of them)")
    given = given_settings(overrides)
    epoch = _parse_start(start)
    try:
        cold = ColdStart.parse(cold_start)
        if deployment is not None:
            history = _fetch(deployment, "traffic")
            if not isinstance(history, dict):
                raise _Refused("the server's traffic history is not a JSON object")
            arrivals, recorded_start, _ = traffic_to_arrivals(history)
            epoch = recorded_start if epoch is None else epoch
            if service_time is None:
                measured = service_from_history(history)
                seconds = measured if measured is not None else 1.0
            else:
                model = ServiceTime.parse(service_time)
                if model.kind != "fixed":
                    raise _Refused("--service-time with --deployment: give seconds (the history has no columns)")
                seconds = model.seconds
            service = np.full(arrivals.shape[0], seconds)
            if not given:
                current = _fetch(deployment, "autoscaling_settings")
                if isinstance(current, dict):
                    given = current.get("autoscaling_settings", current)
        else:
            assert trace is not None
            loaded = load_trace(trace, model=model_name, seed=seed)
            arrivals = loaded.arrivals
            service = ServiceTime.parse(service_time or "auto").durations(loaded)
        settings = parse_autoscaling(given, max_replica_cap=max_replica_cap)
    except SettingsError as exc:
        raise _Refused(str(exc)) from None
    except SimulationError as exc:
        raise _Refused(str(exc)) from None
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(zone)
    except (ValueError, LookupError, OSError):
        raise _Refused(f"--timezone {zone!r}: not an IANA time zone such as 'UTC' or 'Europe/Berlin'") from None
    setup = AdviseSetup(
        arrivals=arrivals,
        service=service,
        settings=settings,
        predict_concurrency=predict_concurrency,
        cold_start=cold,
        max_replica_cap=max_replica_cap,
        epoch=epoch or 0.0,
        timezone=zone,
        seed=seed,
        queue_wait_p99=queue_wait_p99,
        joint_search=not quick,
        workers=jobs,
    )
    show_progress = not (as_json or as_patch) and sys.stderr.isatty()
    if show_progress:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        bar: Any = Progress(
            SpinnerColumn(),
            TextColumn("searching settings: {task.completed} replays"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
    else:
        bar = nullcontext()
    try:
        with bar:
            task = bar.add_task("advise", total=None) if show_progress else None

            def progress(done: int) -> None:
                if task is not None:
                    bar.update(task, completed=done)

            result = advise(setup, progress=progress)
    except SimulationError as exc:
        raise _Refused(str(exc)) from None
    if as_patch and option is not None:
        chosen = next((o for o in result.menu if o.name == option), None)
        if chosen is None:
            names = ", ".join(o.name for o in result.menu) or "none: the current settings are on the front"
            raise _Refused(f"--option {option}: not on this traffic's menu (options: {names})")
        click.echo(json.dumps(chosen.settings))
    elif as_patch:
        click.echo(json.dumps(result.recommended))
    elif as_json:
        click.echo(json.dumps(result.as_dict()))
    else:
        _print(result, settings.model_dump(mode="json"))


_SHOWN = (
    ("replica_seconds", "replica-seconds"),
    ("requests_delayed_by_cold_start", "delayed by cold start"),
    ("queue_wait_p50", "queue wait p50 (s)"),
    ("queue_wait_p99", "queue wait p99 (s)"),
    ("cold_starts", "cold starts"),
)


def _print_menu(console: Any, result: Advice, current: dict[str, Any]) -> None:
    """The current point and the menu's options side by side, then each option's changes and why."""
    from rich.table import Table

    if not result.menu:
        return
    console.print("\n[bold]Menu[/] (cost against latency; each a whole PATCH body: --patch --option NAME)")
    table = Table(show_edge=False, box=None, padding=(0, 2))
    table.add_column("")
    table.add_column("current", justify="right")
    for o in result.menu:
        table.add_column(o.name, justify="right")
    for key, label in _SHOWN:
        table.add_row(label, _cell(result.metrics.get(key)), *(_cell(o.metrics.get(key)) for o in result.menu))
    console.print(table)
    for o in result.menu:
        changes = {k: v for k, v in o.settings.items() if current.get(k) != v}
        console.print(f"[cyan]{o.name}[/]: {o.title}. " + ", ".join(f"{k} {json.dumps(v)}" for k, v in changes.items()),
                      highlight=False)
        console.print(f"  {o.why}", highlight=False)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _print(result: Advice, current: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if result.good:
        console.print(f"[green]✓[/] {result.summary}")
        return
    for i, f in enumerate(result.findings, 1):
        console.print(f"\n[bold]{i}. {f.title}[/]  [dim]({f.id})[/]")
        console.print(f.why, highlight=False)
        changes = {k: v for k, v in f.recommended.items() if current.get(k) != v}
        if changes or f.extras:
            shown = ", ".join(f"{k} {json.dumps(v)}" for k, v in changes.items())
            if f.extras:
                shown = ", ".join(filter(None, [shown, *(f"extra: {k}" for k in f.extras)]))
            console.print(f"[cyan]recommended:[/] {shown}", highlight=False)
        table = Table(show_edge=False, box=None, padding=(0, 2))
        table.add_column("")
        table.add_column("current", justify="right")
        table.add_column("recommended", justify="right")
        for key, label in _SHOWN:
            table.add_row(label, _cell(f.effect["current"].get(key)), _cell(f.effect["recommended"].get(key)))
        console.print(table)
    _print_menu(console, result, current)
    console.print(f"\n{result.summary}", highlight=False)
    console.print(f"PATCH body: {json.dumps(result.recommended)}", highlight=False, soft_wrap=True)
    if result.extras and result.extras_recommended is not None:
        names = ", ".join(result.extras)
        console.print(f"With the opt-in extra {names}: {json.dumps(result.extras_recommended)}",
                      highlight=False, soft_wrap=True)
