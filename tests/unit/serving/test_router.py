"""The router's queue, dispatch and counting, with fake replicas and a virtual clock."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from serving_harness import Recorder  # type: ignore[import-not-found]

from swell.autoscaling import VirtualClock
from swell.config import AutoscalingSettings, ModelConfig
from swell.serving import (
    DeploymentRouter,
    ReplicaGone,
    ReplicaSpec,
    ReplicaState,
    Unavailable,
)
from swell.serving._backend import Replica
from swell.serving._testing import FakeSupervisor


def make_router(
    clock: VirtualClock, *, slots: int = 1, queue_limit: int | None = None, idempotent: bool = False
) -> DeploymentRouter:
    config = ModelConfig.model_validate({"runtime": {"predict_concurrency": slots, "predict_idempotent": idempotent}})
    spec = ReplicaSpec("dep1", Path("/nowhere"), config, python="python")
    supervisor = FakeSupervisor(spec, AutoscalingSettings())
    return DeploymentRouter("dep1", name="m", supervisor=supervisor, now=clock.now, queue_limit=queue_limit)


def supervisor(router: DeploymentRouter) -> FakeSupervisor:
    return router._supervisor  # type: ignore[return-value]


def ready(router: DeploymentRouter, rid: str) -> Replica:
    replica = Replica(id=rid, deployment_id="dep1", state=ReplicaState.READY, address=f"unix:/nowhere/{rid}.sock")
    router.ready(router.add(replica))
    return replica


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_queue_is_fifo_when_a_slot_frees() -> None:
    clock = VirtualClock()
    router = make_router(clock)
    ready(router, "a")
    first = await router.acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        handle = await router.acquire()
        order.append(i)
        router.release(handle)

    tasks = [asyncio.create_task(wait(i)) for i in range(20)]
    await settle()
    assert router.queued == 20
    router.release(first)
    await asyncio.gather(*tasks)
    assert order == list(range(20))
    assert router.queued == 0 and router.in_flight == 0


async def test_new_request_does_not_overtake_the_queue() -> None:
    clock = VirtualClock()
    router = make_router(clock, slots=1)
    waiting = asyncio.create_task(router.acquire())
    await settle()
    ready(router, "a")  # the slot goes to the queued request
    handle = await waiting
    late = asyncio.create_task(router.acquire())
    await settle()
    assert not late.done() and router.queued == 1
    router.release(handle)
    router.release(await late)


@pytest.mark.parametrize(
    ("in_flight", "expected"),
    [
        ({"a": 0, "b": 0}, "a"),
        ({"a": 2, "b": 1}, "b"),
        ({"a": 1, "b": 3}, "a"),
        ({"a": 4, "b": 3, "c": 2}, "c"),
    ],
)
async def test_dispatch_picks_most_free_slots(in_flight: dict[str, int], expected: str) -> None:
    router = make_router(VirtualClock(), slots=4)
    for rid, busy in in_flight.items():
        ready(router, rid)
        router.handles[rid].in_flight = busy
    handle = await router.acquire()
    assert handle.id == expected


async def test_full_replicas_queue_and_draining_replicas_take_nothing() -> None:
    router = make_router(VirtualClock(), slots=1)
    ready(router, "a")
    ready(router, "b")
    router.drain(router.handles["b"])
    h = await router.acquire()
    assert h.id == "a"
    task = asyncio.create_task(router.acquire())
    await settle()
    assert router.queued == 1
    router.release(h)
    assert (await task).id == "a"


async def test_concurrency_integral_gives_the_tick_mean() -> None:
    clock = VirtualClock()
    router = make_router(clock, slots=2)
    ready(router, "a")
    h1 = await router.acquire()  # 1 from t=0
    clock.advance(1.0)
    h2 = await router.acquire()  # 2 from t=1
    clock.advance(1.0)
    assert router.take_mean(clock.now()) == pytest.approx(1.5)
    router.release(h1)
    router.release(h2)
    clock.advance(2.0)
    assert router.take_mean(clock.now()) == pytest.approx(0.0)


async def test_queued_requests_count_toward_concurrency() -> None:
    clock = VirtualClock()
    router = make_router(clock)
    tasks = [asyncio.create_task(router.acquire()) for _ in range(3)]
    await settle()
    clock.advance(2.0)
    assert router.concurrency == 3
    assert router.take_mean(clock.now()) == pytest.approx(3.0)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert router.queued == 0


async def test_no_replica_wakes_at_once() -> None:
    router = make_router(VirtualClock())
    task = asyncio.create_task(router.acquire())
    await settle()
    assert supervisor(router).woken == [0]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_queue_limit_answers_429() -> None:
    router = make_router(VirtualClock(), queue_limit=2)
    tasks = [asyncio.create_task(router.acquire()) for _ in range(2)]
    await settle()
    with pytest.raises(Unavailable) as info:
        await router.acquire()
    assert info.value.status == 429
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_timeout_dequeues_cleanly() -> None:
    router = make_router(VirtualClock())
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await router.acquire()
    assert router.queued == 0 and len(router._queue) == 0
    ready(router, "a")
    h = await router.acquire()
    assert h.id == "a"


async def test_fail_queued_answers_every_waiter() -> None:
    router = make_router(VirtualClock())
    tasks = [asyncio.create_task(router.acquire()) for _ in range(3)]
    await settle()
    assert router.fail_queued(Unavailable(503, "deployment failed to load", "boom")) == 3
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, Unavailable) and r.status == 503 for r in results)
    assert router.queued == 0


async def test_unavailable_deployment_answers_503_without_queueing() -> None:
    router = make_router(VirtualClock())
    supervisor(router).unavailable = "the model failed to load: ImportError"
    with pytest.raises(Unavailable) as info:
        await router.acquire()
    assert info.value.status == 503 and "ImportError" in (info.value.reason or "")
    assert router.queued == 0


async def test_unavailable_deployment_answers_a_caller_that_asked_not_to_wait_with_its_503() -> None:
    router = make_router(VirtualClock())
    supervisor(router).unavailable = "the model failed to load: ImportError"
    send = Recorder()
    await router.serve([(b"prefer", b"respond-async")], b"{}", send, None)
    assert send.messages[0]["status"] == 503
    assert "ImportError" in json.loads(send.messages[1]["body"])["reason"]
    assert router.queued == 0


class FakeResponse:
    def __init__(self, status: int = 200, body: bytes = b'{"ok": true}') -> None:
        self.status = status
        self.headers = [(b"content-type", b"application/json")]
        self.chunked = False
        self.complete = True
        self.parts = [body]

    async def body(self) -> bytes:
        return self.parts[0]

    def abort(self) -> None:
        pass


class FakePool:
    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.calls = 0

    async def request(self, head: bytes, body: bytes) -> Any:
        self.calls += 1
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("idempotent", "sent", "retried"),
    [
        (False, False, True),  # never reached the replica (connect refused): always safe to resend
        (True, False, True),
        (True, True, True),  # may have run, but predict is declared idempotent
        (False, True, False),  # may have run, not idempotent: 502, not run twice
    ],
)
async def test_dropped_request_is_retried_only_when_safe(idempotent: bool, sent: bool, retried: bool) -> None:
    router = make_router(VirtualClock(), idempotent=idempotent)
    broken = supervisor(router).broken_ids
    ready(router, "a")
    ready(router, "b")
    router.handles["a"].pool = FakePool(ReplicaGone("EOF", sent=sent))  # type: ignore[assignment]
    second = router.handles["b"].pool = FakePool(FakeResponse())  # type: ignore[assignment]
    send = Recorder()
    await router.serve([], b"{}", send, None)
    assert broken == ["a"]  # replaced either way
    assert router.in_flight == 0 and router.queued == 0
    if retried:
        assert send.status == 200 and send.body == b'{"ok": true}'
        assert router.retries == 1 and second.calls == 1
    else:
        assert send.status == 502 and router.retries == 0 and second.calls == 0
        body = json.loads(send.body)
        assert body["error"] == "replica failed" and body["replica"] == "a"
        assert "replica a failed while serving this request (EOF)" in body["reason"]
        assert "runtime.predict_idempotent" in body["reason"]
        assert router.responses == {502: 1}


async def test_request_failing_twice_gets_502_json() -> None:
    router = make_router(VirtualClock(), idempotent=True)
    ready(router, "a")
    ready(router, "b")
    for rid in "ab":
        router.handles[rid].pool = FakePool(ReplicaGone("EOF"))  # type: ignore[assignment]
    send = Recorder()
    await router.serve([], b"{}", send, None)
    assert send.status == 502
    body = json.loads(send.body)
    assert body["error"] == "replica failed" and body["replica"] == "b"
    assert "two replicas" in body["reason"] and "replica a" in body["reason"]
    assert router.in_flight == 0 and router.queued == 0


async def test_caller_timeout_gets_504_json() -> None:
    router = make_router(VirtualClock())
    send = Recorder()
    await router.serve([], b"{}", send, 0.01)
    assert send.status == 504 and b"timeout" in send.body
    assert router.queued == 0


class HeldPool:
    """A replica still working: it answers when ``answer`` is set.

    Like ReplicaPool, it tells ``on_abandon`` when an exchange whose caller
    gave up has ended.
    """

    def __init__(self, on_abandon: Any) -> None:
        self.answer = asyncio.Event()
        self.calls = 0
        self.on_abandon = on_abandon
        self.tasks: set[asyncio.Task[None]] = set()

    async def request(self, head: bytes, body: bytes) -> Any:
        self.calls += 1
        try:
            await self.answer.wait()
        except asyncio.CancelledError:
            task = asyncio.get_running_loop().create_task(self._ended())
            self.tasks.add(task)
            raise
        return FakeResponse()

    async def _ended(self) -> None:
        await self.answer.wait()
        self.on_abandon(None)

    def close(self) -> None:
        pass


async def test_timed_out_caller_keeps_the_slot_until_the_replica_answers() -> None:
    router = make_router(VirtualClock())
    ready(router, "a")
    ready(router, "b")
    busy = HeldPool(router.handles["a"].pool.on_abandon)  # type: ignore[union-attr]
    router.handles["a"].pool = busy  # type: ignore[assignment]
    other = router.handles["b"].pool = FakePool(FakeResponse())  # type: ignore[assignment]
    send = Recorder()
    await router.serve([], b"{}", send, 0.01)
    assert send.status == 504
    assert router.in_flight == 1 and router.handles["a"].in_flight == 1  # a still runs it
    nxt = Recorder()
    await router.serve([], b"{}", nxt, None)
    assert nxt.status == 200 and other.calls == 1 and busy.calls == 1  # sent to b, not the busy a
    busy.answer.set()  # a answers; the answer is discarded and the slot is free
    await settle()
    assert router.in_flight == 0 and router.handles["a"].in_flight == 0
    assert router.responses == {504: 1, 200: 1}


def test_request_head_drops_hop_headers() -> None:
    head = DeploymentRouter.request_head(
        [(b"host", b"x"), (b"authorization", b"Api-Key k"), (b"content-type", b"application/json"), (b"x-a", b"1")], 7
    )
    assert head.startswith(b"POST /v1/models/model:predict HTTP/1.1\r\n")
    assert b"content-length: 7\r\n" in head and b"content-type: application/json\r\n" in head
    assert b"authorization" not in head and b"x-a: 1\r\n" in head
    assert head.endswith(b"\r\n\r\n")


async def test_caller_that_hangs_up_leaves_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    from swell.serving import _router

    monkeypatch.setattr(_router, "_WATCH_AFTER", 0.0)
    router = make_router(VirtualClock())
    hung_up = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await hung_up.wait()
        return {"type": "http.disconnect"}

    send = Recorder()
    task = asyncio.create_task(router.serve([], b"{}", send, None, receive))
    await settle()
    assert router.queued == 1
    hung_up.set()
    await task
    assert router.queued == 0 and send.messages == []
    assert router.responses == {499: 1}


class EndlessStream:
    """A streamed answer that never ends (a token generator nobody stops)."""

    def __init__(self) -> None:
        self.status = 200
        self.headers = [(b"content-type", b"text/event-stream")]
        self.chunked = True
        self.complete = False
        self.aborted = False

    async def next_chunk(self) -> bytes | None:
        await asyncio.sleep(0)
        if self.aborted:
            raise ReplicaGone("aborted")
        return b"tok "

    def abort(self) -> None:
        self.aborted = True


async def test_caller_that_hangs_up_mid_stream_frees_the_slot() -> None:
    # ASGI servers (uvicorn) drop writes to a closed connection silently, so
    # only the disconnect message tells the router to stop copying.
    router = make_router(VirtualClock())
    ready(router, "a")
    stream = EndlessStream()
    router.handles["a"].pool = FakePool(stream)  # type: ignore[assignment]
    hung_up = asyncio.Event()
    sent = Recorder()

    async def send(message: dict[str, Any]) -> None:
        await sent(message)
        if len(sent.messages) == 5:
            hung_up.set()

    async def receive() -> dict[str, Any]:
        await hung_up.wait()
        return {"type": "http.disconnect"}

    async with asyncio.timeout(5):
        await router.serve([], b"{}", send, None, receive)
    assert stream.aborted
    assert router.in_flight == 0 and router.handles["a"].in_flight == 0
    assert router.responses == {499: 1}


async def test_replica_being_stopped_takes_no_request_when_it_reports_ready() -> None:
    # The controller stops a replica that overran its load timeout; its READY
    # may still arrive before the process dies, and must not route to it.
    router = make_router(VirtualClock())
    replica = Replica(id="a", deployment_id="dep1", state=ReplicaState.LOADING, address="unix:/nowhere/a.sock")
    handle = router.add(replica)
    handle.stopping = True
    replica.state = ReplicaState.READY
    router.ready(handle)
    assert router._pick() is None
