"""``swell advise`` flags through click's CliRunner (the subprocess runs are in tests/e2e)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from swell.sim._advise_cli import advise_command

TRACE = "steps:rates=0.5/4/0.5,step=2m"


def test_a_queue_wait_budget_is_named_in_the_tuned_finding() -> None:
    result = CliRunner().invoke(
        advise_command, [TRACE, "--max-replica", "10", "--predict-concurrency", "4", "--queue-wait-p99", "8", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    tuned = [f for f in data["findings"] if f["id"] == "settings_tuned_together"]
    assert tuned and "p99 queue wait" in tuned[0]["title"] and "8 s" in tuned[0]["title"]
    assert data["recommended"]["metrics"]["queue_wait_p99"] <= 8


def test_a_negative_budget_is_refused() -> None:
    result = CliRunner().invoke(advise_command, [TRACE, "--queue-wait-p99", "-1"])
    assert result.exit_code == 2 and "--queue-wait-p99" in result.output
