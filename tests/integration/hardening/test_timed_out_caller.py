"""A caller that gives up (``?timeout=`` → 504) does not free its replica's slot while the
replica still runs its request: the deployment counts it in flight until the replica
answers (the answer is discarded), and the next caller goes to a free replica."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "live"))
from swell_live import SLEEPY, Swell, start_server, stop_server  # type: ignore[import-not-found]  # noqa: E402


@pytest.fixture
def make_model(tmp_path: Path) -> Callable[[str], Path]:
    def make(source: str) -> Path:
        root = tmp_path / "pkg"
        (root / "model").mkdir(parents=True)
        (root / "model" / "model.py").write_text(textwrap.dedent(source))
        (root / "config.yaml").write_text(yaml.safe_dump({"runtime": {"predict_concurrency": 1}}))
        return root

    return make


@pytest.fixture
def swell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swell]:
    process, server = start_server(tmp_path_factory.mktemp("swell-data"))
    try:
        yield server
    finally:
        stop_server(process, server)


def test_a_timed_out_request_keeps_its_slot_until_the_replica_answers(
    swell: Swell, make_model: Callable[[str], Path]
) -> None:
    pushed = swell.push(make_model(SLEEPY), name="slowcaller")  # predict_concurrency 1
    assert swell.patch(pushed, min_replica=2, max_replica=2, scale_down_delay=3600).status_code == 200
    swell.wait_for(pushed, lambda v: sum(r["state"] == "ready" for r in v["replicas"]) == 2, what="2 ready replicas")
    path = swell.predict_path(pushed)

    gave_up = swell.http.post(path, params={"timeout": 1}, json={"sleep": 5})
    assert gave_up.status_code == 504, gave_up.text

    view = swell.deployment(pushed)
    assert view["in_flight"] == 1, view  # the replica still runs it
    busy = [r["pid"] for r in view["replicas"] if r["in_flight"] == 1]
    assert len(busy) == 1, view

    nxt = swell.http.post(path, params={"timeout": 3}, json={"sleep": 0})
    assert nxt.status_code == 200, nxt.text
    assert nxt.json()["pid"] != busy[0]  # not queued behind the busy replica

    # The replica answers (discarded): its slot is free again.
    swell.wait_for(pushed, lambda v: v["in_flight"] == 0, timeout=15, what="the slot freed after the answer")
    again = swell.http.post(path, params={"timeout": 5}, json={"sleep": 0})
    assert again.status_code == 200, again.text
