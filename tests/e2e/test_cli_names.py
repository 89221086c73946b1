"""Model names as Truss writes them ("Test Async"), from the command line: pushed, called and
shown as written; a name that could mean several models asks for the id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from swell_command import ok_json, run, running_server  # type: ignore[import-not-found]

KEY = "e2e-names-key"

# As Truss's own test packages are written: a free-text name, an async predict.
CONFIG = """\
model_name: Test Async
python_version: py311
resources:
  cpu: "1"
  use_gpu: false
"""
MODEL = """\
class Model:
    def __init__(self, **kwargs):
        pass

    async def predict(self, model_input):
        return {"got": model_input}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with running_server(tmp_path_factory.mktemp("e2e-names"), KEY, "--tick-seconds", "0.2") as env:
        yield env


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("test-async")
    (root / "model").mkdir()
    (root / "model" / "model.py").write_text(MODEL)
    (root / "config.yaml").write_text(CONFIG)
    return root


def test_a_name_with_a_space_is_pushed_called_and_shown_as_written(server: dict[str, str], package: Path) -> None:
    pushed = ok_json(run("push", str(package), "--publish", "--json", env=server))
    assert pushed["model_name"] == "Test Async"

    called = run("predict", "Test Async", "-d", '{"x": 1}', env=server)
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == {"got": {"x": 1}}
    by_id = ok_json(run("predict", pushed["model_id"], "-d", '{"x": 2}', "--json", env=server))
    assert by_id == {"got": {"x": 2}}

    again = ok_json(run("push", str(package), "--publish", "--json", env=server))  # same name: same model
    assert again["model_id"] == pushed["model_id"] and again["deployment_id"] != pushed["deployment_id"]

    status = ok_json(run("status", "Test Async", "--json", env=server))
    (model,) = status["models"]
    assert model["name"] == "Test Async" and len(model["deployments"]) == 2
    table = run("status", env=server)
    assert table.returncode == 0 and "Test Async" in table.stdout, table.stdout
    environments = ok_json(run("environments", "list", "Test Async", "--json", env=server))
    assert any(e["deployment_id"] == pushed["deployment_id"] for e in environments["environments"])
    logs = ok_json(run("logs", "Test Async", "--json", env=server))
    assert logs["model_id"] == pushed["model_id"]


def test_a_loose_name_says_which_model_it_meant_and_an_ambiguous_one_asks_for_the_id(
    server: dict[str, str], package: Path
) -> None:
    first = ok_json(run("push", str(package), "--publish", "--json", env=server))
    loose = run("predict", "test  async", "-d", '{"x": 3}', env=server)  # case and spacing aside, one model
    assert loose.returncode == 0, loose.stderr
    assert json.loads(loose.stdout) == {"got": {"x": 3}}
    assert f"'test  async' is model 'Test Async' (id {first['model_id']})" in loose.stderr

    second = ok_json(run("push", str(package), "--publish", "--model-name", "TEST ASYNC", "--json", env=server))
    assert second["model_id"] != first["model_id"] and second["model_name"] == "TEST ASYNC"
    ambiguous = run("predict", "test async", "-d", "{}", env=server)
    assert ambiguous.returncode == 1 and "Traceback" not in ambiguous.stderr
    assert "could mean 2 models" in ambiguous.stderr and "give the id" in ambiguous.stderr, ambiguous.stderr
    assert first["model_id"] in ambiguous.stderr and second["model_id"] in ambiguous.stderr
    as_json = run("predict", "test async", "--json", env=server)
    assert as_json.returncode == 1
    refused = json.loads(as_json.stdout)
    assert refused["error"] == "ambiguous model"
    assert {m["id"] for m in refused["models"]} == {first["model_id"], second["model_id"]}

    exact = run("predict", "TEST ASYNC", "-d", '{"x": 4}', env=server)  # as written: no doubt
    assert exact.returncode == 0 and json.loads(exact.stdout) == {"got": {"x": 4}}, exact.stderr
    missing = run("predict", "Test Sync", env=server)
    assert missing.returncode == 1 and "Test Sync" in missing.stderr and "Traceback" not in missing.stderr
