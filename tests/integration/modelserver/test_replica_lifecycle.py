"""Replica lifecycle: events, readiness gating, load failure, retries, SIGTERM drain, lifeline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

GATED_LOAD = '''
import time
from pathlib import Path


class Model:
    def load(self):
        deadline = time.monotonic() + 20
        while not Path("go").exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    def predict(self, model_input):
        return model_input
'''


def test_ready_is_503_while_loading_then_200(make_package, replica) -> None:
    package = make_package(GATED_LOAD)
    r = replica(package)
    r.wait_event("loading")
    with r.client() as client:
        assert client.get("/health/live").status_code == 200
        ready = client.get("/health/ready")
        assert (ready.status_code, ready.json()["status"]) == (503, "loading")
        assert client.get("/v1/models/m").status_code == 503
        assert client.get("/v1/models/m/loaded").status_code == 503
        predict = client.post("/v1/models/m:predict", json=1)
        assert predict.status_code == 503
        assert predict.json() == {"error": "Model with name model is not ready."}
        assert predict.headers["x-baseten-error-code"] == "600"
        (package / "go").touch()
        event = r.wait_ready()
        assert isinstance(event["load_seconds"], float)
        assert client.get("/health/ready").status_code == 200
        assert client.post("/v1/models/m:predict", json=1).json() == 1
    assert [e["event"] for e in r.events] == ["live", "loading", "ready"]
    assert r.terminate() == 0


def test_load_failure_reports_traceback_and_exits_nonzero(make_package, replica) -> None:
    model = '''
class Model:
    def load(self):
        raise RuntimeError("boom in load")

    def predict(self, model_input):
        return model_input
'''
    r = replica(make_package(model), env={"NUM_LOAD_RETRIES_TRUSS": "0"})
    event = r.wait_event("failed")
    assert "Traceback" in event["error"] and "RuntimeError: boom in load" in event["error"]
    assert r.wait() != 0
    assert "RuntimeError: boom in load" in r.stderr()


def test_import_error_fails_the_load(make_package, replica) -> None:
    r = replica(make_package("import no_such_module_xyz\n"), env={"NUM_LOAD_RETRIES_TRUSS": "0"})
    assert "No module named 'no_such_module_xyz'" in r.wait_event("failed")["error"]
    assert r.wait() != 0


def test_sys_exit_at_import_fails_the_load_instead_of_hanging(make_package, replica) -> None:
    # SystemExit is not an Exception: caught as one, it would end the load
    # thread silently and leave the replica loading forever.
    r = replica(make_package("import sys\nsys.exit(3)\n"), env={"NUM_LOAD_RETRIES_TRUSS": "0"})
    assert "SystemExit" in r.wait_event("failed")["error"]
    assert r.wait() != 0


def test_load_is_retried_once_by_default(make_package, replica) -> None:
    model = '''
from pathlib import Path


class Model:
    def load(self):
        attempts = Path("attempts")
        n = int(attempts.read_text()) + 1 if attempts.exists() else 1
        attempts.write_text(str(n))
        if n == 1:
            raise RuntimeError("first attempt fails")

    def predict(self, model_input):
        return Path("attempts").read_text()
'''
    r = replica(make_package(model))
    r.wait_ready()
    with r.client() as client:
        assert client.post("/v1/models/m:predict", json=0).json() == "2"


DRAIN = '''
import time
from pathlib import Path


class Model:
    def __init__(self):
        self._n = 0

    def predict(self, model_input):
        Path(f"entered-{model_input['id']}").touch()
        if model_input.get("stream"):
            return self._tokens()
        time.sleep(0.5)
        return {"done": model_input["id"]}

    def _tokens(self):
        for i in range(5):
            time.sleep(0.1)
            yield f"tok{i} "
'''


def test_sigterm_finishes_in_flight_requests_and_streams_then_exits_0(make_package, replica) -> None:
    package = make_package(DRAIN, {"runtime": {"predict_concurrency": 4}})
    r = replica(package)
    r.wait_ready()
    results: dict[str, object] = {}

    def call(key: str, payload: dict) -> None:
        with r.client() as client:
            resp = client.post("/v1/models/m:predict", json=payload)
            results[key] = (resp.status_code, resp.content)

    threads = [threading.Thread(target=call, args=("plain", {"id": "a"})),
               threading.Thread(target=call, args=("stream", {"id": "b", "stream": True}))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while not all((package / f"entered-{i}").exists() for i in "ab") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert r.terminate() == 0
    for t in threads:
        t.join(10)
    assert results["plain"] == (200, b'{"done": "a"}')
    assert results["stream"] == (200, b"tok0 tok1 tok2 tok3 tok4 ")


def test_lifeline_eof_kills_the_replica(make_package, replica) -> None:
    r = replica(make_package(GATED_LOAD))  # still loading: exit must not wait for anything
    r.wait_event("loading")
    r.close_lifeline()
    assert r.wait(timeout=5) == 1
    assert "lifeline closed" in r.stderr()


def test_parent_death_kills_the_replica_via_pdeathsig(make_package, tmp_path: Path) -> None:
    package = make_package(GATED_LOAD)
    pid_file = tmp_path / "pid"
    # An intermediate parent that starts a replica without a lifeline, then is SIGKILLed.
    launcher = (
        "import subprocess, sys, time, pathlib;"
        f"p = subprocess.Popen([sys.executable, '-m', 'swell.modelserver', '--model-dir', {str(package)!r}],"
        " env={**__import__('os').environ, 'SWELL_REPLICA_SOCKET': "
        f"{str(tmp_path / 's.sock')!r}}});"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(p.pid)); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", launcher])
    try:
        deadline = time.monotonic() + 10
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        child = int(pid_file.read_text())
        while not (tmp_path / "s.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # listening means it is long past prctl
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (already dead, not yet reaped by init) counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_serves_on_tcp_port_from_env(make_package, replica) -> None:
    from swell.modelserver._testing import free_port

    port = free_port()
    r = replica(make_package("class Model:\n    def predict(self, x):\n        return x\n"), port=port)
    r.wait_ready()
    assert httpx.post(f"http://127.0.0.1:{port}/v1/models/m:predict", json=[1]).json() == [1]
    assert r.terminate() == 0


def test_stream_stalled_past_streaming_read_timeout_is_cut_off(make_package, replica) -> None:
    model = '''
import time


class Model:
    def predict(self, model_input):
        yield "first "
        time.sleep(model_input["stall"])
        yield "late "
'''
    r = replica(make_package(model, {"runtime": {"streaming_read_timeout": 1}}))
    r.wait_ready()
    with r.client() as client:
        with pytest.raises(httpx.RemoteProtocolError), client.stream(
            "POST", "/v1/models/m:predict", json={"stall": 1.6}
        ) as resp:
            assert resp.status_code == 200
            b"".join(resp.iter_raw())  # the status went out; the body is cut, not ended cleanly
        # the replica keeps serving
        assert client.post("/v1/models/m:predict", json={"stall": 0}).content == b"first late "


def test_port_in_use_fails_with_an_event_and_nonzero_exit(make_package, replica) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        r = replica(make_package("class Model:\n    def predict(self, x):\n        return x\n"),
                    port=taken.getsockname()[1])
        assert "could not start" in r.wait_event("failed")["error"]
        assert r.wait() != 0


WHO = '''
import json
import os


class Model:
    def predict(self, model_input):
        return {"cwd": os.getcwd(), "greeting": os.environ.get("GREETING"), "stdin": os.read(0, 10).decode()}
'''


def test_a_pre_started_replica_waits_for_its_job_then_serves_it(make_package, tmp_path: Path) -> None:
    # The Ray backend's actor starts `--await-job` ahead of time; the job arrives on stdin.
    package = make_package(WHO)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWELL_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "swell.modelserver", "--await-job"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
    )
    try:
        assert process.stdin is not None
        job = {"env": {**env, "GREETING": "hello", "SWELL_REPLICA_HOST": "127.0.0.1", "SWELL_REPLICA_PORT": str(port)},
               "cwd": str(package), "args": ["--model-dir", str(package)]}
        process.stdin.write(json.dumps(job).encode() + b"\n")
        process.stdin.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.post(f"http://127.0.0.1:{port}/v1/models/model:predict", json={})
                if response.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, process.stdout.read() if process.stdout else ""
            time.sleep(0.05)
        assert response.json() == {"cwd": str(package), "greeting": "hello", "stdin": ""}
    finally:
        process.kill()
        process.wait()


def test_a_pre_started_replica_whose_actor_goes_first_exits_quietly(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "swell.modelserver", "--await-job"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )
    assert process.stdin is not None
    process.stdin.close()  # EOF before any job
    assert process.wait(timeout=30) == 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
