"""docs/grafana/swell.json queries only metrics a running server exposes on /metrics."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from swell_live import REPO, SLEEPY, Swell  # type: ignore[import-not-found]

DASHBOARD = REPO / "docs" / "grafana" / "swell.json"


def _queried(dashboard: dict) -> dict[str, set[str]]:
    """Each metric name a panel's query reads, with the panels that read it."""
    found: dict[str, set[str]] = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\bswell_[a-z_]+", target["expr"]):
                found.setdefault(name, set()).add(panel["title"])
    for variable in dashboard["templating"]["list"]:
        for name in re.findall(r"\bswell_[a-z_]+", str(variable.get("definition", ""))):
            found.setdefault(name, set()).add(f"variable {variable['name']}")
    return found


def _exposed(text: str) -> set[str]:
    """Every name a PromQL query can use: sample names, and each family's name
    (a family with no sample yet is still announced by its HELP and TYPE lines)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
        names.update(sample.name for sample in family.samples)
    return names


def test_every_metric_the_grafana_dashboard_queries_is_on_metrics(
    swell: Swell, make_model: Callable[..., Path]
) -> None:
    pushed = swell.push(make_model(SLEEPY), name="grafana-check")
    assert swell.http.post(swell.predict_path(pushed), json={"i": 1}).status_code == 200
    dashboard = json.loads(DASHBOARD.read_text())
    queried = _queried(dashboard)
    assert len(queried) >= 8, queried  # the dashboard covers traffic, latency, replicas, cold starts, async

    exposed = _exposed(swell.http.get("/metrics").text)
    missing = {name: sorted(panels) for name, panels in queried.items() if name not in exposed}
    assert not missing, f"the dashboard queries metrics /metrics does not have: {missing}"


def test_the_dashboard_is_importable_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert {target["refId"] for target in panel["targets"]} == {chr(65 + i) for i in range(len(panel["targets"]))}
