"""``swell logs`` and ``swell events``: what a deployment printed and what the server did with it.

Both read ``GET /v1/models/{model}/deployments/{deployment}/logs|events``;
``-f`` follows the NDJSON stream until Ctrl-C.  Without ``--deployment`` they
show the deployment production points at, else the development one, else the
newest.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from swell._cli_common import CliClient, model_path, pick_deployment, stderr_console

__all__ = ["events_command", "logs_command", "pick_deployment"]


def _stream_lines(client: CliClient, path: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Each NDJSON object of a follow, as it comes."""
    with client.stream("GET", path, params={**params, "follow": "true"}, headers={"accept": "application/x-ndjson"}) as response:
        if response.status_code >= 400:
            response.read()
            client.check(response)
        for line in response.iter_lines():
            if line.strip():
                yield json.loads(line)


def print_log_line(line: dict[str, Any]) -> None:
    """``TIME REPLICA TEXT``; the server's own lines in bold, after ``swell:`` (colour only on a terminal)."""
    when = click.style(str(line.get("time")), dim=True)
    who = click.style(str(line.get("replica") or "server"), fg="cyan")
    text = str(line.get("text"))
    if line.get("stream") == "swell":
        text = click.style(f"swell: {text}", bold=True)
    click.echo(f"{when} {who} {text}")


@click.command("logs")
@click.argument("model")
@click.option("--deployment", "deployment_id", default=None, help="This deployment [default: production's, else development's].")
@click.option("--replica", default=None, help="Only this replica's lines.")
@click.option("--since", default=None, help="From this long ago (30s, 10m, 1h, 2d) or an ISO time.")
@click.option("-n", "--lines", "limit", type=click.IntRange(1, 10_000), default=None, help="The last N lines [default: 1000].")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (across restarts and new replicas) until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (with -f: one per line).")
def logs_command(
    model: str, deployment_id: str | None, replica: str | None, since: str | None, limit: int | None, follow: bool, as_json: bool
) -> None:
    """What a deployment's replicas printed, with the server's own lines about it (wake, scale, failures)."""
    params = {k: str(v) for k, v in {"replica": replica, "since": since, "limit": limit}.items() if v is not None}
    _show(model, deployment_id, "logs", params, follow=follow, as_json=as_json, printer=print_log_line)


def print_event(event: dict[str, Any]) -> None:
    kind = str(event.get("kind"))
    colour = "red" if "fail" in kind else "green" if kind == "replica_ready" else "cyan"
    when = click.style(str(event.get("time")), dim=True)
    click.echo(f"{when} {click.style(f'{kind:<17}', fg=colour)} {event.get('message')}")


@click.command("events")
@click.argument("model")
@click.option("--deployment", "deployment_id", default=None, help="This deployment [default: production's, else development's].")
@click.option("--since", default=None, help="From this long ago (30s, 10m, 1h, 2d) or an ISO time.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (with -f: one per line).")
def events_command(model: str, deployment_id: str | None, since: str | None, follow: bool, as_json: bool) -> None:
    """Scaling decisions with their reasons, and each replica's start, ready, drain and failure."""
    params = {"since": since} if since else {}
    _show(model, deployment_id, "events", params, follow=follow, as_json=as_json, printer=print_event)


def _show(
    model: str, deployment_id: str | None, what: str, params: dict[str, str], *,
    follow: bool, as_json: bool, printer: Callable[[dict[str, Any]], None],
) -> None:
    """``…/logs`` or ``…/events`` of the chosen deployment: followed, as one JSON object, or printed."""
    client = CliClient(as_json)
    model_id, deployment = pick_deployment(client, model, deployment_id)
    path = model_path(model_id, "deployments", deployment, what)
    if follow:
        try:
            for item in _stream_lines(client, path, params):
                click.echo(json.dumps(item)) if as_json else printer(item)
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass
        return
    answer = client.request_object("GET", path, params=params)
    if as_json:
        click.echo(json.dumps({"model_id": model_id, **answer}))
        return
    items = answer.get("lines" if what == "logs" else "events", [])
    for item in items:
        printer(item)
    if not items:
        stderr_console().print(f"no {what} for deployment {deployment} yet", markup=False)
