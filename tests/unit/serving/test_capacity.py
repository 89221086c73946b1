"""Capacity pressure: the pure choice of replicas to stop, and the control loop acting on it
(a fake backend with a CPU budget, a virtual clock: no processes, no sleeps)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from serving_harness import settle  # type: ignore[import-not-found]

from swell.autoscaling import VirtualClock
from swell.config import AutoscalingSettings, ModelConfig, ServerSettings
from swell.serving import Controller, Replica, ReplicaSpec, ReplicaState, StateCallback
from swell.serving._capacity import Idle, Waiting, choose_reclaims, describe_idle
from swell.serving._testing import FakeBackend

CPU = {"CPU": 1.0}


def idle(replica: str, last_used: float, *, deployment: str | None = None, **fields: Any) -> Idle:
    deployment = deployment or f"d-{replica}"
    fields.setdefault("holds", CPU)
    return Idle(deployment, f"m/{deployment}", replica, last_used=last_used, **fields)


def asking(needs: dict[str, float] | None = None, replica: str = "w1", deployment: str = "d-new") -> Waiting:
    return Waiting(deployment, f"bert/{deployment}", replica, needs or CPU)


def victims(waiting: list[Waiting], candidates: list[Idle], free: dict[str, dict[str, float]] | None = None,
            now: float = 1000.0) -> list[str]:
    chosen = choose_reclaims(waiting, candidates, free if free is not None else {"": {"CPU": 0.0}}, now)
    return [r.victim.replica_id for r in chosen]


# ---------------------------------------------------------------------- the pure choice


@pytest.mark.parametrize(
    ("needs", "expected"),
    [
        ({"CPU": 1.0}, ["b"]),  # the least recently used
        ({"CPU": 2.0}, ["b", "a"]),  # then the next: only as many as it needs
        ({"CPU": 3.0}, ["b", "a", "c"]),
        ({"CPU": 4.0}, []),  # all three would not make it fit: none is stopped
    ],
)
def test_least_recently_used_go_first_and_only_as_many_as_needed(needs: dict[str, float], expected: list[str]) -> None:
    candidates = [idle("a", 500.0), idle("b", 300.0), idle("c", 900.0)]
    assert victims([asking(needs)], candidates) == expected


def test_min_replica_is_a_floor() -> None:
    candidates = [
        idle("a1", 100.0, deployment="d-a", replicas=2, min_replica=1),
        idle("a2", 110.0, deployment="d-a", replicas=2, min_replica=1),
        idle("b", 200.0, min_replica=1, replicas=1),  # at its floor: never
        idle("c", 300.0),
    ]
    # Two CPUs: one of d-a's two (the other keeps it at min_replica 1), then c.
    assert victims([asking({"CPU": 2.0})], candidates) == ["a1", "c"]
    assert victims([asking({"CPU": 3.0})], candidates) == []


@pytest.mark.parametrize("busy", [{"in_flight": 1}, {"queued": 3}])
def test_a_replica_serving_or_with_queued_work_is_untouched(busy: dict[str, int]) -> None:
    candidates = [idle("busy", 1.0, **busy), idle("free", 500.0)]
    assert victims([asking()], candidates) == ["free"]
    assert victims([asking()], [idle("busy", 1.0, **busy)]) == []


def test_nothing_is_stopped_when_nothing_can_help() -> None:
    only_cpu = [idle("a", 1.0), idle("b", 2.0)]
    assert victims([asking({"GPU": 1.0})], only_cpu, {"": {"CPU": 0.0, "GPU": 0.0}}) == []
    assert victims([asking({"CPU": 1.0, "memory": 2.0**30})], only_cpu, {"": {"CPU": 0.0, "memory": 0.0}}) == []
    # A replica that holds nothing it lacks is passed over for one that does.
    memory = idle("m", 5.0, holds={"memory": 2.0**30})
    assert victims([asking({"memory": 2.0**30})], [idle("a", 1.0), memory], {"": {"memory": 0.0}}) == ["m"]


def test_a_replica_nobody_waits_for_claims_no_room() -> None:
    scale_out = Waiting("d-new", "bert/d-new", "w1", CPU, demand=False)
    assert victims([scale_out], [idle("a", 1.0)]) == []
    assert victims([scale_out, asking(replica="w2")], [idle("a", 1.0)]) == ["a"]


def test_its_own_deployment_never_gives_way() -> None:
    mine = idle("mine", 1.0, deployment="d-new", replicas=2)
    assert victims([asking()], [mine]) == []
    assert victims([asking()], [mine, idle("other", 9.0)]) == ["other"]


def test_room_already_free_or_coming_back_stops_nothing() -> None:
    candidates = [idle("a", 1.0)]
    assert victims([asking()], candidates, {"": {"CPU": 1.0}}) == []
    # Two wait for one CPU that is free: the first takes it, the second gets a victim.
    assert victims([asking(replica="w1"), asking(replica="w2")], candidates, {"": {"CPU": 1.0}}) == ["a"]


def test_each_waiting_replica_in_turn_gets_its_own_room() -> None:
    candidates = [idle("a", 100.0), idle("b", 200.0), idle("c", 300.0)]
    chosen = choose_reclaims(
        [asking(replica="w1"), asking(replica="w2", deployment="d-other")], candidates, {"": {"CPU": 0.0}}, 1000.0
    )
    assert [(r.victim.replica_id, r.waiting.replica_id) for r in chosen] == [("a", "w1"), ("b", "w2")]


def test_on_a_cluster_the_node_where_fewest_replicas_give_way_is_chosen() -> None:
    candidates = [
        idle("n1-a", 1.0, node="n1", holds={"CPU": 1.0}),
        idle("n1-b", 2.0, node="n1", holds={"CPU": 1.0}),
        idle("n2-a", 50.0, node="n2", holds={"CPU": 2.0}),
    ]
    free = {"n1": {"CPU": 0.0}, "n2": {"CPU": 0.0}}
    assert victims([asking({"CPU": 2.0})], candidates, free) == ["n2-a"]
    # As few on either node: the node whose replica was used longest ago.
    one_each = [idle("n1-a", 9.0, node="n1"), idle("n2-a", 3.0, node="n2")]
    assert victims([asking()], one_each, free) == ["n2-a"]
    # Room on two nodes does not add up: one CPU free on each is not two on one.
    assert victims([asking({"CPU": 2.0})], [], {"n1": {"CPU": 1.0}, "n2": {"CPU": 1.0}}) == []


def test_the_reason_says_which_replica_for_whom_and_why() -> None:
    [reclaim] = choose_reclaims(
        [Waiting("dep-2", "bert/dep-2", "r9", {"CPU": 1.0})],
        [Idle("dep-1", "iris/dep-1", "r3", {"CPU": 1.0}, last_used=1000.0 - 130)],
        {"": {"CPU": 0.0}},
        1000.0,
    )
    assert reclaim.reason == (
        "stopped idle replica r3 of iris/dep-1 (idle 2m10s, above min_replica 0) "
        "to make room for bert/dep-2: needs 1 CPU, 0 free"
    )
    [reclaim] = choose_reclaims(
        [Waiting("dep-2", "bert/dep-2", "r9", {"memory": 512.0 * 2**20})],
        [Idle("dep-1", "iris/dep-1", "r3", {"memory": 1024.0 * 2**20}, last_used=990.0, node="10.0.0.2 (node ab)")],
        {"10.0.0.2 (node ab)": {"memory": 256.0 * 2**20}},
        1000.0,
    )
    assert reclaim.reason.endswith("needs 512Mi of memory, 256Mi free on 10.0.0.2 (node ab)")


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (42.7, "42s"), (130, "2m10s"), (3900, "1h05m")])
def test_idle_time_reads_as_a_person_writes_it(seconds: float, text: str) -> None:
    assert describe_idle(seconds) == text


# ---------------------------------------------------------------------- the control loop acting on it


class CpuBackend(FakeBackend):
    """A fake backend with ``cpu`` CPUs: a replica that does not fit waits as pending, and starts,
    first come first served, when a stopped one gives its CPU back (as the process backend does)."""

    def __init__(self, cpu: float) -> None:
        super().__init__()
        self.cpu = cpu
        self.used = 0.0
        self.pending: list[Replica] = []

    async def start(self, spec: ReplicaSpec, on_change: StateCallback) -> Replica:
        replica = await super().start(spec, on_change)
        replica.holds = {"CPU": spec.config.resources.cpu_cores}
        if self.used + replica.holds["CPU"] > self.cpu:
            replica.state = ReplicaState.PENDING
            replica.reason = "waiting for resources"
            self.pending.append(replica)
        else:
            self.used += replica.holds["CPU"]
        return replica

    async def stop(self, replica: Replica, grace_seconds: float) -> None:
        if replica in self.pending:
            self.pending.remove(replica)
        elif replica.state.alive or replica.state is ReplicaState.DRAINING:
            self.used -= replica.holds["CPU"]
        await super().stop(replica, grace_seconds)
        for waiting in list(self.pending):
            if self.used + waiting.holds["CPU"] <= self.cpu:
                self.pending.remove(waiting)
                self.used += waiting.holds["CPU"]
                self.set_state(waiting.id, ReplicaState.STARTING)

    def free_resources(self) -> dict[str, dict[str, float]]:
        return {"": {"CPU": self.cpu - self.used}}

    def place_first(self, replica: Replica) -> None:
        if replica in self.pending:
            self.pending.remove(replica)
            self.pending.insert(0, replica)


class Events:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, dict[str, Any]]] = []

    def record(self, deployment_id: str, kind: str, message: str, **fields: Any) -> None:
        self.rows.append((deployment_id, kind, message, fields))

    def of(self, kind: str) -> list[tuple[str, str, dict[str, Any]]]:
        return [(d, m, f) for d, k, m, f in self.rows if k == kind]


SETTINGS = AutoscalingSettings(autoscaling_window=60, scale_down_delay=900, max_replica=2)


def loop(cpu: float = 1.0, policy: str = "reclaim", deployments: tuple[str, ...] = ("d1", "d2")) -> tuple[
    Controller, CpuBackend, VirtualClock, Events
]:
    clock = VirtualClock(100.0)
    backend = CpuBackend(cpu)
    events = Events()
    controller = Controller(
        backend, settings=ServerSettings(tick_seconds=1.0, drain_grace_seconds=0, capacity_policy=policy),  # type: ignore[arg-type]
        clock=clock, wall_clock=lambda: 1.7e9 + clock.now(), events=events,
    )
    config = ModelConfig.model_validate({"resources": {"cpu": "1"}})
    for deployment_id in deployments:
        controller.add(deployment_id, name=f"m{deployment_id[1:]}",
                       spec=ReplicaSpec(deployment_id, Path("/nowhere"), config, python="python"), settings=SETTINGS)
    return controller, backend, clock, events


async def ticks(controller: Controller, clock: VirtualClock, count: int) -> None:
    for _ in range(count):
        clock.advance(1.0)
        await controller.tick()
        await settle()


async def serve_one(controller: Controller, backend: CpuBackend, deployment_id: str) -> str:
    """A request to ``deployment_id``: wakes it, waits for a replica, which the test readies; returns its id."""
    scaled = controller.get(deployment_id)
    assert scaled is not None
    task = asyncio.create_task(scaled.router.acquire())
    await settle()
    [replica] = [r for r in backend.alive(deployment_id) if r.state is not ReplicaState.READY] or [None]
    if replica is not None and replica.state is ReplicaState.STARTING:
        backend.ready(replica.id)
    handle = await asyncio.wait_for(task, 1.0)
    scaled.router.release(handle)
    return handle.id


async def test_a_called_model_serves_by_stopping_the_least_recently_used_idle_replica() -> None:
    controller, backend, clock, events = loop()
    first = await serve_one(controller, backend, "d1")
    await ticks(controller, clock, 130)
    second_scaled = controller.get("d2")
    assert second_scaled is not None
    task = asyncio.create_task(second_scaled.router.acquire())
    await settle()
    # d2's replica waited for d1's CPU; d1's idle replica was stopped and d2's started.
    assert first in backend.stopped
    [started] = backend.alive("d2")
    assert started.state is ReplicaState.STARTING
    backend.ready(started.id)
    second_scaled.router.release(await asyncio.wait_for(task, 1.0))
    [(_, message, details), (_, same, _)] = events.of("capacity_reclaimed")
    assert message == same and message.startswith(f"stopped idle replica {first} of m1/d1 (idle 2m")
    assert message.endswith("above min_replica 0) to make room for m2/d2: needs 1 CPU, 0 free")
    assert [d for d, _, _ in events.of("capacity_reclaimed")] == ["d1", "d2"]
    assert details["for_deployment_id"] == "d2" and details["replica_id"] == first
    d1 = controller.get("d1")
    assert d1 is not None and d1.reclaimed is not None and d1.reclaimed[1] == message
    # d1's window still remembers its traffic, but it does not start again and take the room back ...
    await ticks(controller, clock, 5)
    assert backend.alive("d1") == [] and d1.decision is not None
    assert "stopped to make room for another deployment" in d1.decision.reason
    # ... until it is called: then d2's idle replica gives way in turn.
    assert await serve_one(controller, backend, "d1") not in (first, started.id)
    assert started.id in backend.stopped


async def test_policy_off_leaves_the_replica_waiting() -> None:
    controller, backend, clock, events = loop(policy="off")
    await serve_one(controller, backend, "d1")
    await ticks(controller, clock, 5)
    d2 = controller.get("d2")
    assert d2 is not None
    task = asyncio.create_task(d2.router.acquire())
    await ticks(controller, clock, 5)
    assert backend.stopped == [] and [r.state for r in backend.alive("d2")] == [ReplicaState.PENDING]
    assert events.of("capacity_reclaimed") == []
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_busy_replica_gives_way_only_once_it_is_idle() -> None:
    controller, backend, clock, _ = loop()
    d1 = controller.get("d1")
    d2 = controller.get("d2")
    assert d1 is not None and d2 is not None
    task = asyncio.create_task(d1.router.acquire())
    await settle()
    backend.ready(backend.alive("d1")[0].id)
    busy = await task  # held: a request in flight
    waiting = asyncio.create_task(d2.router.acquire())
    await ticks(controller, clock, 3)
    assert backend.stopped == []
    d1.router.release(busy)
    await ticks(controller, clock, 1)
    assert backend.stopped[0] == busy.id
    # d1's own second replica (its rule wanted two) waited for room as well, but nobody
    # waited for it: the room went to d2's, and d1 gave that one up.
    await ticks(controller, clock, 1)
    assert backend.alive("d1") == []
    # (at 70 % utilisation one request wants two replicas: the second waits, nothing else can give way)
    [started] = [r for r in backend.alive("d2") if r.state is ReplicaState.STARTING]
    backend.ready(started.id)
    d2.router.release(await asyncio.wait_for(waiting, 1.0))


async def test_min_replica_holds_its_replica_and_nothing_is_stopped() -> None:
    controller, backend, clock, events = loop()
    controller.update_settings("d1", SETTINGS.model_copy(update={"min_replica": 1}))
    await ticks(controller, clock, 1)
    backend.ready(backend.alive("d1")[0].id)
    await ticks(controller, clock, 10)
    d2 = controller.get("d2")
    assert d2 is not None
    task = asyncio.create_task(d2.router.acquire())
    await ticks(controller, clock, 3)
    assert backend.stopped == [] and events.of("capacity_reclaimed") == []
    assert [r.state for r in backend.alive("d2")] == [ReplicaState.PENDING]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
