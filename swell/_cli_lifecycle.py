"""``swell promote``, ``swell activate``, ``swell deactivate`` and ``swell environments``.

A deployment's life from the command line, over the same ``/v1`` routes as the
API (docs/api.md).  Same rules as the rest of the CLI: ``SWELL_URL`` and
``SWELL_API_KEY``, ``--json`` for one JSON object, user errors without a traceback.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

import click
from rich.markup import escape

from swell._cli_common import (
    CliClient,
    model_id,
    model_path,
    new_table,
    print_table,
    stderr_console,
)

_json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def _report(deployment: dict[str, Any], verb: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(deployment))
        return
    envs = ", ".join(deployment.get("environments") or []) or "no environment"
    stderr_console().print(
        f"[bold green]{verb}[/] {escape(str(deployment.get('model_name')))} deployment "
        f"{escape(str(deployment.get('id')))}: {escape(str(deployment.get('status')))} ({escape(envs)})",
        soft_wrap=True,
    )


@click.command()
@click.argument("model")
@click.argument("deployment")
@click.option("--environment", default="production", show_default=True, help="The environment to move.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="NAME=VALUE",
    help="Autoscaling setting for the promoted deployment, instead of the one it replaces "
    "(e.g. --set max_replica=4); repeatable.",
)
@_json_option
def promote(model: str, deployment: str, environment: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Point an environment at a published deployment, once it is as warm as the one it replaces."""
    settings: dict[str, Any] = {}
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.UsageError(f"--set takes NAME=VALUE, got {item!r}")
        try:
            settings[name] = json.loads(value)
        except ValueError:
            settings[name] = value  # the server names the field if it is not a number
    body: dict[str, Any] = {"environment": environment}
    if settings:
        body["autoscaling_settings"] = settings
    client = CliClient(as_json)
    if not as_json:
        stderr_console().print(f"promoting {escape(deployment)} to {escape(environment)} (warming it up first)…")
    path = model_path(model_id(client, model), "deployments", deployment, "promote")
    _report(client.request_object("POST", path, json=body), "promoted", as_json)


def _switch(verb: str, done: str, summary: str) -> click.Command:
    """``swell activate`` / ``swell deactivate``: POST …/deployments/ID/{verb}."""

    @click.command(verb, help=summary)
    @click.argument("model")
    @click.argument("deployment")
    @_json_option
    def command(model: str, deployment: str, as_json: bool) -> None:
        client = CliClient(as_json)
        path = model_path(model_id(client, model), "deployments", deployment, verb)
        _report(client.request_object("POST", path), done, as_json)

    return command


activate = _switch("activate", "activated", "Let a deactivated deployment serve again (it scales from min_replica).")
deactivate = _switch("deactivate", "deactivated", "Stop a deployment's replicas; predict answers 409 until it is activated.")


@click.group()
def environments() -> None:
    """List a model's environments or create one (production and staging always exist)."""


@environments.command("list")
@click.argument("model")
@_json_option
def environments_list(model: str, as_json: bool) -> None:
    """Each environment and the deployment it points at."""
    client = CliClient(as_json)
    found = client.request_object("GET", model_path(model_id(client, model), "environments")).get("environments", [])
    if as_json:
        click.echo(json.dumps({"environments": found}))
        return
    table = new_table()
    for column in ("environment", "deployment", "status", "predict"):
        table.add_column(column)
    for env in found:
        target = env.get("deployment") or {}
        table.add_row(
            escape(str(env.get("name"))),
            escape(str(env.get("deployment_id") or "—")),
            escape(str(target.get("status") or "—")),
            escape(str(env.get("predict_url"))),
        )
    print_table(table, soft_wrap=True)


@environments.command("create")
@click.argument("model")
@click.argument("name")
@_json_option
def environments_create(model: str, name: str, as_json: bool) -> None:
    """A new environment, pointing at nothing until a deployment is promoted into it."""
    client = CliClient(as_json)
    created = client.request_object("POST", model_path(model_id(client, model), "environments"), json={"name": name})
    if as_json:
        click.echo(json.dumps(created))
        return
    stderr_console().print(
        f"[bold green]created[/] environment {escape(name)}; promote into it with "
        f"`swell promote {escape(shlex.quote(model))} DEPLOYMENT --environment {escape(name)}`",
        soft_wrap=True,
    )
