"""``swell predict --async`` and ``swell request``: async requests from the command line.

Same rules as the rest of the CLI (``swell.cli``): ``--json`` prints one JSON
object on stdout, a user error is one red line, never a traceback.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from swell._cli_common import CliClient, fail, stderr_console

__all__ = ["request_command", "submit_async"]

FINISHED = ("SUCCEEDED", "FAILED", "EXPIRED", "CANCELED")
_POLL_SECONDS = 0.5


def submit_async(
    client: CliClient,
    predict_path: str,
    body: bytes,
    *,
    webhook: str | None,
    priority: int | None,
    wait: bool,
) -> None:
    """Queue ``body`` as an async request for the deployment behind ``predict_path``."""
    try:
        model_input = json.loads(body or b"{}")
    except ValueError as exc:
        fail(f"an async request's input must be JSON ({exc})", as_json=client.as_json)
    request: dict[str, Any] = {"model_input": model_input}
    if webhook is not None:
        request["webhook_endpoint"] = webhook
    if priority is not None:
        request["priority"] = priority
    path = predict_path.removesuffix("/predict") + "/async_predict"
    accepted = client.request_object("POST", path, json=request)
    request_id = str(accepted.get("request_id"))
    if not wait:
        if client.as_json:
            click.echo(json.dumps(accepted))
        else:
            click.echo(request_id)
            stderr_console().print(f"queued; follow it with: swell request {request_id} [--wait]", style="dim")
        return
    _show(client, _wait(client, request_id))


def _view(client: CliClient, request_id: str) -> dict[str, Any]:
    return client.request_object("GET", f"/async_request/{request_id}")


def _wait(client: CliClient, request_id: str) -> dict[str, Any]:
    """Poll until the request has finished, with a spinner on stderr naming its status."""
    view = _view(client, request_id)
    if view.get("status") in FINISHED:
        return view
    with stderr_console().status(f"request {request_id}: {view.get('status')}") as status:
        while view.get("status") not in FINISHED:
            time.sleep(_POLL_SECONDS)
            view = _view(client, request_id)
            status.update(f"request {request_id}: {view.get('status')} (attempts: {view.get('attempts')})")
    return view


def _show(client: CliClient, view: dict[str, Any]) -> None:
    """The request's result (or its error, exit status 1) as people or scripts read it."""
    status = view.get("status")
    failed = status in FINISHED and status != "SUCCEEDED"
    if client.as_json:
        click.echo(json.dumps(view))
        if failed:
            sys.exit(1)
    elif status == "SUCCEEDED":
        result = view.get("result")
        click.echo(result if isinstance(result, str) else json.dumps(result))
    elif failed:
        errors = view.get("errors") or [{}]
        fail(f"request {view.get('request_id')} {status}: {errors[0].get('message', '')}", as_json=False)
    else:
        click.echo(f"{view.get('request_id')}: {status} (attempts: {view.get('attempts')}, webhook: {view.get('webhook_status')})")


@click.command("request")
@click.argument("request_id")
@click.option("--wait", is_flag=True, help="Wait until it has finished, then print its result.")
@click.option("--cancel", is_flag=True, help="Cancel it (only while it is QUEUED).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the request's whole view).")
def request_command(request_id: str, wait: bool, cancel: bool, as_json: bool) -> None:
    """An async request's status and result (see `swell predict --async`)."""
    client = CliClient(as_json)
    if cancel:
        answer = client.request_object("DELETE", f"/async_request/{request_id}")
        click.echo(json.dumps(answer) if as_json else f"{request_id}: {answer.get('status')}")
        return
    view = _wait(client, request_id) if wait else _view(client, request_id)
    _show(client, view)
