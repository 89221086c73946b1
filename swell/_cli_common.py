"""What every client command shares: the client that prints its errors, the tables, uploading a package.

``swell.cli`` and the command modules ``_cli_async``, ``_cli_lifecycle`` and
``_cli_manage`` import this; it imports none of them, so they form no cycle.
Same rules for all: ``--json`` prints one JSON object on stdout, a user error
is one red line (or that JSON object) and exit 1, never a traceback.
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote

import click
from rich.markup import escape

from swell._archive import EXCLUDED, make_archive  # shared with `swell serve --demo`
from swell.client import Client, ClientError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "EXCLUDED",
    "CliClient",
    "fail",
    "find_model",
    "make_archive",
    "model_id",
    "model_path",
    "new_table",
    "pick_deployment",
    "print_pushed",
    "print_table",
    "push_directory",
    "stderr_console",
]

def stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def fail(message: str, *, as_json: bool, payload: dict[str, Any] | None = None, code: int = 1) -> NoReturn:
    if as_json:
        click.echo(json.dumps(payload or {"error": message}))
    else:
        # Messages carry server text and paths: never read them as markup.
        stderr_console().print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
    sys.exit(code)


class CliClient(Client):
    """The server's client for a command: a failed call prints its message (or JSON) and exits 1."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        super().__init__()

    def fail(self, error: ClientError) -> NoReturn:
        fail(error.message, as_json=self.as_json, payload=error.payload)


def model_path(model_id: str, *parts: str) -> str:
    """``/v1/models/{model_id}/…``, each part quoted (a name may hold spaces, '/' or '?')."""
    return "/v1/models/" + "/".join(quote(p, safe="") for p in (model_id, *parts))


def _loose(name: str) -> str:
    return " ".join(name.split()).casefold()


def find_model(client: CliClient, ref: str, answer: httpx.Response | None = None) -> dict[str, Any]:
    """The model ``ref`` names, as the server shows it: by id, else by its name as written
    (quoted on the command line: ``"Test Async"``), else the one model whose name matches
    ignoring case and spacing (said on stderr).  A ref that could mean several models
    fails with each name and id, asking for the id.  ``answer``: the server's answer to
    ``GET /v1/models/{ref}`` if the caller has it already."""
    response = answer if answer is not None else client.send("GET", model_path(ref))
    if response.status_code != 404:
        found = client.check(response)
        if not isinstance(found, dict) or "id" not in found:
            fail(f"{client.url} answered {model_path(ref)} with something other than a model; is SWELL_URL a Swell server?", as_json=client.as_json)
        return found
    models = client.request_object("GET", "/v1/models").get("models") or []
    matches = [m for m in models if isinstance(m, dict) and _loose(str(m.get("name", ""))) == _loose(ref)]
    if len(matches) == 1:
        (found,) = matches
        if not client.as_json:
            stderr_console().print(f"{ref!r} is model {str(found['name'])!r} (id {found['id']})", markup=False)
        return found
    if matches:
        listed = ", ".join(f"{str(m['name'])!r} (id {m['id']})" for m in matches)
        fail(
            f"{ref!r} could mean {len(matches)} models: {listed}; give the id",
            as_json=client.as_json,
            payload={"error": "ambiguous model", "reason": f"{ref!r} could mean {len(matches)} models; give the id",
                     "models": [{"id": m["id"], "name": m["name"]} for m in matches]},
        )
    client.check(response)  # the server's 404, with its reason
    fail(f"no model {ref!r}", as_json=client.as_json)  # not reached: check fails on a 404


def model_id(client: CliClient, ref: str) -> str:
    """The id of the model ``ref`` names (:func:`find_model`): what URLs use."""
    return str(find_model(client, ref)["id"])


def pick_deployment(client: CliClient, model: str, deployment: str | None) -> tuple[str, str]:
    """(model id, deployment id): the one asked for (an id, an environment's name or
    ``development``), else production's, development's or the newest."""
    info = find_model(client, model)
    model_id = str(info["id"])
    environments = info.get("environments") or {}
    if deployment:
        # A name the model resolves here is shown as the id it stands for; one that points
        # at nothing goes to the server as it is, which says so.
        if any(d.get("id") == deployment for d in info.get("deployments") or []):
            return model_id, deployment
        named = info.get("development_deployment_id") if deployment == "development" else environments.get(deployment)
        return model_id, str(named or deployment)
    chosen = environments.get("production") or info.get("development_deployment_id")
    if not chosen and info.get("deployments"):
        chosen = info["deployments"][-1]["id"]
    if not chosen:
        fail(f"model {info.get('name', model)!r} has no deployment yet; push one with `swell push DIR`", as_json=client.as_json)
    return model_id, str(chosen)


def new_table(title: str | None = None, caption: str | None = None) -> Any:
    """The client commands' table look: a rule under the header, no outer edge."""
    from rich import box
    from rich.table import Table

    return Table(title=title, caption=caption, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))


def print_table(table: Any, *, soft_wrap: bool = False) -> None:
    from rich.console import Console

    Console(highlight=False, soft_wrap=soft_wrap).print(table)


def _model_name(directory: Path) -> str:
    import yaml

    try:
        raw = yaml.safe_load((directory / "config.yaml").read_text()) or {}
        if isinstance(raw, dict) and raw.get("model_name"):
            return str(raw["model_name"])
    except (OSError, yaml.YAMLError):
        pass
    return directory.resolve().name


def push_directory(
    client: CliClient, directory: Path, *, model_name: str | None, publish: bool, promote: bool, environment: str
) -> dict[str, Any]:
    """Upload DIRECTORY and return the server's answer; `push` and `watch` share it."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    as_json = client.as_json
    if not (directory / "config.yaml").is_file():
        fail(f"{directory} has no config.yaml; a model package is a directory with config.yaml and model/model.py", as_json=as_json)
    name = model_name or _model_name(directory)
    params = {"model_name": name, "publish": str(publish).lower(), "promote": str(promote).lower(), "environment": environment}
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "package.tar.gz"
        make_archive(directory, archive)
        size = archive.stat().st_size
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn(),
            console=stderr_console(), transient=True, disable=as_json,
        ) as progress:
            task = progress.add_task(f"uploading {name}", total=size)

            def chunks() -> Iterator[bytes]:
                with archive.open("rb") as f:
                    while chunk := f.read(256 * 1024):
                        progress.advance(task, len(chunk))
                        yield chunk
                progress.update(task, description=f"building {name} (requirements, build_commands)")

            return client.request_object(
                "POST",
                "/v1/models/push",
                params=params,
                content=chunks(),
                headers={"content-type": "application/gzip"},
            )


def print_pushed(client: CliClient, result: dict[str, Any]) -> None:
    out = stderr_console()
    summary = (
        f"{result['model_name']}: model {result['model_id']}, "
        f"deployment {result['deployment_id']} ({result['kind']}), status {result['status']}"
        + (f", {result['environment']} points at it" if result.get("environment") else "")
    )
    out.print(f"[bold green]pushed[/] {escape(summary)}")
    for warning in result.get("warnings", []):
        out.print(f"[yellow]warning:[/] {escape(str(warning))}")
    out.print(f"predict: POST {client.url}{result['predict_url']}", markup=False)
    name = shlex.quote(str(result["model_name"]))  # "Test Async" must be pasted as one word
    out.print(
        f"logs: swell logs {name} --deployment {result['deployment_id']} -f"
        f"  (a failed load's traceback is there; events: swell events {name})",
        markup=False,
    )
