"""`swell settings` and `swell delete` as a person runs them, against a real `swell serve`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from swell_command import ok_json, run, running_server  # type: ignore[import-not-found]

REPO = Path(__file__).resolve().parents[2]
ECHO = str(REPO / "examples" / "echo")
KEY = "e2e-settings-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with running_server(tmp_path_factory.mktemp("e2e-settings"), KEY, "--tick-seconds", "0.2") as env:
        yield env


def settings_of(server: dict[str, str], *where: str) -> dict[str, object]:
    return dict(ok_json(run("settings", *where, "--json", env=server))["settings"])


def test_settings_are_shown_and_changed_all_or_nothing(server: dict[str, str]) -> None:
    pushed = ok_json(run("push", ECHO, "--publish", "--model-name", "settings me", "--json", env=server))
    shown = ok_json(run("settings", "settings me", "--json", env=server))  # production's deployment
    assert shown["deployment_id"] == pushed["deployment_id"] and shown["settings"]["max_replica"] == 1
    table = run("settings", "settings me", env=server)
    assert table.returncode == 0 and "max_replica" in table.stdout and "scale_down_delay" in table.stdout

    changed = ok_json(
        run("settings", "settings me", "production", "--set", "max_replica=4", "--set", "scale_down_delay=300", "--json", env=server)
    )
    assert changed["status"] == "ACCEPTED" and changed["deployment_id"] == pushed["deployment_id"]
    assert changed["settings"]["max_replica"] == 4 and changed["settings"]["scale_down_delay"] == 300
    said = run("settings", "settings me", pushed["deployment_id"], "--set", "max_replica=4", env=server)
    assert said.returncode == 0 and "unchanged" in said.stderr, said.stderr

    # one bad value: the server's own message, and the good one beside it is not applied either
    bad = run("settings", "settings me", "--set", "scale_down_delay=100", "--set", "max_replica=99", env=server)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "max_replica" in bad.stderr and "99" in bad.stderr, bad.stderr
    after = settings_of(server, "settings me")
    assert after["scale_down_delay"] == 300 and after["max_replica"] == 4
    word = run("settings", "settings me", "--set", "max_replica=many", "--json", env=server)
    assert word.returncode == 1 and json.loads(word.stdout)["detail"][0]["field"] == "max_replica"
    malformed = run("settings", "settings me", "--set", "max_replica", env=server)
    assert malformed.returncode == 2 and "NAME=VALUE" in malformed.stderr

    development = ok_json(run("push", ECHO, "--model-name", "settings me", "--json", env=server))
    fixed = run("settings", "settings me", "development", "--set", "max_replica=2", env=server)
    assert fixed.returncode == 1 and "fixed autoscaling settings" in fixed.stderr, fixed.stderr
    assert settings_of(server, "settings me", development["deployment_id"])["max_replica"] == 1


def test_delete_asks_first_and_the_server_refuses_what_production_serves(server: dict[str, str]) -> None:
    serving = ok_json(run("push", ECHO, "--publish", "--model-name", "delete me", "--json", env=server))
    spare = ok_json(run("push", ECHO, "--publish", "--model-name", "delete me", "--json", env=server))
    assert spare["model_id"] == serving["model_id"]

    refused = run("delete", "delete me", "production", env=server, stdin="y\n")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "production points at it" in refused.stderr.replace("point(s)", "points"), refused.stderr
    assert "promote another deployment first" in refused.stderr, refused.stderr

    declined = run("delete", "delete me", spare["deployment_id"], env=server, stdin="n\n")
    assert declined.returncode == 1 and "nothing deleted" in declined.stderr, declined.stderr
    model = ok_json(run("status", "delete me", "--json", env=server))["models"][0]
    assert {d["id"] for d in model["deployments"]} == {serving["deployment_id"], spare["deployment_id"]}

    deleted = run("delete", "delete me", spare["deployment_id"], env=server, stdin="y\n")
    assert deleted.returncode == 0 and "deleted deployment" in deleted.stderr, deleted.stderr
    model = ok_json(run("status", "delete me", "--json", env=server))["models"][0]
    assert [d["id"] for d in model["deployments"]] == [serving["deployment_id"]]

    gone = ok_json(run("delete", "delete me", "--yes", "--json", env=server))
    assert gone["deleted"] is True and gone["id"] == serving["model_id"]
    names = [m["name"] for m in ok_json(run("status", "--json", env=server))["models"]]
    assert "delete me" not in names
    missing = run("delete", "delete me", "--yes", env=server)
    assert missing.returncode == 1 and "delete me" in missing.stderr and "Traceback" not in missing.stderr
