"""The real ``swell advise`` command, run as a person runs it, on a trace file the test writes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from swell_command import swell_command  # type: ignore[import-not-found]

from swell.config import parse_autoscaling
from swell.sim._advise import EFFECT_METRICS


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten minutes of bursts (0.5 and 4 req/s, 1 s each) as a generic CSV, with an ISO timestamp column."""
    rng = np.random.default_rng(7)
    times: list[float] = []
    for k, rate in enumerate((0.5, 4.0, 0.5, 4.0, 0.5)):
        t = 120.0 * k
        while True:
            t += float(rng.exponential(1 / rate))
            if t >= 120.0 * (k + 1):
                break
            times.append(t)
    path = tmp_path_factory.mktemp("advise") / "traffic.csv"
    rows = [f"{t:.3f},1.0" for t in times]
    path.write_text("timestamp,duration\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def _advise(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*swell_command(), "advise", *args], capture_output=True, text=True, timeout=300, check=False)


def test_advise_json_is_one_object_of_findings(trace: Path) -> None:
    run = _advise(str(trace), "--max-replica", "10", "--predict-concurrency", "4", "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)  # exactly one JSON object, nothing else on stdout
    assert {"findings", "summary", "current", "recommended", "with_extras", "simulations"} <= set(data)
    assert data["findings"], data["summary"]  # Baseten's defaults on a 4-slot model overpay
    for finding in data["findings"]:
        assert {"id", "title", "why", "recommended", "effect"} <= set(finding)
        assert set(finding["effect"]) == {"current", "recommended"}
        assert set(finding["effect"]["current"]) == set(EFFECT_METRICS)
        assert set(finding["effect"]["recommended"]) == set(EFFECT_METRICS)
        parse_autoscaling(finding["recommended"])
    assert set(data["current"]) == {"settings", "metrics"} and data["current"]["settings"]["max_replica"] == 10
    rec = data["recommended"]
    assert rec["metrics"]["replica_seconds"] < data["current"]["metrics"]["replica_seconds"]
    parse_autoscaling(rec["settings"])
    if data["with_extras"] is not None:
        assert set(data["with_extras"]) == {"extras", "settings", "metrics"}


def test_advise_patch_is_a_valid_patch_body(trace: Path) -> None:
    run = _advise(str(trace), "--max-replica", "10", "--predict-concurrency", "4", "--patch")
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    settings = parse_autoscaling(body)  # what PATCH …/autoscaling_settings validates
    assert settings.max_replica == 10
    assert set(body) <= set(type(settings).model_fields)


def test_advise_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    run = _advise(str(tmp_path / "missing.csv"), "--json")
    assert run.returncode == 2 and "Traceback" not in run.stderr and run.stdout == ""
    run = _advise("poisson:rate=1,duration=1m", "--autoscaling-window", "5")
    assert run.returncode == 2 and "autoscaling_window" in run.stderr
