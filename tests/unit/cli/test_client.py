"""The CLI's output and error paths, without a server (the e2e tests run one)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from swell import cli

SETTINGS = {
    "min_replica": 0,
    "max_replica": 1,
    "autoscaling_window": 60,
    "scale_down_delay": 900,
    "concurrency_target": 1,
    "target_utilization_percentage": 70,
}


def deployment(dep_id: str, kind: str, status: str, environments: list[str]) -> dict[str, Any]:
    return {
        "id": dep_id,
        "kind": kind,
        "status": status,
        "environments": environments,
        "replicas_ready": 0,
        "replicas_total": 1,
        "autoscaling_settings": SETTINGS,
    }


MODELS = {
    "models": [
        {
            "id": "bwzbjqvw",
            "name": "sentiment-small",
            "deployments": [
                deployment("omsaomth", "published", "Scaled to zero", ["production"]),
                deployment("a1b2c3d4", "development", "Loading model", []),
            ],
        }
    ]
}


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli.cli, list(args), env={"COLUMNS": "80", "SWELL_API_KEY": "k", **(env or {})})


def test_status_table_fits_80_columns_one_line_per_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.CliClient, "request", lambda self, method, path, **kw: MODELS)
    result = invoke("status")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    for dep_id in ("omsaomth", "a1b2c3d4"):
        (row,) = [line for line in lines if dep_id in line]
        assert "0–1 · 1@70% · 60s/900s" in row


def test_status_marks_advice_and_extras_on(monkeypatch: pytest.MonkeyPatch) -> None:
    advised = deployment("omsaomth", "published", "Active", ["production"])
    advised["autoscaling_settings"] = {**SETTINGS, "burst": True}
    advised["advice"] = {"saves_percent": 31, "summary": "The cheapest option would save 31 % of replica-seconds.",
                         "command": "swell advise --deployment bwzbjqvw/omsaomth"}
    models = {"models": [{"id": "bwzbjqvw", "name": "sentiment-small", "deployments": [advised]}]}
    monkeypatch.setattr(cli.CliClient, "request", lambda self, method, path, **kw: models)
    result = invoke("status")
    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.stdout.splitlines() if "omsaomth" in line and "·" in line]
    assert "⚑" in row and "burst" in result.stdout  # the settings cell wraps at 80 columns
    assert "save 31 %" in result.stdout and "swell advise --deployment bwzbjqvw/omsaomth" in result.stdout


def test_status_says_which_replica_gave_way_to_make_room(monkeypatch: pytest.MonkeyPatch) -> None:
    message = ("stopped idle replica r-3c of sentiment-small/omsaomth (idle 2m10s, above min_replica 0) "
               "to make room for bert/d2: needs 1 CPU, 0 free")
    stopped = deployment("omsaomth", "published", "Scaled to zero", ["production"])
    stopped["capacity_reclaimed"] = {"at": "2026-12-03T09:00:01.250Z", "message": message}
    models = {"models": [{"id": "bwzbjqvw", "name": "sentiment-small", "deployments": [stopped]}]}
    monkeypatch.setattr(cli.CliClient, "request", lambda self, method, path, **kw: models)
    result = invoke("status")
    assert result.exit_code == 0, result.output
    assert f"omsaomth: {message} (2026-12-03T09:00:01.250Z)" in result.stdout


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/[/x]", "http://[::1", "localhost:8080"])
@pytest.mark.parametrize("as_json", [False, True])
def test_bad_or_unreachable_server_url_is_a_message(url: str, as_json: bool) -> None:
    result = invoke("status", *(["--json"] if as_json else []), env={"SWELL_URL": url})
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if as_json:
        assert json.loads(result.stdout)["error"]
    else:
        assert "error:" in result.stderr and "Traceback" not in result.output


def test_an_answer_that_is_not_swells_is_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.CliClient, "request", lambda self, method, path, **kw: "<html>hello</html>")
    result = invoke("status")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "not a Swell server" in result.stderr


def test_predict_with_an_unreadable_data_file_prints_one_json_object() -> None:
    result = invoke("predict", "m", "-d", "@/nonexistent/input.json", "--json", env={"SWELL_URL": "http://127.0.0.1:9"})
    assert result.exit_code != 0
    assert "/nonexistent/input.json" in json.loads(result.stdout)["error"]
