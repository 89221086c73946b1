"""`swell logs` and `swell events` as a user runs them, against a real `swell serve`."""

from __future__ import annotations

import json
import subprocess
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from swell_command import ok_json, run, running_server, swell_command  # type: ignore[import-not-found]

KEY = "e2e-observe-key"

PRINTER = '''
class Model:
    def load(self):
        print("hello from load", flush=True)

    def predict(self, model_input):
        print(f"predicting {model_input}", flush=True)
        return model_input
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with running_server(tmp_path_factory.mktemp("e2e-observe"), KEY, "--tick-seconds", "0.2") as env:
        yield env


def _package(root: Path, source: str) -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.py").write_text(textwrap.dedent(source))
    (root / "config.yaml").write_text("model_name: printer\n")
    return root


def test_logs_and_events_of_a_model(server: dict[str, str], tmp_path: Path) -> None:
    pushed = ok_json(run("push", str(_package(tmp_path / "printer", PRINTER)), "--json", env=server))
    assert ok_json(run("predict", "printer", "-d", '{"x": 1}', "--json", env=server)) == {"x": 1}

    logs = ok_json(run("logs", "printer", "--json", env=server))
    assert logs["deployment_id"] == pushed["deployment_id"]  # the development deployment, found by name
    texts = [line["text"] for line in logs["lines"]]
    assert "hello from load" in texts and "predicting {'x': 1}" in texts
    shown = run("logs", "printer", "--since", "10m", env=server)
    assert shown.returncode == 0 and "predicting {'x': 1}" in shown.stdout and "swell: wake" in shown.stdout
    bad = run("logs", "printer", "--since", "soon", env=server)
    assert bad.returncode == 1 and "since" in bad.stderr and "10m" in bad.stderr and "Traceback" not in bad.stderr

    events = ok_json(run("events", "printer", "--deployment", pushed["deployment_id"], "--json", env=server))["events"]
    kinds = [event["kind"] for event in events]
    assert kinds[:2] == ["wake", "replica_started"] and "replica_ready" in kinds
    table = run("events", "printer", env=server)
    assert table.returncode == 0 and "replica_ready" in table.stdout and "wake: 1 request(s) waiting" in table.stdout


def test_logs_follow_prints_new_lines_until_interrupted(server: dict[str, str], tmp_path: Path) -> None:
    ok_json(run("push", str(_package(tmp_path / "printer", PRINTER)), "--json", env=server))
    follower = subprocess.Popen(
        [*swell_command(), "logs", "printer", "-f", "--json"], env=server, stdout=subprocess.PIPE, text=True
    )
    stopper = threading.Timer(60, follower.terminate)  # bounds the read below
    stopper.start()
    try:
        assert ok_json(run("predict", "printer", "-d", '{"n": 42}', "--json", env=server)) == {"n": 42}
        assert follower.stdout is not None
        seen = []
        for line in follower.stdout:  # one JSON object per line
            seen.append(json.loads(line))
            if seen[-1]["text"] == "predicting {'n': 42}":
                break
        assert seen and seen[-1]["text"] == "predicting {'n': 42}", seen[-5:]
    finally:
        stopper.cancel()
        follower.terminate()
        follower.wait(timeout=30)


def test_push_of_code_that_does_not_compile_shows_the_error_first(server: dict[str, str], tmp_path: Path) -> None:
    typo = _package(tmp_path / "typo", "class Model:\n    def predict(self, x)\n        return x\n")
    for command in (("push", str(typo)), ("push", str(typo), "--publish")):
        result = run(*command, env=server)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        first = result.stderr.strip().splitlines()[0]
        assert "does not compile" in first, result.stderr
        assert 'File "model/model.py", line 2' in result.stderr and "SyntaxError" in result.stderr
    pushed = run("push", str(_package(tmp_path / "fine", PRINTER)), env=server)
    assert pushed.returncode == 0 and "swell logs printer --deployment" in pushed.stderr
