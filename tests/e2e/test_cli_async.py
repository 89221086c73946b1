"""`swell predict --async` and `swell request` as a user runs them, against a real `swell serve`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from swell_command import ok_json, run, running_server  # type: ignore[import-not-found]

REPO = Path(__file__).resolve().parents[2]
KEY = "e2e-async-key"




@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with running_server(tmp_path_factory.mktemp("e2e-async"), KEY, "--tick-seconds", "0.2") as env:
        ok_json(run("push", str(REPO / "examples" / "echo"), "--publish", "--json", env=env))
        yield env


def test_async_predict_then_follow_the_request(server: dict[str, str]) -> None:
    queued = run("predict", "echo", "--async", "-d", '{"x": 1}', env=server)
    assert queued.returncode == 0, queued.stderr
    request_id = queued.stdout.strip()
    assert request_id and "swell request" in queued.stderr
    waited = run("request", request_id, "--wait", env=server)
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout) == {"echo": {"x": 1}}
    view = ok_json(run("request", request_id, "--json", env=server))
    assert view["status"] == "SUCCEEDED" and view["attempts"] == 1


def test_async_predict_wait_prints_the_result(server: dict[str, str]) -> None:
    answer = run("predict", "echo", "--async", "--wait", "--priority", "0", "-d", '{"y": 2}', env=server)
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == {"echo": {"y": 2}}


def test_async_mistakes_are_one_line_not_a_traceback(server: dict[str, str]) -> None:
    bad_url = run("predict", "echo", "--async", "--webhook", "ftp://x", "--json", env=server)
    assert bad_url.returncode == 1 and "webhook_endpoint" in bad_url.stdout
    not_json = run("predict", "echo", "--async", "-d", "not json", env=server)
    assert not_json.returncode == 1 and "must be JSON" in not_json.stderr and "Traceback" not in not_json.stderr
    stray = run("predict", "echo", "--wait", env=server)
    assert stray.returncode == 2 and "go with --async" in stray.stderr
    missing = run("request", "nosuchrequest", env=server)
    assert missing.returncode == 1 and "nosuchrequest" in missing.stderr and "Traceback" not in missing.stderr
    done = ok_json(run("predict", "echo", "--async", "--wait", "--json", env=server))
    refused = run("request", done["request_id"], "--cancel", env=server)
    assert refused.returncode == 1 and "SUCCEEDED" in refused.stderr
