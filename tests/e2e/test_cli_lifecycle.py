"""`swell promote`, `activate`, `deactivate` and `environments` as a user runs them, against a real `swell serve`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from swell_command import ok_json, run, running_server  # type: ignore[import-not-found]

REPO = Path(__file__).resolve().parents[2]
KEY = "e2e-lifecycle-key"




@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with running_server(tmp_path_factory.mktemp("e2e-lifecycle"), KEY, "--tick-seconds", "0.2") as env:
        yield env


def test_promote_into_a_new_environment_then_deactivate_and_activate(server: dict[str, str]) -> None:
    echo = str(REPO / "examples" / "echo")
    first = ok_json(run("push", echo, "--publish", "--json", env=server))
    second = ok_json(run("push", echo, "--publish", "--json", env=server))
    model = first["model_id"]

    created = ok_json(run("environments", "create", "echo", "canary", "--json", env=server))
    assert created["name"] == "canary" and created["deployment_id"] is None
    promoted = ok_json(
        run("promote", "echo", second["deployment_id"], "--environment", "canary", "--set", "max_replica=2", "--json", env=server)
    )
    assert promoted["environments"] == ["canary"] and promoted["autoscaling_settings"]["max_replica"] == 2
    listed = ok_json(run("environments", "list", "echo", "--json", env=server))["environments"]
    assert {e["name"]: e["deployment_id"] for e in listed} == {
        "production": first["deployment_id"], "staging": None, "canary": second["deployment_id"],
    }
    table = run("environments", "list", "echo", env=server)
    assert table.returncode == 0 and "canary" in table.stdout and second["deployment_id"] in table.stdout

    assert ok_json(run("deactivate", model, second["deployment_id"], "--json", env=server))["status"] == "Inactive"
    refused = run("predict", "echo", "--environment", "canary", "-d", '{"x": 1}', "--json", env=server)
    assert refused.returncode == 1 and "activate" in refused.stdout and "Traceback" not in refused.stderr
    assert ok_json(run("activate", model, second["deployment_id"], "--json", env=server))["active"] is True
    answer = ok_json(run("predict", "echo", "--environment", "canary", "-d", '{"x": 1}', "--json", env=server))
    assert answer == {"echo": {"x": 1}}


def test_bad_input_is_one_clear_line(server: dict[str, str]) -> None:
    missing = run("promote", "no-such-model", "abc", env=server)
    assert missing.returncode == 1 and "no-such-model" in missing.stderr and "Traceback" not in missing.stderr
    bad_set = run("promote", "echo", "abc", "--set", "max_replica", env=server)
    assert bad_set.returncode == 2 and "NAME=VALUE" in bad_set.stderr


def test_advise_reads_a_deployment_s_recorded_traffic(server: dict[str, str]) -> None:
    pushed = ok_json(run("push", str(REPO / "examples" / "echo"), "--model-name", "advised", "--publish", "--json", env=server))
    for i in range(5):
        ok_json(run("predict", "advised", "-d", json.dumps({"i": i}), "--json", env=server))
    time.sleep(0.5)  # the loop records the last second at its next tick (0.2 s)
    advice = ok_json(
        run("advise", "--deployment", f"advised/{pushed['deployment_id']}", "--service-time", "0.01", "--json", env=server)
    )
    assert isinstance(advice["findings"], list) and "current" in advice
