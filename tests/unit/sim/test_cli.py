"""``swell simulate`` through click's CliRunner."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from swell.sim import POLICIES
from swell.sim._cli import simulate

KEYS = {
    "requests",
    "replica_seconds",
    "cold_starts",
    "requests_delayed_by_cold_start",
    "queue_wait_p50",
    "queue_wait_p95",
    "queue_wait_p99",
    "latency_p50",
    "latency_p99",
    "max_replicas",
    "dropped",
}
SMALL = "poisson:rate=0.5,duration=10m"


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(simulate, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_json_has_the_keys() -> None:
    code, out = _run(SMALL, "--json", "--max-replica", "3")
    assert code == 0, out
    data = json.loads(out)
    assert KEYS <= data.keys()
    assert data["policy"] == "swell" and data["settings"]["max_replica"] == 3
    assert data["requests"] > 200 and data["dropped"] == 0


def test_compare_json_has_every_policy(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("timestamp,duration\n0,1\n5,2\n400,1\n", encoding="utf-8")
    code, out = _run(str(trace), "--compare", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert set(data["policies"]) == set(POLICIES)
    for metrics in data["policies"].values():
        assert KEYS <= metrics.keys() and metrics["requests"] == 3
    assert data["model"]["service_time"] == "the trace's duration column"


def test_table_output() -> None:
    code, out = _run(SMALL, "--compare", "--max-replica", "2")
    assert code == 0, out
    for word in ("replica-seconds", "cold starts", "queue wait p99", *POLICIES):
        assert word in out


def test_timeline_columns(tmp_path: Path) -> None:
    path = tmp_path / "timeline.csv"
    code, out = _run(SMALL, "--timeline", str(path), "--json")
    assert code == 0, out
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["t", "replicas", "ready", "concurrency"]
    body = [[float(x) for x in row] for row in rows[1:]]
    assert len(body) > 3
    assert all(b[0] > a[0] for a, b in zip(body, body[1:], strict=False))
    assert all(row[1:] != prev[1:] for prev, row in zip(body, body[1:], strict=False))
    assert body[-1][1] == 0  # scaled to zero at the end


def test_plot_png_and_html(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "plot.png"
    code, out = _run(SMALL, "--plot", str(png), "--json")
    assert code == 0, out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = tmp_path / "plot.html"
    code, out = _run(SMALL, "--plot", str(page), "--compare", "--json")
    assert code == 0, out
    text = page.read_text()
    assert "<svg" in text and "<script" not in text and "http://" not in text.replace("http://www.w3.org", "")
    assert all(name in text for name in POLICIES)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--autoscaling-window", "5"], "autoscaling_window: 5 is not allowed; must be between 10 and 3600"),
        (["--max-replica", "11"], "max_replica: 11 is not allowed; must be between 1 and 10"),
        (["--max-replica", "3", "--min-replica", "4"], "min_replica"),
        (["--concurrency-target", "1.5"], "concurrency_target"),
        (["--cold-start", "soon"], "--cold-start 'soon'"),
        (["--service-time", "tokens"], "no token counts"),
    ],
)
def test_bad_flags_print_a_message_and_exit_2(args: list[str], words: str) -> None:
    code, out = _run(SMALL, *args)
    assert code == 2
    assert words in out and "Traceback" not in out


def test_max_replica_cap_is_a_server_setting() -> None:
    code, out = _run(SMALL, "--max-replica", "20", "--max-replica-cap", "20", "--json")
    assert code == 0, out
    assert json.loads(out)["settings"]["max_replica"] == 20


def test_bad_trace_names_the_line(tmp_path: Path) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text("timestamp,duration\n0,1\n1,-1\n", encoding="utf-8")
    code, out = _run(str(trace))
    assert code == 2
    assert "line 3" in out and "duration" in out and "Traceback" not in out


def test_model_filter_and_queue_limit(tmp_path: Path) -> None:
    trace = tmp_path / "models.csv"
    trace.write_text("timestamp,duration,model\n0,5,a\n0.1,5,a\n0.2,5,a\n0.3,5,b\n", encoding="utf-8")
    code, out = _run(str(trace), "--model", "a", "--queue-limit", "1", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["requests"] == 3 and data["dropped"] == 2  # the first waits; the others find it waiting


def test_tick_by_tick_gives_the_same_answer() -> None:
    _, jumped = _run(SMALL, "--json", "--compare", "--scale-down-delay", "120")
    _, ticked = _run(SMALL, "--json", "--compare", "--scale-down-delay", "120", "--tick-by-tick")
    a, b = json.loads(jumped)["policies"], json.loads(ticked)["policies"]
    for name in POLICIES:
        a[name].pop("ticks")
        b[name].pop("ticks")
    assert a == b


def test_png_without_matplotlib_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    code, out = _run(SMALL, "--plot", str(tmp_path / "p.png"))
    assert code == 2
    assert "pip install 'swell[plot]'" in out and "Traceback" not in out
