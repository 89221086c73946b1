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


def test_promote_rolling_moves_the_traffic_in_steps_and_says_each(server: dict[str, str]) -> None:
    echo = str(REPO / "examples" / "echo")
    first = ok_json(run("push", echo, "--model-name", "rolled", "--publish", "--json", env=server))
    second = ok_json(run("push", echo, "--model-name", "rolled", "--publish", "--json", env=server))
    done = run("promote", "rolled", second["deployment_id"], "--rolling", "--steps", "50,100", "--step-seconds", "1", env=server)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert any(line.startswith("warming") for line in lines)
    assert any(line.startswith("shifting") and "50%" in line for line in lines)
    assert lines[-1].startswith("done") and second["deployment_id"] in lines[-1]
    listed = ok_json(run("environments", "list", "rolled", "--json", env=server))["environments"]
    production = next(e for e in listed if e["name"] == "production")
    assert production["deployment_id"] == second["deployment_id"] and production["promotion"]["phase"] == "done"

    back = ok_json(run("promote", "rolled", first["deployment_id"], "--rolling", "--steps", "100", "--json", env=server))
    assert back["phase"] == "done" and back["deployment_id"] == first["deployment_id"]
    status = ok_json(run("status", "rolled", "--json", env=server))["models"][0]["deployments"]
    assert {d["id"]: d["traffic"] for d in status} == {first["deployment_id"]: {"production": 100}, second["deployment_id"]: {}}


def test_promote_rolling_refuses_bad_plans_in_one_line(server: dict[str, str]) -> None:
    echo = str(REPO / "examples" / "echo")
    pushed = ok_json(run("push", echo, "--model-name", "unrolled", "--publish", "--json", env=server))
    bad = run("promote", "unrolled", pushed["deployment_id"], "--rolling", "--steps", "50,10", env=server)
    assert bad.returncode == 1 and "steps" in bad.stderr and "Traceback" not in bad.stderr
    not_a_number = run("promote", "unrolled", pushed["deployment_id"], "--rolling", "--steps", "ten,100", env=server)
    assert not_a_number.returncode == 2 and "10,50,100" in not_a_number.stderr
    needs_rolling = run("promote", "unrolled", pushed["deployment_id"], "--step-seconds", "5", env=server)
    assert needs_rolling.returncode == 2 and "--rolling" in needs_rolling.stderr
