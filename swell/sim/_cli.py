"""``swell simulate``: replay a trace through the scaling rule, without a server."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TypeVar

import click

from swell.config import (
    DEFAULT_MAX_REPLICA_CAP,
    EXTRA_SETTINGS,
    SCALAR_SETTINGS,
    AutoscalingSettings,
    SettingsError,
    parse_autoscaling,
)
from swell.sim._engine import SimConfig, SimResult, replay
from swell.sim._errors import SimulationError
from swell.sim._models import DEFAULT_TOKEN_MODEL, ColdStart, ServiceTime
from swell.sim._trace import SYNTHETIC_GRAMMAR, Trace, load_trace
from swell.sim.policies import DESCRIPTIONS, POLICIES, make_policy

_SETTINGS = SCALAR_SETTINGS

_F = TypeVar("_F", bound=Callable[..., Any])

_IN, _OUT, _OVER = DEFAULT_TOKEN_MODEL

_HELP = f"""Replay TRACE through Swell's scaling rule (or a peer's) and report cost and latency.

\b
TRACE is a CSV file or a synthetic spec:
  *.csv with header TIMESTAMP,ContextTokens,GeneratedTokens   Azure LLM inference trace
  *.csv with header timestamp[,duration][,model]              generic; timestamp in seconds
                                                              or ISO 8601, duration in s
\b
{SYNTHETIC_GRAMMAR}

\b
--service-time: auto (default: token model for LLM traces, the duration
  column if there is one, else 1 s), SECONDS, column, or
  tokens[:IN_S,OUT_S,OVERHEAD] (default tokens:{_IN:g},{_OUT:g},{_OVER:g}: prefill
  10k tokens/s, decode 50 tokens/s, 50 ms per request).
--cold-start: SECONDS, lognormal:MEDIAN,SIGMA or uniform:A,B (seeded by --seed).

\b
Policies (--policy, or all with --compare):
""" + "\n".join(f"  {name:<10} {text}" for name, text in DESCRIPTIONS.items()) + """

Settings default to Baseten's (min 0, max 1, window 60 s, delay 900 s,
target 1, utilisation 70 %). --json prints one object: the metrics (with
'policy', 'trace', 'settings', 'model'); with --compare they are under
'policies' by name.
"""


class _Refused(click.ClickException):
    """Bad input: printed as one line, exit code 2, no traceback."""

    exit_code = 2


def _number(_: click.Context, __: click.Parameter, value: str | None) -> int | float | str | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return value  # let the settings validation name field, value and range
    return int(number) if number.is_integer() else number


def _setting(name: str) -> Callable[[_F], _F]:
    flag = "--" + name.replace("_", "-")
    default = AutoscalingSettings.model_fields[name].default
    return click.option(flag, name, callback=_number, default=None, metavar="N", help=f"{name}  [default: {default}]")


def given_settings(overrides: dict[str, Any]) -> dict[str, Any]:
    """The settings named on the command line: numbers given, extras switched on."""
    given = {k: v for k, v in overrides.items() if k in _SETTINGS and v is not None}
    given.update({k: True for k in EXTRA_SETTINGS if overrides.get(k)})
    return given


def settings_options(command: _F) -> _F:
    """The six settings, the extras, the server's cap and the replica's slots: shared by simulate and advise."""
    # click lists options in the reverse order of application.
    command = click.option(
        "--trend", "trend", is_flag=True, default=False,
        help="The trend extra: scale for the concurrency projected one cold start ahead.",
    )(command)
    command = click.option(
        "--burst", "burst", is_flag=True, default=False,
        help="The burst extra: scale up at once for a backlog that would outlast a cold start.",
    )(command)
    command = click.option(
        "--predict-concurrency", type=click.IntRange(min=1), default=1, show_default=True,
        help="Requests one replica serves at once.",
    )(command)
    command = click.option(
        "--max-replica-cap", type=click.IntRange(min=1), default=DEFAULT_MAX_REPLICA_CAP, show_default=True,
        help="The server's cap on max_replica.",
    )(command)
    for name in reversed(_SETTINGS):
        command = _setting(name)(command)
    return command


@click.command("simulate", help=_HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("trace", metavar="TRACE")
@settings_options
@click.option("--cold-start", default="10", show_default=True, metavar="SPEC", help="Seconds, or a distribution.")
@click.option("--service-time", default="auto", show_default=True, metavar="SPEC", help="Seconds, column, or tokens.")
@click.option("--queue-limit", type=click.IntRange(min=0), default=None, metavar="N",
              help="Refuse (count as dropped) a request that finds N waiting. Default: no limit.")
@click.option("--model", "model_name", default=None, metavar="NAME", help="Only rows whose 'model' column is NAME.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for synthetic traces and cold starts.")
@click.option("--tick", type=click.FloatRange(min=0.001), default=1.0, show_default=True, help="Control tick, seconds.")
@click.option("--policy", "policy_name", type=click.Choice(list(POLICIES)), default="swell", show_default=True)
@click.option("--compare", is_flag=True, help="Run every policy on the same trace; one table.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.option("--timeline", "timeline_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CSV t,replicas,ready,concurrency (of --policy), a row per tick where one changed.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Replicas and concurrency over time: PNG, or HTML if FILE ends in .html.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="One self-contained HTML page to share: the table, replicas and queue over time per "
                   "policy, the cost/latency Pareto chart (with --compare: every policy).")
@click.option("--tick-by-tick", is_flag=True, hidden=True, help="Do not jump over idle stretches (for checking).")
def simulate(
    trace: str,
    max_replica_cap: int,
    predict_concurrency: int,
    cold_start: str,
    service_time: str,
    queue_limit: int | None,
    model_name: str | None,
    seed: int,
    tick: float,
    policy_name: str,
    compare: bool,
    as_json: bool,
    timeline_path: Path | None,
    plot_path: Path | None,
    report_path: Path | None,
    tick_by_tick: bool,
    **overrides: Any,
) -> None:
    given = given_settings(overrides)
    if report_path is not None and report_path.suffix.lower() not in (".html", ".htm"):
        raise _Refused(f"--report {report_path}: the report is one HTML page; name a .html file")
    try:
        settings = parse_autoscaling(given, max_replica_cap=max_replica_cap)
    except SettingsError as exc:
        raise _Refused(str(exc)) from None
    try:
        cold = ColdStart.parse(cold_start)
        service_model = ServiceTime.parse(service_time)
        loaded = load_trace(trace, model=model_name, seed=seed)
        service = service_model.durations(loaded)
    except SimulationError as exc:
        raise _Refused(str(exc)) from None
    config = SimConfig(
        settings=settings,
        predict_concurrency=predict_concurrency,
        cold_start=cold,
        tick=tick,
        queue_limit=queue_limit,
        seed=seed,
        skip_idle=not tick_by_tick,
        timeline=timeline_path is not None or plot_path is not None or report_path is not None,
    )
    names = list(POLICIES) if compare else [policy_name]
    if compare and policy_name in names:  # the primary policy first: its timeline is written
        names.remove(policy_name)
        names.insert(0, policy_name)
    show_progress = not as_json and sys.stderr.isatty()
    results = _run_all(loaded, service, names, config, show_progress)

    resolved = service_model.resolve(loaded)
    header = {
        "trace": loaded.describe(),
        "settings": settings.model_dump(),
        "model": {
            "predict_concurrency": predict_concurrency,
            "cold_start": cold.describe(),
            "service_time": resolved.describe(),
            "service_time_mean_s": round(float(service.mean()), 6),
            "queue_limit": queue_limit,
            "tick_s": tick,
            "seed": seed,
        },
    }
    primary = results[0]
    try:
        if timeline_path is not None:
            from swell.sim._report import write_timeline

            assert primary.timeline is not None
            write_timeline(timeline_path, primary.timeline)
        if plot_path is not None:
            from swell.sim._report import write_plot

            write_plot(plot_path, results, f"{loaded.source}: {', '.join(r.policy for r in results)}")
        if report_path is not None:
            from swell.sim._report import write_report

            write_report(report_path, results, header, f"Autoscaling policies on {loaded.source}")
    except SimulationError as exc:
        raise _Refused(str(exc)) from None
    except OSError as exc:
        raise _Refused(f"cannot write {exc.filename}: {exc.strerror}") from None

    if as_json:
        if compare:
            out: dict[str, Any] = {**header, "policies": {r.policy: r.metrics for r in results}}
        else:
            out = {"policy": primary.policy, **primary.metrics, **header}
        click.echo(json.dumps(out))
        return
    _print_table(loaded, header, results)


def _run_all(trace: Trace, service: Any, names: list[str], config: SimConfig, show_progress: bool) -> list[SimResult]:
    context = config.context(float(service.mean()) if len(service) else None)
    results: list[SimResult] = []
    total = max(float(trace.arrivals[-1]), 1.0)
    if show_progress:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        bar: Any = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}% of the trace"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
    else:
        bar = nullcontext()
    with bar:
        for name in names:
            callback = None
            if show_progress:
                task = bar.add_task(name, total=total)

                def callback(t: float, task: Any = task) -> None:
                    bar.update(task, completed=min(max(t, 0.0), total))

            results.append(replay(trace.arrivals, service, make_policy(name, context), config, progress=callback))
    return results


def _print_table(trace: Trace, header: dict[str, Any], results: list[SimResult]) -> None:
    from rich.console import Console

    from swell.sim._report import metrics_table

    console = Console()
    s = header["settings"]
    m = header["model"]
    console.print(
        f"[bold]{trace.source}[/]: {len(trace):,} requests over {trace.span:,.0f} s; "
        f"service {m['service_time']} (mean {m['service_time_mean_s']:.3g} s); cold start {m['cold_start']}; "
        f"predict_concurrency {m['predict_concurrency']}"
    )
    console.print(
        f"settings: min {s['min_replica']}, max {s['max_replica']}, window {s['autoscaling_window']} s, "
        f"delay {s['scale_down_delay']} s, target {s['concurrency_target']}, "
        f"utilisation {s['target_utilization_percentage']} %"
        + ("" if m["queue_limit"] is None else f"; queue limit {m['queue_limit']}")
    )
    console.print(metrics_table({r.policy: r.metrics for r in results}))
