"""The CLI as a user runs it: ``swell serve`` in the background, client commands with --json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from swell_command import free_port, run, running_server  # type: ignore[import-not-found]

REPO = Path(__file__).resolve().parents[2]
KEY = "e2e-key"



@pytest.fixture(scope="module", params=["--fork-server", "--no-fork-server"])
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    data_dir = tmp_path_factory.mktemp("e2e")
    with running_server(data_dir, KEY, request.param) as env:
        yield env
    text = (data_dir / "server.log").read_text()
    assert "serving on" in text and "API key: the one in $SWELL_API_KEY" in text


def test_push_predict_status(server: dict[str, str]) -> None:
    pushed = run("push", str(REPO / "examples" / "echo"), "--publish", "--json", env=server)
    assert pushed.returncode == 0, pushed.stderr
    info = json.loads(pushed.stdout)
    assert {"model_id", "deployment_id", "model_name"} <= info.keys() and info["model_name"] == "echo"

    predicted = run("predict", "echo", "-d", '{"text": "hi"}', env=server)
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout) == {"echo": {"text": "hi"}}

    as_json = run("predict", info["model_id"], "--deployment", info["deployment_id"], "-d", "[1]", "--json", env=server)
    assert json.loads(as_json.stdout) == {"echo": [1]}

    status = run("status", "--json", env=server)
    assert status.returncode == 0, status.stderr
    models = json.loads(status.stdout)["models"]
    deployment = models[0]["deployments"][0]
    assert deployment["id"] == info["deployment_id"] and deployment["status"] == "Active"
    assert deployment["replicas_ready"] == 1

    table = run("status", env=server)
    assert table.returncode == 0 and "Active" in table.stdout


def test_streaming_predict_prints_the_stream(server: dict[str, str]) -> None:
    assert run("push", str(REPO / "examples" / "stream"), "--publish", "--json", env=server).returncode == 0
    out = run("predict", "stream", "-d", '{"prompt": "a", "max_tokens": 4, "delay": 0}', env=server)
    assert out.returncode == 0 and out.stdout.strip()


def test_errors_are_messages_not_tracebacks(server: dict[str, str], tmp_path: Path) -> None:
    missing = run("predict", "no-such-model", env=server)
    assert missing.returncode != 0 and "no-such-model" in missing.stderr and "Traceback" not in missing.stderr
    as_json = run("predict", "no-such-model", "--json", env=server)
    assert as_json.returncode != 0 and json.loads(as_json.stdout)["error"]

    bad_key = run("status", env={**server, "SWELL_API_KEY": "wrong"})
    assert bad_key.returncode != 0 and "unauthorized" in bad_key.stderr

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "config.yaml").write_text("model_name: bad\nautoscaling:\n  max_replica: 99\n")
    bad_config = run("push", str(tmp_path / "pkg"), "--publish", "--json", env=server)
    assert bad_config.returncode != 0
    assert json.loads(bad_config.stdout)["detail"][0]["field"] == "autoscaling.max_replica"

    nowhere = run("status", "--json", env={**server, "SWELL_URL": f"http://127.0.0.1:{free_port()}"})
    assert nowhere.returncode != 0 and json.loads(nowhere.stdout)["error"] == "server unreachable"
