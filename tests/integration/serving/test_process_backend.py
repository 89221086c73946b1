"""The process backend with real processes: states, predict over the socket,
graceful stop, failures, and no orphans when the server is killed with -9."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop

from swell.config import load_model_config
from swell.serving import Replica, ReplicaSpec, ReplicaState
from swell.serving.backends import ProcessBackend

pytestmark = [pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
S = ReplicaState

# Stands in for the model server where the backend itself is under test: it
# says it is ready and then ignores both SIGTERM's meaning and the lifeline,
# so only the kernel's parent-death signal can end it.
STUBBORN_MODULE = "swell_stubborn_replica"
STUBBORN = """
import json, os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with os.fdopen(int(os.environ["SWELL_EVENTS_FD"]), "w") as events:
    events.write(json.dumps({"event": "ready", "load_seconds": 0}) + "\\n")
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    time.sleep(0.5)
"""


ECHO = """
class Model:
    def __init__(self, **kwargs):
        pass

    def load(self):
        pass

    def predict(self, model_input):
        return {"echo": model_input}
"""

SLOW_PREDICT = """
import pathlib, time

class Model:
    def __init__(self, **kwargs):
        pass

    def load(self):
        pass

    def predict(self, model_input):
        pathlib.Path(model_input["marker"]).touch()
        time.sleep(1.0)
        return {"done": True}
"""

STUCK_PREDICT = """
import pathlib, time

class Model:
    def __init__(self, **kwargs):
        pass

    def predict(self, model_input):
        pathlib.Path(model_input["marker"]).touch()
        time.sleep(10.0)
        return {"done": True}
"""

LOAD_RAISES = """
class Model:
    def __init__(self, **kwargs):
        pass

    def load(self):
        raise RuntimeError("weights are corrupt: checksum 0xdead")

    def predict(self, model_input):
        return model_input
"""

CRASH_AT_IMPORT = """
import os, sys
print("about to crash on purpose", file=sys.stderr, flush=True)
os._exit(7)
"""


def _package(root: Path, model_py: str, name: str = "pkg") -> Path:
    package = root / name
    (package / "model").mkdir(parents=True)
    (package / "config.yaml").write_text(f"model_name: {name}\n")
    (package / "model" / "model.py").write_text(textwrap.dedent(model_py))
    (package / f"{STUBBORN_MODULE}.py").write_text(STUBBORN)
    return package


def _spec(package: Path, deployment_id: str = "dep1") -> ReplicaSpec:
    config, _ = load_model_config(package)
    return ReplicaSpec(
        deployment_id=deployment_id, package_dir=package, config=config, python=sys.executable
    )


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class Recorder:
    """The ``on_change`` callback: remembers every state, wakes waiters."""

    def __init__(self) -> None:
        self.states: list[ReplicaState] = []
        self._changed = asyncio.Event()

    def __call__(self, replica: Replica) -> None:
        self.states.append(replica.state)
        self._changed.set()

    async def wait_for(self, *states: ReplicaState, timeout: float = 20.0) -> ReplicaState:
        deadline = time.monotonic() + timeout
        while True:
            for state in self.states:
                if state in states:
                    return state
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"never reached {states}; saw {self.states}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass


Case = Callable[[Path, ProcessBackend], Awaitable[None]]
_RUNNERS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}
#: (event loop, how replicas start): the server runs uvloop and forks.
MODES = [("asyncio", "spawn"), ("uvloop", "spawn"), ("uvloop", "fork")]


def each_mode(case: Case) -> Callable[[Path, str, str], None]:
    """Run ``case`` on asyncio's loop and on uvloop, with replicas spawned and
    forked from the fork server, each time with a fresh backend."""

    @pytest.mark.parametrize(("loop", "start"), MODES)
    def test(tmp_path: Path, loop: str, start: str) -> None:
        async def body() -> None:
            backend = ProcessBackend(
                log_dir=tmp_path / "logs", failed_grace_seconds=2.0, warm_start=start == "fork"
            )
            try:
                assert await backend.prewarm() is (start == "fork")
                await asyncio.wait_for(case(tmp_path, backend), 45)
            finally:
                await backend.close()

        _RUNNERS[loop](body())

    test.__doc__ = case.__doc__
    return test


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _client(replica: Replica) -> httpx.AsyncClient:
    assert replica.address.startswith("unix:")
    transport = httpx.AsyncHTTPTransport(uds=replica.address.removeprefix("unix:"))
    return httpx.AsyncClient(transport=transport, base_url="http://replica", timeout=20.0)


def _echo_package(tmp_path: Path) -> Path:
    if (EXAMPLES / "echo" / "config.yaml").is_file():
        return EXAMPLES / "echo"
    return _package(tmp_path, ECHO, "echo")


@each_mode
async def test_starts_loads_serves_and_stops(tmp_path: Path, backend: ProcessBackend) -> None:
    package = _echo_package(tmp_path)
    rec = Recorder()
    replica = await backend.start(_spec(package), rec)
    assert replica.state is S.STARTING
    assert replica.id.startswith("r-") and replica.pid is not None
    # Forked replicas are the fork server's children; spawned ones ours.
    assert (_parent(replica.pid) == os.getpid()) is not backend.warm
    assert backend.list() == [replica]
    await rec.wait_for(S.READY, S.FAILED)
    assert replica.state is S.READY, replica.error
    assert rec.states[0] is S.LOADING and rec.states[-1] is S.READY
    assert replica.load_seconds is not None and replica.load_seconds >= 0
    assert replica.ready_at is not None and replica.ready_at >= replica.created_at
    sock = Path(replica.address.removeprefix("unix:"))
    assert sock.exists()

    async with _client(replica) as client:
        reply = await client.post("/v1/models/model:predict", json={"text": "hi"})
    assert reply.status_code == 200
    assert "hi" in reply.text

    await backend.stop(replica, grace_seconds=5)
    assert replica.state is S.STOPPED
    assert rec.states[-2:] == [S.DRAINING, S.STOPPED]
    assert not _alive(replica.pid)
    assert not sock.exists()
    assert backend.list() == []
    assert backend.log_path(replica).is_file()
    await backend.stop(replica, grace_seconds=5)  # twice is harmless
    assert replica.state is S.STOPPED


@each_mode
async def test_sigterm_finishes_the_request_in_flight(tmp_path: Path, backend: ProcessBackend) -> None:
    rec = Recorder()
    replica = await backend.start(_spec(_package(tmp_path, SLOW_PREDICT)), rec)
    await rec.wait_for(S.READY, S.FAILED)
    assert replica.state is S.READY, replica.error
    marker = tmp_path / "predict-started"
    async with _client(replica) as client:
        call = asyncio.create_task(
            client.post("/v1/models/model:predict", json={"marker": str(marker)})
        )
        deadline = time.monotonic() + 10
        while not marker.exists():
            assert time.monotonic() < deadline, "predict never started"
            await asyncio.sleep(0.01)
        await backend.stop(replica, grace_seconds=10)
        reply = await call
    assert reply.status_code == 200
    assert reply.json() == {"done": True}
    assert replica.state is S.STOPPED
    assert not _alive(replica.pid)


@each_mode
async def test_grace_runs_out_then_sigkill(tmp_path: Path, backend: ProcessBackend) -> None:
    rec = Recorder()
    replica = await backend.start(_spec(_package(tmp_path, STUCK_PREDICT)), rec)
    await rec.wait_for(S.READY, S.FAILED)
    marker = tmp_path / "predict-started"
    async with _client(replica) as client:
        call = asyncio.create_task(
            client.post("/v1/models/model:predict", json={"marker": str(marker)})
        )
        deadline = time.monotonic() + 10
        while not marker.exists():
            assert time.monotonic() < deadline, "predict never started"
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await backend.stop(replica, grace_seconds=0.2)
        assert time.monotonic() - started < 5  # did not wait for the 10 s predict
        with pytest.raises(httpx.HTTPError):
            await call
    assert replica.state is S.STOPPED


@each_mode
async def test_load_raising_fails_with_the_traceback(tmp_path: Path, backend: ProcessBackend) -> None:
    rec = Recorder()
    replica = await backend.start(_spec(_package(tmp_path, LOAD_RAISES)), rec)
    await rec.wait_for(S.FAILED, S.READY)
    assert replica.state is S.FAILED
    assert replica.error is not None
    assert "weights are corrupt: checksum 0xdead" in replica.error
    assert "Traceback" in replica.error and "RuntimeError" in replica.error
    # The useless process is ended, and it keeps FAILED with its traceback.
    deadline = time.monotonic() + 10
    while _alive(replica.pid or 0):
        assert time.monotonic() < deadline, "failed replica was not ended"
        await asyncio.sleep(0.02)
    await backend.stop(replica, grace_seconds=1)
    assert replica.state is S.FAILED and "0xdead" in (replica.error or "")


@each_mode
async def test_exit_before_ready_fails_with_the_log_tail(tmp_path: Path, backend: ProcessBackend) -> None:
    rec = Recorder()
    replica = await backend.start(_spec(_package(tmp_path, CRASH_AT_IMPORT)), rec)
    await rec.wait_for(S.FAILED, S.READY)
    assert replica.state is S.FAILED
    assert replica.error is not None
    assert "exited with code 7" in replica.error
    assert "about to crash on purpose" in replica.error


@each_mode
async def test_killed_replica_is_failed(tmp_path: Path, backend: ProcessBackend) -> None:
    rec = Recorder()
    replica = await backend.start(_spec(_echo_package(tmp_path)), rec)
    await rec.wait_for(S.READY, S.FAILED)
    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGKILL)
    await rec.wait_for(S.FAILED)
    assert replica.state is S.FAILED
    assert "was killed by SIGKILL" in (replica.error or "")
    assert backend.list() == []


@each_mode
async def test_unstartable_interpreter_fails_at_once(tmp_path: Path, backend: ProcessBackend) -> None:
    package = _package(tmp_path, ECHO)
    spec = _spec(package)
    bad = ReplicaSpec(
        deployment_id=spec.deployment_id,
        package_dir=package,
        config=spec.config,
        python=str(tmp_path / "no-such-python"),
    )
    replica = await backend.start(bad, Recorder())
    assert replica.state is S.FAILED
    assert "no-such-python" in (replica.error or "")
    assert backend.list() == []


@each_mode
async def test_close_stops_every_replica(tmp_path: Path, _: ProcessBackend) -> None:
    backend = ProcessBackend(tmp_path / "run")
    package = _package(tmp_path, ECHO)
    recs = [Recorder() for _ in range(2)]
    replicas = [await backend.start(_spec(package, f"dep{i}"), rec) for i, rec in enumerate(recs)]
    for rec in recs:
        await rec.wait_for(S.READY, S.FAILED)
    assert all(r.address.startswith(f"unix:{tmp_path / 'run'}") for r in replicas)
    await backend.close()
    assert [r.state for r in replicas] == [S.STOPPED, S.STOPPED]
    assert not any(_alive(r.pid or 0) for r in replicas)
    assert (tmp_path / "run" / "logs" / "dep1" / f"{replicas[1].id}.log").is_file()
    with pytest.raises(RuntimeError):
        await backend.start(_spec(package), Recorder())


@each_mode
async def test_replicas_of_a_dead_fork_server_fail_and_a_new_one_forks(
    tmp_path: Path, backend: ProcessBackend
) -> None:
    if not backend.warm:
        pytest.skip("only where replicas are forked")
    rec = Recorder()
    package = _package(tmp_path, ECHO)
    replica = await backend.start(_spec(package), rec)
    await rec.wait_for(S.READY, S.FAILED)
    assert replica.pid is not None
    fork_server = _parent(replica.pid)
    assert fork_server != os.getpid()
    os.kill(fork_server, signal.SIGKILL)
    await rec.wait_for(S.FAILED)
    assert "SIGKILL" in (replica.error or "")
    deadline = time.monotonic() + 10
    while _alive(replica.pid):
        assert time.monotonic() < deadline, "replica outlived its fork server"
        await asyncio.sleep(0.02)
    assert not backend.warm
    rec2 = Recorder()
    again = await backend.start(_spec(package), rec2)
    await rec2.wait_for(S.READY, S.FAILED)
    assert again.state is S.READY and backend.warm
    assert _parent(again.pid or 0) not in (os.getpid(), fork_server)


@each_mode
async def test_a_replica_that_changes_interpreter_settings_is_spawned(
    tmp_path: Path, backend: ProcessBackend
) -> None:
    package = _package(tmp_path, ECHO)
    base = _spec(package)
    spec = ReplicaSpec(
        deployment_id=base.deployment_id, package_dir=package, config=base.config,
        python=base.python, env={"PYTHONHASHSEED": "7"},
    )
    rec = Recorder()
    replica = await backend.start(spec, rec)
    await rec.wait_for(S.READY, S.FAILED)
    assert replica.state is S.READY
    assert _parent(replica.pid or 0) == os.getpid()


ORPHAN_SCRIPT = """
import asyncio, sys
from pathlib import Path
import uvloop
from swell.config import load_model_config
from swell.serving import ReplicaSpec, ReplicaState
from swell.serving.backends import ProcessBackend

async def main():
    package, logs, module = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    backend = ProcessBackend(logs.parent / "run", logs, module=module, warm_start=sys.argv[5] == "fork")
    await backend.prewarm()
    config, _ = load_model_config(package)
    spec = ReplicaSpec(deployment_id="orphan", package_dir=package, config=config,
                       python=sys.executable)
    ready = asyncio.Event()
    replica = await backend.start(spec, lambda r: ready.set() if r.state is ReplicaState.READY else None)
    await asyncio.wait_for(ready.wait(), 30)
    print(replica.pid, flush=True)
    await asyncio.sleep(120)

(uvloop.run if sys.argv[4] == "uvloop" else asyncio.run)(main())
"""


@pytest.mark.parametrize("start", ["spawn", "fork"])
@pytest.mark.parametrize("module", ["swell.modelserver", STUBBORN_MODULE])
def test_replica_dies_with_a_server_killed_by_sigkill(tmp_path: Path, module: str, start: str) -> None:
    """Whatever the replica does, the kernel ends it with its server (on both loops)."""
    package = _package(tmp_path, ECHO)
    script = tmp_path / "server.py"
    script.write_text(ORPHAN_SCRIPT)
    for loop in _RUNNERS:
        server = subprocess.Popen(
            [sys.executable, str(script), str(package), str(tmp_path / "logs"), module, loop, start],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            replica_pid = int(server.stdout.readline())  # bounded: the script gives up after 30 s
            assert _alive(replica_pid)
            assert (_parent(replica_pid) == server.pid) is (start == "spawn")
            server.kill()
            server.wait(10)
            _wait_gone(replica_pid, timeout=10)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait(10)


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"replica {pid} outlived its server")
        time.sleep(0.02)
