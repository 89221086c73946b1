"""``swell simulate --compare --report FILE.html``: one self-contained page to share."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from swell.sim import POLICIES, ColdStart, SimConfig, replay
from swell.sim._cli import simulate
from swell.sim._report import REPORT_COLUMNS, pareto_front

TRACE = "steps:rates=0.2/3/0.2,step=5m"


class _Page(HTMLParser):
    """The table's cells by (policy, metric), the SVGs and what the page would load."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], str] = {}
        self.svgs: list[str] = []
        self.loads: list[str] = []
        self.scripts = 0
        self._policy: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("data-policy"):
            self._policy = a["data-policy"]
        if tag == "td" and self._policy and a.get("data-metric"):
            self.cells[(self._policy, str(a["data-metric"]))] = str(a.get("data-value"))
        if tag == "svg":
            self.svgs.append(str(a.get("aria-label")))
        if tag == "script":
            self.scripts += 1
        for key in ("src", "href"):
            if a.get(key):
                self.loads.append(str(a[key]))
        if tag == "link":
            self.loads.append(str(a))


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(simulate, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_compare_report_is_one_page_with_the_table_and_the_plots(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    args = [TRACE, "--compare", "--max-replica", "5", "--predict-concurrency", "2", "--cold-start", "20"]
    code, out = _run(*args, "--report", str(page), "--json")
    assert code == 0, out
    data = json.loads(out)
    text = page.read_text(encoding="utf-8")
    parsed = _Page()
    parsed.feed(text)
    # Self-contained: no script, nothing loaded from anywhere.
    assert parsed.scripts == 0 and parsed.loads == []
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text)
    # The table has every policy with the numbers the replay gave.
    for name, metrics in data["policies"].items():
        for key, _ in REPORT_COLUMNS:
            assert parsed.cells[(name, key)] == str(metrics[key]), (name, key)
    # One timeline (replicas and queue) per policy, and the Pareto chart.
    assert sorted(parsed.svgs) == sorted(
        ["cost against requests delayed by a cold start", *(f"{n}: replicas and queue over time" for n in POLICIES)]
    )
    assert text.count("<polyline") >= 3 * len(POLICIES)
    assert "replica-seconds" in text and "requests delayed by a cold start" in text


def test_the_report_of_one_policy_and_a_wrong_suffix(tmp_path: Path) -> None:
    page = tmp_path / "one.htm"
    code, out = _run(TRACE, "--report", str(page), "--max-replica", "3")
    assert code == 0, out
    assert "swell: replicas and queue over time" in page.read_text(encoding="utf-8")
    code, out = _run(TRACE, "--report", str(tmp_path / "r.png"))
    assert code == 2 and ".html" in out and not (tmp_path / "r.png").exists()


def test_pareto_front_keeps_what_nothing_beats_on_both_axes() -> None:
    points = {"cheap": (10.0, 50.0), "fast": (40.0, 0.0), "both worse": (45.0, 60.0), "tie": (10.0, 50.0), "mid": (20.0, 20.0)}
    assert sorted(pareto_front(points)) == ["cheap", "fast", "mid", "tie"]


def test_the_timeline_counts_the_queue() -> None:
    # Ten requests of 5 s at once on a cold deployment: they queue for the cold start, then drain.
    arrivals = np.zeros(10)
    config = SimConfig(cold_start=ColdStart("fixed", 10.0), timeline=True)
    result = replay(arrivals, np.full(10, 5.0), "swell", config)
    tl = result.timeline
    assert tl is not None
    assert int(tl.queued[tl.t < 10].min()) == 10  # nothing starts before the replica is ready
    assert int(tl.queued[tl.t == 10][0]) == 9  # one slot: the other nine wait, one leaves every 5 s
    assert np.all(tl.queued <= tl.concurrency) and tl.queued[-1] == 0
