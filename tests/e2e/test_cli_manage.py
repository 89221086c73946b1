"""`swell keys`, `swell secrets` and `swell watch` as a user runs them, against a real `swell serve`."""

from __future__ import annotations

import json
import os
import pty
import queue
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from swell_command import ok_json, run, running_server, swell_command  # type: ignore[import-not-found]
import yaml

REPO = Path(__file__).resolve().parents[2]
KEY = "e2e-manage-key"




def user_error(result: subprocess.CompletedProcess[str]) -> str:
    """A refused command: exit status 1, a message, no traceback."""
    assert result.returncode == 1, f"rc {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout
    return result.stderr + result.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    data_dir = tmp_path_factory.mktemp("e2e-manage")
    with running_server(data_dir, KEY, "--tick-seconds", "0.2", "--drain-grace-seconds", "5") as env:
        yield env


def _package(root: Path, name: str, model: str, config: dict[str, Any] | None = None) -> Path:
    shutil.copytree(REPO / "examples" / "echo", root)
    raw = yaml.safe_load((root / "config.yaml").read_text())
    raw.update({"model_name": name, **(config or {})})
    (root / "config.yaml").write_text(yaml.safe_dump(raw))
    (root / "model" / "model.py").write_text(model)
    return root


def _predict(env: dict[str, str], model: str, body: str, *, development: bool = False) -> Any:
    return ok_json(run("predict", model, *(["--development"] if development else []), "-d", body, "--json", env=env))


# --------------------------------------------------------------------------- keys


def test_keys_create_list_use_revoke(server: dict[str, str], tmp_path: Path) -> None:
    pushed = ok_json(run("push", str(_package(tmp_path / "pkg", "keyed", ECHO)), "--publish", "--promote", "--json", env=server))

    created = ok_json(run("keys", "create", "--name", "ci", "--type", "invoke", "--model", "keyed", "--json", env=server))
    assert {"id", "name", "type", "model_ids", "created_at", "key"} <= created.keys()
    assert created["name"] == "ci" and created["type"] == "invoke"
    assert created["model_ids"] == [pushed["model_id"]]  # the name was resolved to the model's id
    secret = created["key"]
    assert secret and secret != KEY

    listed = ok_json(run("keys", "list", "--json", env=server))
    mine = [k for k in listed["api_keys"] if k["id"] == created["id"]]
    assert len(mine) == 1 and mine[0]["type"] == "invoke" and mine[0]["model_ids"] == [pushed["model_id"]]
    assert "key" not in mine[0]
    table = run("keys", "list", env=server)
    assert table.returncode == 0 and created["id"] in table.stdout and "ci" in table.stdout
    for shown in (json.dumps(listed), table.stdout, table.stderr):
        assert secret not in shown, "a key's secret was shown after its creation"

    as_invoker = {**server, "SWELL_API_KEY": secret}
    assert _predict(as_invoker, pushed["model_id"], '{"n": 1}') == {"echo": {"n": 1}}
    refused = user_error(run("keys", "list", "--json", env=as_invoker))
    assert "error" in json.loads(refused)  # an invoke key manages nothing

    revoked = ok_json(run("keys", "revoke", created["id"], "--json", env=server))
    assert revoked == {"id": created["id"], "revoked": True}
    assert created["id"] not in json.dumps(ok_json(run("keys", "list", "--json", env=server)))
    after = run("predict", pushed["model_id"], "-d", "{}", env=as_invoker)
    assert "Traceback" not in after.stderr and after.returncode == 1, "a revoked key still works"


def test_keys_create_prints_the_secret_once_with_a_warning(server: dict[str, str]) -> None:
    created = run("keys", "create", "--name", "laptop", env=server)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret and "\n" not in secret  # stdout holds the key alone: `swell keys create > key.txt`
    assert "only time" in created.stderr and "laptop" in created.stderr

    # A new workspace key manages like the first one.
    workspace = {**server, "SWELL_API_KEY": secret}
    listed = ok_json(run("keys", "list", "--json", env=workspace))
    assert any(k["name"] == "laptop" and k["type"] == "workspace" for k in listed["api_keys"])


def test_keys_bad_input(server: dict[str, str]) -> None:
    unknown = user_error(run("keys", "revoke", "key-that-does-not-exist", env=server))
    assert "key-that-does-not-exist" in unknown
    no_model = user_error(run("keys", "create", "--type", "invoke", "--model", "no-such-model", env=server))
    assert "no-such-model" in no_model
    usage = run("keys", "create", "--model", "m", env=server)  # --model only limits invoke keys
    assert usage.returncode == 2 and "--type invoke" in usage.stderr


# --------------------------------------------------------------------------- secrets


def test_secrets_set_list_replace_delete(server: dict[str, str]) -> None:
    first = ok_json(run("secrets", "set", "hf_token", "--json", env=server, stdin="hunter2-first\n"))
    assert first["name"] == "hf_token" and {"created_at", "updated_at"} <= first.keys()
    assert "hunter2" not in json.dumps(first)

    replaced = run("secrets", "set", "hf_token", env=server, stdin="hunter2-second")
    assert replaced.returncode == 0 and "hf_token" in replaced.stderr

    listed = ok_json(run("secrets", "list", "--json", env=server))
    entry = [s for s in listed["secrets"] if s["name"] == "hf_token"]
    assert len(entry) == 1 and set(entry[0]) == {"name", "created_at", "updated_at"}
    table = run("secrets", "list", env=server)
    assert table.returncode == 0 and "hf_token" in table.stdout
    for shown in (json.dumps(listed), table.stdout, table.stderr, replaced.stdout, replaced.stderr):
        assert "hunter2" not in shown, "a secret's value was shown"

    deleted = ok_json(run("secrets", "delete", "hf_token", "--json", env=server))
    assert deleted == {"name": "hf_token", "deleted": True}
    assert "hf_token" not in [s["name"] for s in ok_json(run("secrets", "list", "--json", env=server))["secrets"]]
    gone = user_error(run("secrets", "delete", "hf_token", env=server))
    assert "hf_token" in gone


def test_secrets_set_from_a_terminal_does_not_echo_the_value(server: dict[str, str]) -> None:
    main, terminal = pty.openpty()
    process = subprocess.Popen([*swell_command(), "secrets", "set", "typed_secret"], stdin=terminal, stdout=terminal,
                               stderr=terminal, env={**server, "TERM": "dumb"}, close_fds=True)
    os.close(terminal)
    screen = b""

    def read_until(needle: bytes, timeout: float) -> None:
        nonlocal screen
        deadline = time.monotonic() + timeout
        while needle not in screen:
            left = deadline - time.monotonic()
            assert left > 0, f"waited for {needle!r}; the terminal shows {screen!r}"
            if select.select([main], [], [], left)[0]:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the process ended and closed the terminal
                    chunk = b""
                if not chunk:
                    break
                screen += chunk

    try:
        read_until(b"value of typed_secret", 60)
        os.write(main, b"typed-hunter2\n")
        read_until(b"typed_secret (updated", 60)
        assert process.wait(timeout=30) == 0, screen
    finally:
        if process.poll() is None:
            process.kill()
        os.close(main)
    assert b"typed-hunter2" not in screen, "the value was echoed on the terminal"
    names = [s["name"] for s in ok_json(run("secrets", "list", "--json", env=server))["secrets"]]
    assert "typed_secret" in names


def test_secrets_set_refuses_an_empty_value(server: dict[str, str]) -> None:
    assert "no value" in user_error(run("secrets", "set", "empty_one", env=server, stdin=""))


def test_a_secret_set_with_the_cli_reaches_a_model_that_declares_it(server: dict[str, str], tmp_path: Path) -> None:
    ok_json(run("secrets", "set", "api_token", "--json", env=server, stdin="tok-123\n"))
    model = (
        "class Model:\n"
        "    def __init__(self, **kwargs):\n"
        "        self._secrets = kwargs['secrets']\n"
        "    def predict(self, model_input):\n"
        "        return {'token': self._secrets['api_token']}\n"
    )
    package = _package(tmp_path / "pkg", "secretive", model, {"secrets": {"api_token": None}})
    pushed = ok_json(run("push", str(package), "--publish", "--promote", "--json", env=server))
    assert _predict(server, pushed["model_id"], "{}") == {"token": "tok-123"}  # one trailing newline stripped


# --------------------------------------------------------------------------- watch

ECHO = "class Model:\n    def predict(self, model_input):\n        return {'echo': model_input}\n"
ECHO_V2 = "class Model:\n    def predict(self, model_input):\n        return {'echo': model_input, 'version': 2}\n"


class _Lines:
    """A stream read on a thread, so tests can wait for a line with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)

    def next(self, timeout: float, what: str) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no {what} within {timeout:.0f} s; so far:\n{''.join(self.seen)}")
        self.seen.append(line)
        return line

    def everything(self) -> str:
        """All the stream said, once the process has ended."""
        self.thread.join(timeout=10)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "".join(self.seen)

    def wait_for(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.next(max(0.1, deadline - time.monotonic()), f"line with {needle!r}")
            if needle in line:
                return line


def _watch(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*swell_command(), "watch", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def _stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGINT)  # as Ctrl-C
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def test_watch_pushes_each_saved_change_and_the_next_predict_runs_it(server: dict[str, str], tmp_path: Path) -> None:
    package = _package(tmp_path / "pkg", "watched", ECHO)
    watcher = _watch(server, str(package), "--json")
    try:
        assert watcher.stdout is not None and watcher.stderr is not None
        out, err = _Lines(watcher.stdout), _Lines(watcher.stderr)
        first = json.loads(out.next(120, "first push"))
        assert first["model_name"] == "watched" and first["kind"] == "development" and first["changed"] == []
        assert _predict(server, "watched", '{"x": 1}', development=True) == {"echo": {"x": 1}}

        (package / "model" / "model.py").write_text(ECHO_V2)  # a save in the editor
        second = json.loads(out.next(60, "push after the edit"))
        assert second["changed"] == [os.path.join("model", "model.py")]
        assert second["model_id"] == first["model_id"] and second["kind"] == "development"
        # The push answered: the very next predict runs the new code.
        assert _predict(server, "watched", '{"x": 2}', development=True) == {"echo": {"x": 2}, "version": 2}

        # Editor droppings and byte caches are no change.
        (package / "model" / ".model.py.swp").write_text("swap")
        (package / "model" / "__pycache__").mkdir(exist_ok=True)
        (package / "model" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"x")
        time.sleep(2)
        assert out.lines.empty(), f"pushed for an ignored file: {out.lines.get()}"
        assert watcher.poll() is None, "".join(err.seen)
    finally:
        rc = _stop(watcher)
    assert rc == 0
    assert "Traceback" not in err.everything()


def test_watch_reports_a_bad_push_and_keeps_watching(server: dict[str, str], tmp_path: Path) -> None:
    package = _package(tmp_path / "pkg", "watched-bad", ECHO)
    watcher = _watch(server, str(package))
    try:
        assert watcher.stderr is not None
        err = _Lines(watcher.stderr)
        err.wait_for("watching", 120)
        good_config = (package / "config.yaml").read_text()

        (package / "config.yaml").write_text(good_config + "no_such_key: 1\n")
        err.wait_for("error", 60)
        err.wait_for("no_such_key", 10)  # the server's reason names the bad key
        assert watcher.poll() is None, "swell watch stopped after a bad push"

        (package / "config.yaml").write_text(good_config)
        (package / "model" / "model.py").write_text(ECHO_V2)
        pushed = err.wait_for("pushed", 60)
        assert "deployment" in pushed and "status" in pushed
        assert _predict(server, "watched-bad", "[1]", development=True) == {"echo": [1], "version": 2}
    finally:
        rc = _stop(watcher)
    assert rc == 0
    said = err.everything()
    assert "Traceback" not in said and "KeyboardInterrupt" not in said
