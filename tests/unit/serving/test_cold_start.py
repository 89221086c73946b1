"""Cold starts: the breakdown by phase, progress-aware load failure, the
cold-start wait header and the 202 for callers that ask not to wait.

Fake backend, fake replicas, virtual clock: no processes, no sleeps.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_harness import Recorder, settle, setup, tick  # type: ignore[import-not-found]

from swell.config import AutoscalingSettings
from swell.serving import (
    DeploymentStatus,
    ReplicaRecord,
    ReplicaState,
    render_metrics,
)
from swell.serving._backend import Replica
from swell.serving._cold_start import ColdStart, ColdStartHistograms, cold_start_of
from swell.serving._controller import load_verdict
from swell.serving._router import _wants_no_wait

# One replica at most: these tests follow a single start.
SETTINGS = AutoscalingSettings(autoscaling_window=10, scale_down_delay=0, max_replica=1)


# ---------------------------------------------------------------- the breakdown


def test_breakdown_from_the_backends_times() -> None:
    replica = Replica(id="r", deployment_id="d", state=ReplicaState.READY, created_at=10.0, ready_at=16.5)
    replica.marks.update(spawned=10.25, live=10.5)
    replica.weights_seconds = 2.0
    replica.load_seconds = 3.5
    replica.start_mode = "prewarmed"
    cold = cold_start_of(replica)
    assert cold == ColdStart(pending=0.25, process=0.25, weights=2.0, load=3.5, total=6.5, start="prewarmed")
    assert cold.as_dict() == {
        "pending_seconds": 0.25,
        "process_seconds": 0.25,
        "weights_seconds": 2.0,
        "load_seconds": 3.5,
        "total_seconds": 6.5,
        "start": "prewarmed",
    }
    assert cold.describe() == "pending 0.25 s, process 0.25 s, weights 2.00 s, load() 3.50 s"


def test_breakdown_without_times_uses_the_fallback_total() -> None:
    replica = Replica(id="r", deployment_id="d", state=ReplicaState.READY)
    assert cold_start_of(replica) is None
    cold = cold_start_of(replica, fallback_total=4.0)
    assert cold is not None and cold.total == 4.0 and cold.phases() == {"total": 4.0}


def test_histograms_count_each_known_phase() -> None:
    hist = ColdStartHistograms()
    hist.observe(ColdStart(pending=0.0, process=0.02, weights=None, load=1.5, total=1.6))
    assert sum(hist.counts["load"]) == 1 and hist.sums["load"] == 1.5
    assert sum(hist.counts["weights"]) == 0


# ---------------------------------------------------------------- progress-aware load failure


def _record(progress: int = 0) -> ReplicaRecord:
    return ReplicaRecord(started_at=0.0, progress_seen=progress, progress_at=0.0)


@pytest.mark.parametrize(
    ("now", "progress_at", "new_progress", "verdict"),
    [
        (50.0, 0.0, False, None),  # quiet, but not for long
        (61.0, 0.0, False, "no progress"),  # quiet for more than the stall limit
        (61.0, 0.0, True, None),  # it moved since the last look: the stall clock restarts
        (500.0, 480.0, False, None),  # busy for long: still under the total
        (1001.0, 990.0, False, "within 1000 s"),  # busy, past the total
    ],
)
def test_load_verdict(now: float, progress_at: float, new_progress: bool, verdict: str | None) -> None:
    record = _record()
    record.progress_at = progress_at
    progress = 1 if new_progress else 0
    result = load_verdict(record, progress, now, stall=60.0, total=1000.0)
    if verdict is None:
        assert result is None
    else:
        assert result is not None and verdict in result
    if new_progress:
        assert record.progress_at == now and record.progress_seen == 1


async def test_slow_load_with_progress_lives_and_a_stalled_one_fails() -> None:
    controller, router, backend, clock = setup(SETTINGS, load_stall_seconds=5.0, load_timeout_seconds=100.0)
    waiter = asyncio.create_task(router.acquire())
    await settle()
    replica = backend.set_state("r0", ReplicaState.LOADING)
    for _ in range(20):  # 20 s of loading, progress every 2 s: never stalled
        replica.progress += 1
        await tick(controller, clock, 2.0)
    assert backend.stopped == [] and not waiter.done()
    for _ in range(6):  # now silent for 6 s > 5 s
        await tick(controller, clock, 1.0)
    assert backend.stopped == ["r0"]
    scaled = controller.get("dep1")
    assert scaled is not None and "no progress" in (scaled.error or "")
    with pytest.raises(Exception, match="failed to load"):
        await waiter


async def test_time_pending_counts_toward_no_limit() -> None:
    controller, router, backend, clock = setup(SETTINGS, load_stall_seconds=5.0, load_timeout_seconds=10.0)
    task = asyncio.create_task(router.acquire())
    await settle()
    replica = backend.replicas["r0"]
    replica.reason = "waiting for resources: needs 2 CPU, 1 of 2 free"
    backend.set_state("r0", ReplicaState.PENDING)
    scaled = controller.get("dep1")
    assert scaled is not None
    for _ in range(30):
        await tick(controller, clock, 1.0)
    assert backend.stopped == [] and scaled.status() is DeploymentStatus.WAKING_UP
    assert scaled.pending_reason == "waiting for resources: needs 2 CPU, 1 of 2 free"
    backend.set_state("r0", ReplicaState.LOADING)
    await tick(controller, clock, 3.0)
    assert backend.stopped == []
    backend.ready("r0")
    task.cancel()


async def test_ready_replica_gets_its_breakdown_in_the_metrics_and_the_estimate() -> None:
    controller, router, backend, _clock = setup(SETTINGS)
    task = asyncio.create_task(router.acquire())
    await settle()
    replica = backend.replicas["r0"]
    replica.created_at, replica.ready_at = 5.0, 8.0
    replica.marks.update(spawned=5.0, live=5.5)
    replica.load_seconds, replica.weights_seconds = 2.0, 0.25
    backend.ready("r0")
    router.release(await task)
    scaled = controller.get("dep1")
    assert scaled is not None
    cold = scaled.cold_start("r0")
    assert cold is not None and cold.total == 3.0
    assert scaled.cold_start_estimate == 3.0
    text = render_metrics(controller).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = families["swell_cold_start_phase_seconds"].samples
    counts = {s.labels["phase"]: s.value for s in samples if s.name.endswith("_count")}
    assert counts == {"pending": 1, "process": 1, "weights": 1, "load": 1, "total": 1}
    sums = {s.labels["phase"]: s.value for s in samples if s.name.endswith("_sum")}
    assert sums["load"] == 2.0 and sums["process"] == 0.5


# ---------------------------------------------------------------- requests


class FakeResponse:
    def __init__(self) -> None:
        self.status = 200
        self.headers = [(b"content-type", b"application/json")]
        self.chunked = False
        self.complete = True
        self.parts = [b"{}"]

    async def body(self) -> bytes:
        return b"{}"

    def abort(self) -> None:
        pass


class FakePool:
    async def request(self, head: bytes, body: bytes) -> Any:
        return FakeResponse()

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("headers", "query", "expected"),
    [
        ([(b"prefer", b"respond-async")], b"", True),
        ([(b"prefer", b"Respond-Async, wait=10")], b"", True),
        ([(b"prefer", b"return=minimal")], b"", False),
        ([], b"wait=false", True),
        ([], b"timeout=3&wait=0", True),
        ([], b"wait=true", False),
        ([], b"", False),
    ],
)
def test_who_asks_not_to_wait(headers: list[tuple[bytes, bytes]], query: bytes, expected: bool) -> None:
    assert _wants_no_wait(headers, query) is expected


async def test_request_that_waited_on_a_cold_start_says_how_long() -> None:
    _controller, router, backend, _clock = setup(SETTINGS)
    send = Recorder()
    serving = asyncio.create_task(router.serve([], b"{}", send, None))
    await settle()
    backend.ready("r0")
    router.handles["r0"].pool = FakePool()  # type: ignore[assignment]
    router._pump()
    await serving
    waited = float(send.headers[b"x-swell-cold-start-wait"])
    assert waited >= 0.0
    warm = Recorder()
    await router.serve([], b"{}", warm, None)  # a ready replica: no cold start, no header
    assert b"x-swell-cold-start-wait" not in warm.headers


async def test_caller_that_asks_not_to_wait_gets_202_and_the_deployment_wakes() -> None:
    controller, router, backend, _clock = setup(SETTINGS)
    router.status_url = "/v1/models/m1/deployments/dep1"
    send = Recorder()
    await router.serve([(b"prefer", b"respond-async")], b"{}", send, None)
    await settle()
    assert send.messages[0]["status"] == 202
    assert send.headers[b"retry-after"] == b"5"
    assert send.headers[b"location"] == b"/v1/models/m1/deployments/dep1"
    body = json.loads(send.messages[1]["body"])
    assert body["status_url"] == "/v1/models/m1/deployments/dep1" and "not run" in body["detail"]
    assert len(backend.started) == 1 and router.queued == 0  # woken, and nothing kept
    scaled = controller.get("dep1")
    assert scaled is not None and scaled.status() is DeploymentStatus.WAKING_UP
    # A second such caller does not start a second replica.
    await router.serve([], b"{}", Recorder(), None, query=b"wait=false")
    await settle()
    assert len(backend.started) == 1
    # Once ready, the same caller is served as usual.
    backend.ready("r0")
    router.handles["r0"].pool = FakePool()  # type: ignore[assignment]
    ok = Recorder()
    await router.serve([(b"prefer", b"respond-async")], b"{}", ok, None)
    assert ok.messages[0]["status"] == 200
