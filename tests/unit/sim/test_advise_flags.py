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


def test_patch_option_prints_that_menu_options_body_or_refuses_one_not_on_the_menu() -> None:
    args = [TRACE, "--max-replica", "10", "--predict-concurrency", "4"]
    data = json.loads(CliRunner().invoke(advise_command, [*args, "--json"]).output)
    names = [o["name"] for o in data["menu"]]
    assert names and names[0] == "cheapest"
    chosen = CliRunner().invoke(advise_command, [*args, "--patch", "--option", "cheapest"])
    assert chosen.exit_code == 0, chosen.output
    assert json.loads(chosen.output) == data["menu"][0]["settings"]
    missing = next(n for n in ("balanced", "fastest") if n not in names) if len(names) < 3 else None
    if missing is not None:
        refused = CliRunner().invoke(advise_command, [*args, "--patch", "--option", missing])
        assert refused.exit_code == 2 and f"--option {missing}" in refused.output and "Traceback" not in refused.output


def test_quick_leaves_out_the_joint_search_but_keeps_the_checks_and_the_menu() -> None:
    args = [TRACE, "--max-replica", "10", "--predict-concurrency", "4", "--json"]
    full = json.loads(CliRunner().invoke(advise_command, args).output)
    result = CliRunner().invoke(advise_command, [*args, "--quick"])
    assert result.exit_code == 0, result.output
    quick = json.loads(result.output)
    assert quick["simulations"] < full["simulations"]
    assert "settings_tuned_together" not in {f["id"] for f in quick["findings"]} and quick["with_extras"] is None
    assert quick["current"] == full["current"] and quick["menu"]


def test_burst_names_the_current_settings_extra() -> None:
    result = CliRunner().invoke(advise_command, [TRACE, "--burst", "--quick", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["current"]["settings"]["burst"] is True
