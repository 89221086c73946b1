"""The Ray backend's own bookkeeping, without a cluster (its placement rules: test_ray_placement.py)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import pytest
from ray.exceptions import RayActorError

from swell.config import ModelConfig
from swell.serving import Replica, ReplicaSpec, ReplicaState
from swell.serving.backends.ray import RayBackend


async def test_concurrent_connects_join_the_cluster_once() -> None:
    # The server's prewarm and the first replica's start ask at once; a second
    # ray.init while the first is in flight raises ("called ray.init twice").
    backend = RayBackend("127.0.0.1:1")
    joins: list[int] = []
    inside = threading.Lock()

    def init() -> None:
        assert inside.acquire(blocking=False), "a second join began while one was in flight"
        try:
            time.sleep(0.05)  # ray.init takes a while (a thread of its own)
            joins.append(1)
        finally:
            inside.release()

    backend._init = init  # type: ignore[method-assign]
    await asyncio.gather(backend.connect(), backend.connect(), backend.prewarm())
    assert joins == [1]


async def test_a_package_s_object_is_let_go_once_its_folder_is_removed(tmp_path, monkeypatch) -> None:
    # ray.put is the only cluster call: what it was given is what the store would pin.
    import ray

    stored: list[bytes] = []
    monkeypatch.setattr(ray, "put", lambda data: stored.append(data) or f"ref-{len(stored)}")
    backend = RayBackend("127.0.0.1:1")
    folders = []
    for version in ("v1", "v2"):
        folder = tmp_path / version
        (folder / "model").mkdir(parents=True)
        (folder / "model" / "model.py").write_text(f"# {version}\n")
        folders.append(folder)
    first = await backend._package(folders[0])
    assert await backend._package(folders[0]) == first  # packed and stored once
    (folders[0] / "model" / "model.py").unlink()
    (folders[0] / "model").rmdir()
    folders[0].rmdir()  # the deployment was deleted: its folder removed later
    second = await backend._package(folders[1])
    assert second != first and len(stored) == 2
    assert list(backend._packages) == [folders[1]]


# ---------------------------------------------------------------- races, with Ray faked
#
# A fake of the few Ray calls the backend makes: actors whose remote calls are futures
# the test answers (placement, start, events), and ray.kill, which fails what an actor
# still owes, as Ray does once it has ended it.


class _Method:
    def __init__(self, actor: _FakeActor, name: str) -> None:
        self.actor, self.name = actor, name

    def remote(self, *args: object) -> asyncio.Future[object]:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if self.actor.killed and not self.actor.cluster.kill_lags:
            future.set_exception(RayActorError())
        elif self.name == "where" and self.actor.cluster.places_at_once:
            future.set_result(_WHERE)
        else:
            self.actor.owed.append((self.name, future))
        return future


class _FakeActor:
    def __init__(self, cluster: _FakeCluster, options: dict[str, object]) -> None:
        self.cluster, self.options = cluster, options
        self.killed = False
        self.owed: list[tuple[str, asyncio.Future[object]]] = []
        for name in ("where", "start", "events", "stop"):
            setattr(self, name, _Method(self, name))

    def answer(self, name: str, value: object) -> None:
        for i, (called, future) in enumerate(self.owed):
            if called == name and not future.done():
                del self.owed[i]
                future.set_result(value)
                return
        raise AssertionError(f"nothing asked {name} of this actor")

    def kill(self) -> None:
        self.killed = True
        if self.cluster.kill_lags:  # Ray's kill is asynchronous: what it owes fails later
            return
        for _, future in self.owed:
            if not future.done():
                future.set_exception(RayActorError())
        self.owed.clear()


class _FakeCluster:
    def __init__(self) -> None:
        self.actors: list[_FakeActor] = []
        self.kill_lags = False
        self.places_at_once = False  # where() answers at once

    def options(self, **options: object) -> _FakeCluster._Bound:
        return _FakeCluster._Bound(self, options)

    class _Bound:
        def __init__(self, cluster: _FakeCluster, options: dict[str, object]) -> None:
            self.cluster, self.options = cluster, options

        def remote(self, prestart: bool) -> _FakeActor:
            actor = _FakeActor(self.cluster, self.options)
            self.cluster.actors.append(actor)
            return actor


_WHERE = {"node_id": "a" * 32, "address": "10.0.0.2"}


def _started(replica_id: str) -> dict[str, object]:
    return {"address": "http://10.0.0.2:4000", "pid": 42, "argv": ["python"], "prestarted": False}


@pytest.fixture
def fake_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[RayBackend, _FakeCluster]:
    import ray

    cluster = _FakeCluster()
    monkeypatch.setattr(ray, "kill", lambda actor, no_restart=True: actor.kill())
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    backend = RayBackend("127.0.0.1:1", log_dir=tmp_path / "logs", standbys=0, pending_poll_seconds=60.0)
    backend._connected = True
    backend._actor_class = cluster

    async def package(package_dir: Path) -> tuple[str, object]:
        return "0" * 64, "ref"

    backend._package = package  # type: ignore[method-assign]
    backend._why_pending = lambda options: "needs 1 CPU; no node has one free"  # type: ignore[method-assign]
    return backend, cluster


def _spec(deployment_id: str = "dep1") -> ReplicaSpec:
    return ReplicaSpec(deployment_id, Path("/nowhere"), ModelConfig(), python=sys.executable)


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_start_that_close_overtakes_places_no_actor(fake_ray) -> None:
    # The controller's start of a replica may still be packing the package when the
    # server shuts down (it cancels its tasks only after the backend's close): what it
    # places then is never stopped, and Ray called after ray.shutdown() joins anew.
    backend, cluster = fake_ray
    packed = asyncio.Event()

    async def slow_package(package_dir: Path) -> tuple[str, object]:
        await packed.wait()
        return "0" * 64, "ref"

    backend._package = slow_package  # type: ignore[method-assign]
    starting = asyncio.create_task(backend.start(_spec(), lambda replica: None))
    await _settle()
    await backend.close()
    packed.set()
    with pytest.raises(RuntimeError, match="closed"):
        await starting
    assert cluster.actors == [] and backend.list() == []


async def test_a_replica_asked_to_stop_while_ray_placed_it_is_never_reported_starting(fake_ray) -> None:
    backend, cluster = fake_ray
    states: list[ReplicaState] = []
    replica = await backend.start(_spec(), lambda r: states.append(r.state))
    await _settle()
    (actor,) = cluster.actors
    actor.answer("where", _WHERE)  # Ray placed it just as the stop came
    await backend.stop(replica, 1.0)
    assert states[states.index(ReplicaState.DRAINING):] == [ReplicaState.DRAINING, ReplicaState.STOPPED]
    assert actor.killed and not any(name == "start" for name, _ in actor.owed)


async def test_a_deployment_s_token_is_let_go_with_its_last_replica(fake_ray) -> None:
    # One token per deployment while it has replicas; a server that deploys for months
    # must not keep one for every deployment it ever ran.
    backend, _ = fake_ray
    first = await backend.start(_spec("dep1"), lambda r: None)
    second = await backend.start(_spec("dep1"), lambda r: None)
    other = await backend.start(_spec("dep2"), lambda r: None)
    assert first.token == second.token != other.token
    await backend.stop(first, 1.0)
    assert backend._tokens.keys() == {"dep1", "dep2"}  # its other replica still uses it
    await backend.stop(second, 1.0)
    await backend.stop(other, 1.0)
    assert backend._tokens == {}


async def test_a_replica_asked_to_stop_while_it_waits_takes_no_standby(fake_ray) -> None:
    # A standby of its shape placed meanwhile is kept for the next replica, not taken
    # (and killed) for one that is stopping, nor dropped to make room for it.
    from swell.serving.backends.ray._backend import _shape, _Standby

    backend, cluster = fake_ray
    backend._poll = 0.0
    cluster.kill_lags = True
    replica = await backend.start(_spec(), lambda r: None)
    (actor,) = cluster.actors
    standby = _Standby(_FakeActor(cluster, actor.options), _shape(actor.options), where=_WHERE)
    backend._standbys[standby.key] = [standby]
    await backend.stop(replica, 1.0)
    assert backend._standbys[standby.key] == [standby] and not standby.actor.killed
    assert replica.state is ReplicaState.STOPPED


async def test_close_leaves_no_task_of_the_backend_running(fake_ray) -> None:
    # A standby dropped to make room is watched until Ray has ended it (up to 30 s):
    # that watch, like every task the backend started, ends with close().
    from swell.serving.backends.ray._backend import _shape, _Standby

    backend, cluster = fake_ray
    backend._poll = 0.0
    cluster.kill_lags = True
    options = {"num_cpus": 2.0}
    standby = _Standby(_FakeActor(cluster, options), _shape(options))  # not placed yet
    backend._standbys[standby.key] = [standby]
    await backend.start(_spec(), lambda r: None)
    for _ in range(50):
        if not backend._standbys[standby.key]:
            break
        await asyncio.sleep(0)
    assert backend._standbys[standby.key] == [] and standby.actor.killed  # it gave way
    await backend.close()
    await _settle()
    assert [task for task in asyncio.all_tasks() if task is not asyncio.current_task()] == []


async def test_a_job_its_node_cannot_run_fails_with_the_node_s_error_in_plain_words(fake_ray) -> None:
    # Ray raises what the actor raised wrapped in a RayTaskError, whose text starts with a
    # terminal-coloured "ray::ReplicaActor.start() (pid=…, ip=…)" line and Ray's traceback.
    import traceback

    from ray.exceptions import RayTaskError

    backend, cluster = fake_ray
    states: list[ReplicaState] = []
    replica = await backend.start(_spec(), lambda r: states.append(r.state))
    await _settle()
    (actor,) = cluster.actors
    actor.answer("where", _WHERE)
    await _settle()
    try:
        raise OSError(28, "No space left on device")
    except OSError as exc:
        failure = RayTaskError("ReplicaActor.start", traceback.format_exc(), exc, proctitle="ray::ReplicaActor.start",
                               pid=7, ip="10.0.0.2").as_instanceof_cause()
    ((_, started),) = [(name, future) for name, future in actor.owed if name == "start"]
    started.set_exception(failure)
    await _settle()
    assert states[-1] is ReplicaState.FAILED and backend.list() == []
    assert replica.error is not None and "\x1b" not in replica.error
    assert replica.error.splitlines()[0] == (
        "the replica could not start on 10.0.0.2 (node aaaaaaaaaaaa): [Errno 28] No space left on device"
    )


async def test_a_replica_shows_signs_of_life_while_its_node_prepares_the_job(fake_ray) -> None:
    # Building a requirements venv on the node (torch: minutes) sends no event: without a
    # sign of life the controller failed it after load_stall_seconds, and its replacement
    # waited on the same build's lock, failing again.  (load_timeout_seconds still bounds it.)
    backend, cluster = fake_ray
    backend._poll = 0.0
    cluster.places_at_once = True
    replica = await backend.start(_spec(), lambda r: None)
    await _settle()
    (actor,) = cluster.actors
    assert replica.state is ReplicaState.STARTING
    before = replica.progress
    await _settle()
    assert replica.progress > before, "no sign of life while the node prepares the job"
    actor.answer("start", _started(replica.id))
    await _settle()
    assert replica.address == "http://10.0.0.2:4000"
    actor.kill()  # its node is lost: the replica ends
    await _settle()
    assert replica.state is ReplicaState.FAILED


async def test_a_pending_replica_outlives_a_failed_look_at_the_cluster(fake_ray) -> None:
    # Why it waits is a description, read from Ray's control store every poll; a look
    # that fails (the store restarting, a timeout) must not fail the replica that waits.
    backend, cluster = fake_ray
    backend._poll = 0.0
    loop = asyncio.get_running_loop()
    looked_again = asyncio.Event()
    looks: list[int] = []

    def why_pending(options: dict[str, object]) -> str:
        looks.append(1)
        if len(looks) == 1:
            raise ConnectionError("the GCS did not answer")
        loop.call_soon_threadsafe(looked_again.set)
        return "needs 1 CPU; no node has one free"

    backend._why_pending = why_pending  # type: ignore[method-assign]
    started = asyncio.Event()

    def on_change(replica: Replica) -> None:
        if replica.state is ReplicaState.STARTING:
            started.set()

    replica = await backend.start(_spec(), on_change)
    await asyncio.wait_for(looked_again.wait(), 10)
    assert replica.state is ReplicaState.PENDING and backend.list() == [replica]
    (actor,) = cluster.actors
    actor.answer("where", _WHERE)
    await asyncio.wait_for(started.wait(), 10)
    actor.kill()
    await _settle()


async def test_a_fault_in_supervising_a_replica_fails_it_saying_so(fake_ray) -> None:
    backend, cluster = fake_ray
    cluster.places_at_once = True
    replica = await backend.start(_spec(), lambda r: None)
    await _settle()
    (actor,) = cluster.actors
    actor.answer("start", _started(replica.id))
    await _settle()
    actor.answer("events", {"surprise": True})  # not what the node sends: a bug on either side
    await _settle()
    assert replica.state is ReplicaState.FAILED and backend.list() == []
    assert replica.error == "the server lost track of it: KeyError: 'output'"
    assert actor.killed  # and its actor (with its process) ends
