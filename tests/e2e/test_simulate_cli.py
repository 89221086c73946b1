"""The real ``swell simulate`` command on the shared Azure LLM trace."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from swell_command import swell_command  # type: ignore[import-not-found]

# The shared folder is the repository's sibling: ../shared/traces.
TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "traces"
CODE_TRACE = TRACES / "AzureLLMInferenceTrace_code.csv"


@pytest.mark.skipif(not CODE_TRACE.exists(), reason=f"shared traces not found at {TRACES}")
def test_simulate_compare_json_on_the_azure_code_trace() -> None:
    run = subprocess.run(
        [*swell_command(), "simulate", str(CODE_TRACE), "--compare", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)  # exactly one JSON object
    assert data["trace"]["kind"] == "azure-llm" and data["trace"]["requests"] == 8819
    assert set(data["policies"]) == {"swell", "knative", "ray-serve", "keepalive", "oracle"}
    for name, metrics in data["policies"].items():
        assert metrics["requests"] == 8819, name
        assert metrics["dropped"] == 0, name
        assert metrics["replica_seconds"] > 0, name
        assert metrics["queue_wait_p50"] <= metrics["queue_wait_p95"] <= metrics["queue_wait_p99"], name
    assert data["policies"]["oracle"]["requests_delayed_by_cold_start"] == 0
