"""Truss ``build_commands`` against a real ``swell serve`` (``--build-timeout 5``): what a command
writes into the package is what the model reads, a failing command refuses the push with its
output (API and CLI), the same package reuses its build and changed commands make a new one,
a command past the limit fails the push, and a command that needs root in an image is refused
before anything runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from swell_live import KEY, Swell, package_archive, start_server, stop_server  # type: ignore[import-not-found]

pytestmark = pytest.mark.slow

# As a Truss user writes it: a build command prepares a file under data/, load() reads it
# through data_dir, and the model imports Truss's server packages without declaring them.
VOCAB_MODEL = '''
import json

from loguru import logger
from opentelemetry import trace


class Model:
    def __init__(self, **kwargs):
        self._data_dir = kwargs["data_dir"]
        self._vocab = None

    def load(self):
        self._vocab = json.loads((self._data_dir / "vocab.json").read_text())
        self._stamp = (self._data_dir / "stamp.txt").read_text().strip()
        logger.info("vocabulary of {} words", len(self._vocab))

    def predict(self, model_input):
        with trace.get_tracer(__name__).start_as_current_span("predict"):
            return {"ids": [self._vocab.get(w, -1) for w in model_input["text"].split()], "stamp": self._stamp}
'''

VOCAB_COMMANDS = [
    "mkdir -p data",
    """python -c "import json; json.dump({w: i for i, w in enumerate('the cat sat on mat'.split())}, open('data/vocab.json', 'w'))" """,
    "date +%s%N > /app/data/stamp.txt",
]

# Truss's own test package (truss/tests/test_data/test_build_commands_truss), as its authors wrote it.
TRUSS_CONSTANTS_MODEL = '''
from constants.constants import TEST_KEY


class Model:
    def __init__(self, **kwargs):
        pass

    def load(self):
        pass

    def predict(self, input) -> str:
        return TEST_KEY
'''

PLAIN_MODEL = '''
from typing import Any, Dict, List


class Model:
    def __init__(self, **kwargs) -> None:
        self._data_dir = kwargs["data_dir"]

    def load(self):
        pass

    def predict(self, model_input: Any) -> Dict[str, List]:
        return {"predictions": [1, 2]}
'''


@pytest.fixture(scope="module")
def swell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swell]:
    process, server = start_server(tmp_path_factory.mktemp("swell-data"), "--build-timeout", "5")
    try:
        yield server
    finally:
        stop_server(process, server)


def _package(root: Path, model: str, config: dict[str, Any]) -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.py").write_text(model)
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def _refused(swell: Swell, root: Path, name: str) -> dict[str, Any]:
    answer = swell.http.post("/v1/models/push", params={"publish": "true", "model_name": name},
                             content=package_archive(root))
    assert answer.status_code == 422, answer.text
    return dict(answer.json())


def _predict(swell: Swell, pushed: dict[str, Any], body: Any) -> Any:
    answer = swell.http.post(swell.predict_path(pushed), json=body, timeout=120)
    assert answer.status_code == 200, f"{answer.text}\n{swell.tail()}"
    return answer.json()


def test_a_file_a_build_command_writes_is_what_the_model_reads(swell: Swell, tmp_path: Path) -> None:
    root = _package(tmp_path / "vocab", VOCAB_MODEL, {"model_name": "Vocab Model", "build_commands": VOCAB_COMMANDS})
    pushed = swell.push(root)
    assert pushed["model_name"] == "Vocab Model"
    answer = _predict(swell, pushed, {"text": "the cat sat on the dog"})
    assert answer["ids"] == [0, 1, 2, 3, 0, -1]
    assert "build_commands[1]: running `python -c" in swell.log.read_text()  # progress in the server's log


def test_truss_test_package_sees_its_packages_file_changed_by_sed(swell: Swell, tmp_path: Path) -> None:
    root = _package(tmp_path / "truss", TRUSS_CONSTANTS_MODEL, {
        "environment_variables": {}, "external_package_dirs": [], "model_metadata": {},
        "model_name": "Test Build Commands",
        "resources": {"accelerator": None, "cpu": "1", "memory": "2Gi", "use_gpu": False},
        "secrets": {}, "system_packages": [],
        "build_commands": ["sed -i 's/TEST_FIRST_VALUE/TEST_SECOND_VALUE/g' /packages/constants/constants.py"],
    })
    (root / "packages" / "constants").mkdir(parents=True)
    (root / "packages" / "constants" / "constants.py").write_text('TEST_KEY = "TEST_FIRST_VALUE"\n')
    pushed = swell.push(root)
    assert pushed["model_name"] == "Test Build Commands"
    assert _predict(swell, pushed, {}) == "TEST_SECOND_VALUE"
    # A development push (reloaded in place) builds the same way.
    development = swell.push(root, publish=False)
    answer = swell.http.post(f"/model/{development['model_id']}/development/predict", json={}, timeout=120)
    assert answer.status_code == 200 and answer.json() == "TEST_SECOND_VALUE", answer.text


def test_the_same_commands_reuse_the_build_and_changed_ones_rebuild(swell: Swell, tmp_path: Path) -> None:
    config = {"model_name": "Stamped", "build_commands": VOCAB_COMMANDS}
    first = swell.push(_package(tmp_path / "a", VOCAB_MODEL, config), name="stamped")
    again = swell.push(_package(tmp_path / "b", VOCAB_MODEL, config), name="stamped")
    assert again["deployment_id"] != first["deployment_id"]
    stamp = _predict(swell, first, {"text": "cat"})["stamp"]
    assert _predict(swell, again, {"text": "cat"})["stamp"] == stamp  # the build ran once
    changed = {**config, "build_commands": [*VOCAB_COMMANDS, "echo a new step"]}
    rebuilt = swell.push(_package(tmp_path / "c", VOCAB_MODEL, changed), name="stamped")
    assert _predict(swell, rebuilt, {"text": "cat"})["stamp"] != stamp


def test_a_failing_build_command_refuses_the_push_with_its_output(swell: Swell, tmp_path: Path) -> None:
    # Truss's test_build_commands_failure, as its authors wrote it.
    root = _package(tmp_path / "failing", PLAIN_MODEL, {
        "build_commands": ["mkdir example_dir", "cd example_dir && touch testing.py", "haha lol"],
        "model_metadata": {}, "model_name": None, "model_type": "custom", "requirements": [],
        "resources": {"accelerator": None, "cpu": "500m", "memory": "512Mi", "use_gpu": False},
    })
    body = _refused(swell, root, "failing-build")
    assert body["error"] == "build command failed" and body["status"] == "Failed"
    assert body["build_command"]["index"] == 2 and body["build_command"]["command"] == "haha lol"
    assert body["build_command"]["exit_code"] == 127
    assert "haha: command not found" in body["build_command"]["output"]
    assert body["reason"].startswith("build_commands[2] `haha lol` exited with status 127")
    # Not served: the failed deployment has no replicas to call.
    predict = swell.http.post(f"/model/{body['model_id']}/deployment/{body['deployment_id']}/predict", json={})
    assert predict.status_code == 503, predict.text

    cli = subprocess.run(
        [sys.executable, "-c", "from swell.cli import main; main()", "push", str(root), "--publish",
         "--model-name", "failing-build"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "SWELL_URL": swell.url, "SWELL_API_KEY": KEY, "COLUMNS": "200"},
    )
    assert cli.returncode == 1, cli.stderr
    assert "build command failed" in cli.stderr and "haha lol" in cli.stderr
    assert "haha: command not found" in cli.stderr and "Traceback" not in cli.stderr


def test_a_build_command_past_the_time_limit_fails_the_push(swell: Swell, tmp_path: Path) -> None:
    root = _package(tmp_path / "slow", PLAIN_MODEL, {"model_name": "slow build",
                                                      "build_commands": ["echo fetching; sleep 120"]})
    body = _refused(swell, root, "slow-build")
    assert body["build_command"]["timed_out"] is True and body["build_command"]["exit_code"] is None
    assert "did not finish within 5 s" in body["reason"] and "fetching" in body["reason"]


def test_a_command_that_needs_root_in_an_image_is_refused_before_anything_runs(swell: Swell, tmp_path: Path) -> None:
    root = _package(tmp_path / "apt", PLAIN_MODEL, {
        "model_name": "needs ffmpeg",
        "build_commands": ["pip --version", "apt-get update && apt-get install -y ffmpeg"],
    })
    body = _refused(swell, root, "needs-ffmpeg")
    assert body["error"] == "build command not supported"
    assert "build_commands[1] `apt-get update && apt-get install -y ffmpeg` needs root inside a container image" in body["reason"]
    assert body["detail"][0]["field"] == "build_commands.1"
    assert "needs-ffmpeg" not in [m["name"] for m in swell.http.get("/v1/models").json()["models"]]
