"""``swell promote``, ``activate``, ``deactivate``, ``environments``, ``settings`` and ``delete``.

A deployment's life from the command line, over the same ``/v1`` routes as the
API (docs/api.md).  Same rules as the rest of the CLI: ``SWELL_URL`` and
``SWELL_API_KEY``, ``--json`` for one JSON object, user errors without a traceback.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from typing import Any

import click
from rich.markup import escape

from swell._cli_common import (
    CliClient,
    fail,
    find_model,
    model_id,
    model_path,
    new_table,
    pick_deployment,
    print_table,
    stderr_console,
)

_json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def _set_option(help_text: str) -> Any:
    """``--set NAME=VALUE``, repeatable, read by :func:`_parse_sets`."""
    return click.option("--set", "overrides", multiple=True, metavar="NAME=VALUE", help=help_text)


def _parse_sets(overrides: tuple[str, ...]) -> dict[str, Any]:
    """``--set NAME=VALUE`` options as a settings body; the server judges the values."""
    settings: dict[str, Any] = {}
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.UsageError(f"--set takes NAME=VALUE, e.g. --set max_replica=4; got {item!r}")
        try:
            settings[name.strip()] = json.loads(value)
        except ValueError:
            settings[name.strip()] = value  # the server names the field if it is not a number
    return settings


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


_FINISHED = ("done", "rolled_back", "failed")


def _steps(_ctx: click.Context, _param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(part) for part in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"takes whole percentages separated by commas (e.g. 10,50,100), got {value!r}") from None


@click.command()
@click.argument("model")
@click.argument("deployment")
@click.option("--environment", default="production", show_default=True, help="The environment to move.")
@_set_option(
    "Autoscaling setting for the promoted deployment, instead of the one it replaces (e.g. --set max_replica=4); repeatable."
)
@click.option(
    "--rolling",
    is_flag=True,
    help="Move the environment's requests over in steps (warm the deployment first, then 10% → 50% → 100%), "
    "rolling back if its error rate passes --max-error-rate.",
)
@click.option("--steps", callback=_steps, default=None, metavar="P,P,…",
              help="With --rolling: percent of requests at each step, rising, ending at 100 [default: 10,50,100].")
@click.option("--step-seconds", type=float, default=None, help="With --rolling: wait at each step [default: 60].")
@click.option("--max-error-rate", type=float, default=None,
              help="With --rolling: roll back when the deployment's 5xx answers in a step pass this fraction [default: 0.05].")
@click.option("--min-requests", type=int, default=None,
              help="With --rolling: answers a step needs before it is judged early [default: 20].")
@click.option("--no-wait", is_flag=True, help="With --rolling: return once it has begun (follow it with `swell environments list`).")
@_json_option
def promote(
    model: str, deployment: str, environment: str, overrides: tuple[str, ...], rolling: bool,
    steps: list[int] | None, step_seconds: float | None, max_error_rate: float | None, min_requests: int | None,
    no_wait: bool, as_json: bool,
) -> None:
    """Point an environment at a published deployment, once it is as warm as the one it replaces;
    with --rolling, in steps (exit status 1 if it rolled back)."""
    settings = _parse_sets(overrides)
    body: dict[str, Any] = {"environment": environment}
    if settings:
        body["autoscaling_settings"] = settings
    plan = {"steps": steps, "step_seconds": step_seconds, "max_error_rate": max_error_rate, "min_requests": min_requests}
    if not rolling and (no_wait or any(v is not None for v in plan.values())):
        raise click.UsageError("--steps, --step-seconds, --max-error-rate, --min-requests and --no-wait need --rolling")
    client = CliClient(as_json)
    mid = model_id(client, model)
    path = model_path(mid, "deployments", deployment, "promote")
    if not rolling:
        if not as_json:
            stderr_console().print(f"promoting {escape(deployment)} to {escape(environment)} (warming it up first)…")
        _report(client.request_object("POST", path, json=body), "promoted", as_json)
        return
    body.update({"rolling": True, **{k: v for k, v in plan.items() if v is not None}})
    promotion = client.request_object("POST", path, json=body)
    if not as_json:
        _say_progress(promotion)
    if not no_wait:
        promotion = _follow(client, model_path(mid, "environments", environment), promotion, as_json)
    if as_json:
        click.echo(json.dumps(promotion))
    if promotion.get("phase") in ("rolled_back", "failed"):
        sys.exit(1)


def _follow(client: CliClient, path: str, promotion: dict[str, Any], as_json: bool) -> dict[str, Any]:
    """Poll the environment at ``path`` until its rolling promotion is finished, saying each step."""
    seen = (promotion.get("phase"), promotion.get("percent"))
    while promotion.get("phase") not in _FINISHED:
        time.sleep(0.5)
        promotion = client.request_object("GET", path).get("promotion") or {}
        now = (promotion.get("phase"), promotion.get("percent"))
        if now != seen and not as_json:
            _say_progress(promotion)
        seen = now
    return promotion


def _say_progress(promotion: dict[str, Any]) -> None:
    phase = promotion.get("phase")
    colour = {"done": "bold green", "rolled_back": "bold red", "failed": "bold red"}.get(str(phase), "bold")
    stderr_console().print(
        f"[{colour}]{escape(str(phase).replace('_', ' '))}[/] {escape(str(promotion.get('environment')))} → "
        f"{escape(str(promotion.get('deployment_id')))} {promotion.get('percent')}%: {escape(str(promotion.get('reason')))}",
        soft_wrap=True,
    )


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
    for column in ("environment", "deployment", "status", "traffic", "predict"):
        table.add_column(column)
    for env in found:
        target = env.get("deployment") or {}
        table.add_row(
            escape(str(env.get("name"))),
            escape(str(env.get("deployment_id") or "—")),
            escape(str(target.get("status") or "—")),
            escape(_traffic_text(env)),
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


def _traffic_text(env: dict[str, Any]) -> str:
    """``abc 90% · def 10%`` while a rolling promotion splits the environment, else ``100%`` or ``—``."""
    traffic = env.get("traffic") or []
    if len(traffic) < 2:
        return "100%" if traffic else "—"
    return " · ".join(f"{t.get('deployment_id')} {t.get('percent')}%" for t in traffic)


@click.command("settings")
@click.argument("model")
@click.argument("deployment", required=False)
@_set_option(
    "Change one autoscaling setting (e.g. --set max_replica=4); repeatable. "
    "All are checked together: a bad value changes nothing."
)
@_json_option
def settings(model: str, deployment: str | None, overrides: tuple[str, ...], as_json: bool) -> None:
    """Show a deployment's autoscaling settings, or change them with --set.

    DEPLOYMENT is an id, or an environment's name (production, development, ...)
    [default: the deployment production points at, else the development one, else
    the newest]."""
    changes = _parse_sets(overrides)
    client = CliClient(as_json)
    found_id, chosen = pick_deployment(client, model, deployment)
    path = model_path(found_id, "deployments", chosen, "autoscaling_settings")
    if changes:
        answer = client.request_object("PATCH", path, json=changes)
        current, status = answer.get("settings") or {}, str(answer.get("status", ""))
    else:
        current, status = client.request_object("GET", path), ""
    if as_json:
        click.echo(json.dumps({"model_id": found_id, "deployment_id": chosen, "settings": current,
                               **({"status": status} if status else {})}))
        return
    if status:
        verb = "[bold green]changed[/]" if status == "ACCEPTED" else "unchanged (already so):"
        stderr_console().print(f"{verb} {escape(', '.join(sorted(changes)))} of deployment {escape(chosen)}", soft_wrap=True)
    table = new_table(f"autoscaling settings of deployment {escape(chosen)}")
    table.add_column("setting")
    table.add_column("value", justify="right")
    for name, value in current.items():
        shown = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        table.add_row(escape(name), escape(shown), style="bold" if name in changes else None)
    print_table(table)


@click.command("delete")
@click.argument("model")
@click.argument("deployment", required=False)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_json_option
def delete(model: str, deployment: str | None, yes: bool, as_json: bool) -> None:
    """Delete a deployment, or with no DEPLOYMENT the model with all its deployments.

    Replicas stop, and a deleted deployment's logs and events go with it. The server
    refuses to delete a deployment an environment points at: promote another first."""
    client = CliClient(as_json)
    found = find_model(client, model)
    name, found_id = str(found["name"]), str(found["id"])
    if deployment is None:
        count = len(found.get("deployments") or [])
        what = f"model {name!r} (id {found_id}), its {count} deployment(s) and its environments"
        path = model_path(found_id)
    else:
        view = client.request_object("GET", model_path(found_id, "deployments", deployment))
        serves = ", ".join(view.get("environments") or [])
        what = (
            f"deployment {view.get('id')} of model {name!r} ({view.get('kind')}, {view.get('status')}"
            + (f"; {serves} point(s) at it" if serves else "") + ")"
        )
        path = model_path(found_id, "deployments", str(view.get("id", deployment)))
    if not yes and not click.confirm(f"Delete {what}?", default=False, err=True):
        fail("nothing deleted", as_json=as_json, payload={"error": "not confirmed", "reason": "nothing deleted"})
    answer = client.request_object("DELETE", path)
    if as_json:
        click.echo(json.dumps(answer))
        return
    stderr_console().print(f"[bold green]deleted[/] {escape(what)}", soft_wrap=True)
