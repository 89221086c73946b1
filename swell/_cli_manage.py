"""``swell keys``, ``swell secrets`` and ``swell watch``: a workspace from the command line.

Same rules as the rest of the CLI (``swell.cli``): the server is found through
``SWELL_URL`` and ``SWELL_API_KEY``, ``--json`` prints JSON objects on stdout, and a
user error is one red line, never a traceback.  A secret's value and an API key's
secret are never printed, except the new key once, by ``keys create``.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
from rich.markup import escape

from swell._cli_common import (
    EXCLUDED,
    CliClient,
    fail,
    model_id,
    new_table,
    print_pushed,
    print_table,
    push_directory,
    stderr_console,
)

_json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def _when(value: Any) -> str:
    """A timestamp (epoch seconds or ISO text) as local ``YYYY-MM-DD HH:MM``; ``—`` for none."""
    if value is None or value == "":
        return "—"
    try:
        if isinstance(value, (int, float)):
            moment = _dt.datetime.fromtimestamp(float(value), tz=_dt.UTC)
        else:
            moment = _dt.datetime.fromisoformat(str(value))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=_dt.UTC)
    except (ValueError, OverflowError, OSError):
        return str(value)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def _say(text: str) -> None:
    """One message on stderr, never wrapped: it may hold a path or an id to paste."""
    stderr_console().print(text, soft_wrap=True)


# --------------------------------------------------------------------------- keys


@click.group()
def keys() -> None:
    """Create, list and revoke API keys (workspace keys manage, invoke keys only predict)."""


@keys.command("create")
@click.option("--name", default=None, help="A label to recognise the key by.")
@click.option(
    "--type", "key_type", type=click.Choice(["workspace", "invoke"]), default="workspace", show_default=True,
    help="workspace: manages everything; invoke: may only call predict.",
)
@click.option("--model", "models", multiple=True, metavar="MODEL", help="Limit an invoke key to this model (name or id); repeat for more.")
@_json_option
def keys_create(name: str | None, key_type: str, models: tuple[str, ...], as_json: bool) -> None:
    """Create an API key; its secret is printed once and never again."""
    if models and key_type != "invoke":
        raise click.UsageError("--model limits an invoke key; add --type invoke")
    client = CliClient(as_json)
    # Resolve names to ids here so a typo fails now, with the server's 404, not at predict time.
    model_ids = [model_id(client, m) for m in models]
    body = {"name": name, "type": key_type, "model_ids": model_ids or None}
    created = client.request_object("POST", "/v1/api_keys", json=body)
    if as_json:
        click.echo(json.dumps(created))
        return
    scope = ""
    if created.get("model_ids"):
        scope = " for " + ", ".join(str(m) for m in created["model_ids"])
    label = f" {created['name']!r}" if created.get("name") else ""
    _say(f"[bold green]created[/] {escape(str(created.get('type', key_type)))} key{escape(label)} "
         f"(id {escape(str(created.get('id')))}){escape(scope)}")
    # The secret alone on stdout, so `swell keys create > file` keeps just it.
    click.echo(created["key"])
    _say("[yellow]warning:[/] this is the only time the key is shown; store it now "
         "(lost keys cannot be recovered, only revoked and replaced)")


@keys.command("list")
@_json_option
def keys_list(as_json: bool) -> None:
    """API keys with their type, models and last use (never their secrets)."""
    client = CliClient(as_json)
    found = client.request_object("GET", "/v1/api_keys").get("api_keys", [])
    # The server never sends a secret here; if one ever did, it still stays off the screen.
    found = [{k: v for k, v in entry.items() if k != "key"} for entry in found if isinstance(entry, dict)]
    if as_json:
        click.echo(json.dumps({"api_keys": found}))
        return
    if not found:
        _say("no API keys; create one with `swell keys create`")
        return
    table = new_table(f"API keys at {client.url}")
    for column in ("id", "name", "type", "models", "created", "last used"):
        table.add_column(column, no_wrap=column in ("id", "created", "last used"))
    for entry in found:
        table.add_row(
            escape(str(entry.get("id"))),
            escape(str(entry.get("name") or "—")),
            escape(str(entry.get("type"))),
            escape(", ".join(str(m) for m in entry.get("model_ids") or []) or "all"),
            _when(entry.get("created_at")),
            _when(entry.get("last_used_at")),
        )
    print_table(table)


@keys.command("revoke")
@click.argument("key_id")
@_json_option
def keys_revoke(key_id: str, as_json: bool) -> None:
    """Revoke an API key by its id (from `swell keys list`); it stops working at once."""
    client = CliClient(as_json)
    result = client.request_object("DELETE", f"/v1/api_keys/{quote(key_id, safe='')}")
    if as_json:
        click.echo(json.dumps(result))
        return
    _say(f"[bold green]revoked[/] key {escape(str(result.get('id', key_id)))}")


# --------------------------------------------------------------------------- secrets


@click.group()
def secrets() -> None:
    """Workspace secrets, given to the replicas of packages that declare them."""


def read_secret_value(stream: Any, *, is_tty: bool, prompt: Any) -> str:
    """The value from a terminal (hidden) or all of a pipe, less one trailing newline."""
    if is_tty:
        return str(prompt())
    value = str(stream.read())
    if value.endswith("\r\n"):
        return value[:-2]
    return value.removesuffix("\n")


@secrets.command("set")
@click.argument("name")
@_json_option
def secrets_set(name: str, as_json: bool) -> None:
    """Create or replace secret NAME with a value read from stdin (hidden when typed)."""
    value = read_secret_value(
        sys.stdin,
        is_tty=sys.stdin.isatty(),
        prompt=lambda: click.prompt(f"value of {name}", hide_input=True, err=True),
    )
    if value == "":
        fail(f"no value for secret {name!r}: type it when asked, or pipe it in "
              f"(printf %s \"$VALUE\" | swell secrets set {name})", as_json=as_json)
    client = CliClient(as_json)
    result = client.request_object("POST", "/v1/secrets", json={"name": name, "value": value})
    result.pop("value", None)
    if as_json:
        click.echo(json.dumps(result))
        return
    _say(f"[bold green]set[/] secret {escape(str(result.get('name', name)))} "
         f"(updated {_when(result.get('updated_at'))})")


@secrets.command("list")
@_json_option
def secrets_list(as_json: bool) -> None:
    """Secret names with when they were set (never their values)."""
    client = CliClient(as_json)
    found = client.request_object("GET", "/v1/secrets").get("secrets", [])
    found = [{k: v for k, v in entry.items() if k != "value"} for entry in found if isinstance(entry, dict)]
    if as_json:
        click.echo(json.dumps({"secrets": found}))
        return
    if not found:
        _say("no secrets; set one with `swell secrets set NAME`")
        return
    table = new_table(f"Secrets at {client.url}")
    for column in ("name", "created", "updated"):
        table.add_column(column, no_wrap=True)
    for entry in found:
        table.add_row(escape(str(entry.get("name"))), _when(entry.get("created_at")), _when(entry.get("updated_at")))
    print_table(table)


@secrets.command("delete")
@click.argument("name")
@_json_option
def secrets_delete(name: str, as_json: bool) -> None:
    """Delete secret NAME; replicas started after this no longer get it."""
    client = CliClient(as_json)
    result = client.request_object("DELETE", f"/v1/secrets/{quote(name, safe='')}")
    if as_json:
        click.echo(json.dumps(result))
        return
    _say(f"[bold green]deleted[/] secret {escape(str(result.get('name', name)))}")


# --------------------------------------------------------------------------- watch

# Editor droppings (vim swap and its 4913 probe, emacs locks and backups) change on
# every keystroke and are no part of the package.
_IGNORED_FILES = ("*.pyc", "*.pyo", "*.swp", "*.swo", "*.swx", "*~", ".#*", "#*#", "4913", ".*.kate-swp")

Snapshot = dict[str, tuple[int, int]]
"""A package directory's files: relative path → (mtime in ns, size)."""


def ignored(name: str) -> bool:
    return name in EXCLUDED or any(fnmatch.fnmatch(name, pattern) for pattern in _IGNORED_FILES)


def snapshot(directory: Path) -> Snapshot:
    found: Snapshot = {}
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not ignored(d)]
        for name in files:
            if ignored(name):
                continue
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError:  # deleted between listing and stat: the next poll sees it gone
                continue
            found[os.path.relpath(path, directory)] = (st.st_mtime_ns, st.st_size)
    return found


def changes(before: Snapshot, after: Snapshot) -> list[str]:
    """Paths added, removed or modified between two snapshots, sorted."""
    return sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))


@dataclass
class Debounce:
    """Push once a burst of saves has gone quiet.

    An editor's save is often several writes (temp file, rename, chmod); pushing
    after ``quiet_s`` without a change sends one deployment per save, and
    ``max_wait_s`` bounds the wait when something never stops writing.
    """

    quiet_s: float = 0.3
    max_wait_s: float = 5.0
    _first: float | None = field(default=None, repr=False)
    _last: float | None = field(default=None, repr=False)

    def step(self, changed: bool, now: float) -> bool:
        """Record one poll; True when it is time to push."""
        if changed:
            if self._first is None:
                self._first = now
            self._last = now
        if self._first is None or self._last is None:
            return False
        if now - self._last >= self.quiet_s or now - self._first >= self.max_wait_s:
            self._first = self._last = None
            return True
        return False


def _push_dev(client: CliClient, directory: Path, model_name: str | None, changed: Iterable[str]) -> bool:
    """One development push; a failure (already printed by the client) keeps the watch going."""
    try:
        result = push_directory(
            client, directory, model_name=model_name, publish=False, promote=False, environment="production"
        )
    except SystemExit:  # fail printed the reason (bad package, server down, …)
        return False
    changed = list(changed)
    if client.as_json:
        click.echo(json.dumps({**result, "changed": changed}), nl=True)
        sys.stdout.flush()
        return True
    if not changed:
        print_pushed(client, result)
    else:
        what = changed[0] + (f" and {len(changed) - 1} more" if len(changed) > 1 else "")
        _say(
            f"{time.strftime('%H:%M:%S')} [bold green]pushed[/] {escape(what)} → deployment "
            f"{escape(str(result['deployment_id']))}, status {escape(str(result['status']))}"
        )
    _await_load(client, result)
    return True


def _await_load(client: CliClient, result: dict[str, Any], *, poll_s: float = 0.5, most_s: float = 600.0) -> None:
    """While replicas load the new code, wait: a failed load's traceback is what the watch shows next."""
    path = f"/v1/models/{result['model_id']}/deployments/{result['deployment_id']}"
    status = str(result.get("status"))
    deadline = time.monotonic() + most_s
    while status in ("Waking up", "Loading model") and time.monotonic() < deadline:
        time.sleep(poll_s)
        view = client.request_object("GET", path)
        status = str(view.get("status"))
        if status in ("Failed", "Unhealthy") or view.get("error"):
            _say(f"{time.strftime('%H:%M:%S')} [bold red]load failed[/] ({escape(status)}):")
            stderr_console().print(str(view.get("error") or "no error reported"), markup=False, highlight=False)
            _say(f"  full log: swell logs {escape(shlex.quote(str(result['model_name'])))} --deployment {escape(str(result['deployment_id']))}")
            return
        if status == "Active":
            _say(f"{time.strftime('%H:%M:%S')} [green]ready[/]: the new code serves")


@click.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model-name", default=None, help="Model name [default: config.yaml's model_name, else the directory's name].")
@click.option("--poll-seconds", default=0.5, type=float, hidden=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per push.")
def watch(directory: Path, model_name: str | None, poll_seconds: float, as_json: bool) -> None:
    """Push DIRECTORY as the development deployment, then again on every saved change (Ctrl-C stops).

    With --json, one JSON object per line and push: the push's answer plus "changed".
    """
    client = CliClient(as_json)
    debounce = Debounce()
    # Ctrl-C (SIGINT) is how a watch ends, as it is for `swell serve`, even when whatever
    # started this process ignores SIGINT (a shell's background job, some CI runners).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        pushed = snapshot(directory)
        _push_dev(client, directory, model_name, [])
        if not as_json:
            _say(f"watching {escape(str(directory))} for changes (Ctrl-C to stop)")
        seen = pushed
        while True:
            time.sleep(poll_seconds)
            now = snapshot(directory)
            if debounce.step(now != seen, time.monotonic()):
                changed = changes(pushed, now)
                if changed:  # a file saved and then restored needs no deployment
                    pushed = now  # before the upload: a save during it is pushed next
                    _push_dev(client, directory, model_name, changed)
            seen = now
    except KeyboardInterrupt:
        sys.exit(0)
