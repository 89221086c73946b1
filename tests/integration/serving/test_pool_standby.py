"""The standby pool with real processes: a wake takes a standby (its pid
becomes the replica's, the log says ``[prewarmed]``), the pool refills (also
after a standby dies standing by), a pool of 0 forks on demand (``[forked]``), no room in the placement means no
refill, a deployment on its own interpreter (requirements) is spawned, and
the fork server and its standbys die with a server killed with SIGKILL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
import yaml

from swell.config import load_model_config
from swell.modelserver._environment import _inherit_site_packages
from swell.serving import Replica, ReplicaSpec, ReplicaState
from swell.serving.backends import ProcessBackend
from swell.serving.backends.process._resources import Capacity

pytestmark = [pytest.mark.timeout(60), pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux")]

MODEL = """
import os


class Model:
    def load(self):
        pass

    def predict(self, model_input):
        return {"pid": os.getpid()}
"""


def _spec(root: Path, python: str = sys.executable) -> ReplicaSpec:
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "model" / "model.py").write_text(textwrap.dedent(MODEL))
    (root / "config.yaml").write_text(yaml.safe_dump({"model_name": "pid"}))
    config, _ = load_model_config(root)
    return ReplicaSpec(deployment_id="dep1", package_dir=root, config=config, python=python)


async def _until(check: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _ready(backend: ProcessBackend, spec: ReplicaSpec) -> Replica:
    states: list[ReplicaState] = []
    replica = await backend.start(spec, lambda r: states.append(r.state))
    await _until(lambda: ReplicaState.READY in states or ReplicaState.FAILED in states, 30)
    assert ReplicaState.READY in states, replica.error
    return replica


async def _pid_of(replica: Replica) -> int:
    transport = httpx.AsyncHTTPTransport(uds=replica.address.removeprefix("unix:"))
    async with httpx.AsyncClient(transport=transport, base_url="http://replica", timeout=20) as client:
        response = await client.post("/v1/models/model:predict", json={})
        return int(response.json()["pid"])


def test_a_wake_takes_a_standby_and_the_pool_refills(tmp_path: Path) -> None:
    async def body() -> None:
        backend = ProcessBackend(log_dir=tmp_path / "logs", prewarm_modules=(), pool_size=1)
        try:
            assert await backend.prewarm()
            [standby] = backend.standby_pids
            replica = await _ready(backend, _spec(tmp_path / "pkg"))
            assert replica.pid == standby and replica.start_mode == "prewarmed"
            assert await _pid_of(replica) == standby
            assert "[prewarmed] model.load() completed in" in backend.log_path(replica).read_text()
            # Refilled in the background with a new process.
            await _until(lambda: len(backend.standby_pids) == 1 and backend.standby_pids != (standby,))
            # A second replica takes the new standby.
            [second_standby] = backend.standby_pids
            second = await _ready(backend, _spec(tmp_path / "pkg"))
            assert second.pid == second_standby and second.start_mode == "prewarmed"
            await backend.stop(replica, 5)
            assert replica.state is ReplicaState.STOPPED
        finally:
            await backend.close()
        assert backend.standby_pids == ()

    asyncio.run(asyncio.wait_for(body(), 50))


def test_a_standby_that_dies_standing_by_is_replaced(tmp_path: Path) -> None:
    async def body() -> None:
        backend = ProcessBackend(log_dir=tmp_path / "logs", prewarm_modules=(), pool_size=1)
        try:
            assert await backend.prewarm()
            [standby] = backend.standby_pids
            os.kill(standby, signal.SIGKILL)
            await _until(lambda: len(backend.standby_pids) == 1 and backend.standby_pids != (standby,))
            replica = await _ready(backend, _spec(tmp_path / "pkg"))
            assert replica.start_mode == "prewarmed" and replica.pid != standby
        finally:
            await backend.close()

    asyncio.run(asyncio.wait_for(body(), 50))


def test_pool_of_zero_forks_on_demand(tmp_path: Path) -> None:
    async def body() -> None:
        backend = ProcessBackend(log_dir=tmp_path / "logs", prewarm_modules=(), pool_size=0)
        try:
            assert await backend.prewarm()
            assert backend.standby_pids == ()
            replica = await _ready(backend, _spec(tmp_path / "pkg"))
            assert replica.start_mode == "forked"
            assert "[forked] model.load() completed in" in backend.log_path(replica).read_text()
            assert backend.standby_pids == ()
        finally:
            await backend.close()

    asyncio.run(asyncio.wait_for(body(), 50))


def test_no_refill_while_the_placement_has_no_room(tmp_path: Path) -> None:
    async def body() -> None:
        tiny = Capacity(cpu=1.0, memory=8 * 1024 * 1024)  # less than one standby counts
        backend = ProcessBackend(log_dir=tmp_path / "logs", prewarm_modules=(), pool_size=2, capacity=tiny)
        try:
            assert await backend.prewarm()
            assert backend.standby_pids == ()
            replica = await _ready(backend, _spec(tmp_path / "pkg"))
            assert replica.start_mode == "forked"
            assert backend.standby_pids == ()
        finally:
            await backend.close()

    asyncio.run(asyncio.wait_for(body(), 50))


def test_a_deployment_on_its_own_interpreter_bypasses_the_pool(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # What a deployment with requirements gets: its own venv (here seeing ours, for swell itself).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
                   check=True, timeout=60)
    # --system-site-packages reaches only the base interpreter's: link ours the way
    # the environment builder does, or the test passes only where swell is installed system-wide.
    _inherit_site_packages(sys.executable, venv / "bin" / "python")
    python = str(venv / "bin" / "python")

    async def body() -> None:
        backend = ProcessBackend(log_dir=tmp_path / "logs", prewarm_modules=(), pool_size=1)
        try:
            assert await backend.prewarm()
            [standby] = backend.standby_pids
            replica = await _ready(backend, _spec(tmp_path / "pkg", python=python))
            assert replica.start_mode == "spawned" and replica.pid != standby
            assert backend.standby_pids == (standby,)  # untouched
            assert "[spawned] model.load() completed in" in backend.log_path(replica).read_text()
        finally:
            await backend.close()

    asyncio.run(asyncio.wait_for(body(), 50))


SERVER = """
import asyncio, json, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from swell.serving import ReplicaState
from swell.serving.backends import ProcessBackend
from test_pool_standby import _spec

async def main():
    backend = ProcessBackend(log_dir=Path({logs!r}), prewarm_modules=(), pool_size=2)
    assert await backend.prewarm()
    states = []
    replica = await backend.start(_spec(Path({pkg!r})), lambda r: states.append(r.state))
    while ReplicaState.READY not in states:
        assert ReplicaState.FAILED not in states, replica.error
        await asyncio.sleep(0.02)
    while len(backend.standby_pids) < 2:
        await asyncio.sleep(0.02)
    pids = {{"fork_server": backend._fork_server.pid, "standbys": list(backend.standby_pids), "replica": replica.pid}}
    print(json.dumps(pids), flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_standbys_die_with_the_server_on_sigkill(tmp_path: Path) -> None:
    script = SERVER.format(tests=str(Path(__file__).parent), logs=str(tmp_path / "logs"), pkg=str(tmp_path / "pkg"))
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line, "the server script died"
        pids = json.loads(line)
        everyone = [pids["fork_server"], pids["replica"], *pids["standbys"]]
        assert len(set(everyone)) == 4 and all(_alive(p) for p in everyone)
    finally:
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in everyone) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in everyone if _alive(p)] == []
