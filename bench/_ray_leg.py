"""Ray Serve's leg of every benchmark, run with Ray's own interpreter inside a
network namespace that has only a loopback (the calling script arranges both):

    unshare -n sh -c 'ip link set lo up; exec taskset -c 1 \
        bench/.venv-ray/bin/python bench/_ray_leg.py MODE [options]'

Ray Serve keeps its defaults everywhere: one replica, its own proxy on
127.0.0.1:8000, default ``max_ongoing_requests``, and, for scale from zero,
``autoscaling_config={"min_replicas": 0, "max_replicas": 1}`` and nothing
else.  Prints progress lines on stderr and one ``RESULT {json}`` line on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _wrk

URL = "http://127.0.0.1:8000"


def _say(text: str) -> None:
    print(f"[ray] {text}", file=sys.stderr, flush=True)


def _deployments():  # type: ignore[no-untyped-def]
    from ray import serve

    @serve.deployment
    class Echo:
        async def __call__(self, request):  # type: ignore[no-untyped-def]
            return {"echo": await request.json()}

    @serve.deployment(autoscaling_config={"min_replicas": 0, "max_replicas": 1})
    class Trivial:
        """Records its own load time, as the Swell benchmark model does."""

        def __init__(self, load_log: str) -> None:
            started = time.monotonic()
            self.loaded = True  # nothing to load: a trivial model
            with open(load_log, "a") as f:
                f.write(json.dumps({"load_seconds": time.monotonic() - started}) + "\n")

        async def __call__(self, request):  # type: ignore[no-untyped-def]
            return {"echo": await request.json()}

    return Echo, Trivial


def _start_ray() -> float:
    import ray

    started = time.monotonic()
    ray.init(logging_level="ERROR", log_to_driver=False)
    return time.monotonic() - started


def throughput(args: argparse.Namespace) -> dict[str, object]:
    from ray import serve

    boot = _start_ray()
    echo, _ = _deployments()
    started = time.monotonic()
    serve.run(echo.bind(), name="echo", route_prefix="/")
    _say(f"ray up in {boot:.1f} s, app in {time.monotonic() - started:.1f} s")
    status, body = _wrk.post(URL + "/")
    if status != 200:
        raise SystemExit(f"Ray Serve answered {status}: {body[:300]!r}")
    script = _wrk.wrk_script()
    results = []
    for connections in args.concurrency:
        _wrk.run_wrk(URL + "/", connections, args.warmup, script)
        result = _wrk.run_wrk(URL + "/", connections, args.duration, script)
        _say(f"c={connections}: {result.rps:.0f} req/s, p50 {result.p50_ms:.2f} ms")
        results.append(result.as_dict())
    return {"levels": results}


def scale_from_zero(args: argparse.Namespace) -> dict[str, object]:
    from ray import serve

    _start_ray()
    _, trivial = _deployments()
    load_log = Path(tempfile.mkdtemp(prefix="swell-bench-ray-")) / "loads.jsonl"
    load_log.touch()
    reps = []
    deadline = time.monotonic() + args.budget
    for i in range(args.reps):
        if time.monotonic() > deadline:
            _say(f"time budget spent after {i} repetitions")
            break
        name = f"trivial{i}"
        # A fresh application each time: it starts at min_replicas = 0.
        serve.run(trivial.bind(str(load_log)), name=name, route_prefix=f"/{name}")
        loads_before = len(load_log.read_text().splitlines())
        started = time.perf_counter()
        status, body = _wrk.post(f"{URL}/{name}", timeout=120)
        latency = time.perf_counter() - started
        if status != 200:
            raise SystemExit(f"Ray Serve answered {status}: {body[:300]!r}")
        lines = load_log.read_text().splitlines()[loads_before:]
        load = json.loads(lines[-1])["load_seconds"] if lines else 0.0
        reps.append({"first_request_s": latency, "load_s": load, "overhead_s": latency - load})
        _say(f"rep {i + 1}: first request {latency:.3f} s, load {load:.4f} s")
        serve.delete(name)
    return {"reps": reps}


def idle_memory(args: argparse.Namespace) -> dict[str, object]:
    from ray import serve

    _start_ray()
    echo, _ = _deployments()
    serve.run(echo.bind(), name="echo", route_prefix="/")
    status, _ = _wrk.post(URL + "/")
    if status != 200:
        raise SystemExit(f"Ray Serve answered {status}")
    time.sleep(args.settle)  # let start-up garbage be collected, as an idle server would
    # Every Ray process descends from this driver (ray.init started them).
    tree = _wrk.descendants(os.getpid())
    return {
        "all": _wrk.memory(tree),
        "without_driver": _wrk.memory([p for p in tree if p != os.getpid()]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["throughput", "scale_from_zero", "idle_memory"])
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 64]
    )
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--budget", type=float, default=150)
    parser.add_argument("--settle", type=float, default=5)
    args = parser.parse_args()
    result = {"throughput": throughput, "scale_from_zero": scale_from_zero,
              "idle_memory": idle_memory}[args.mode](args)
    import ray

    result["ray_version"] = ray.__version__
    print("RESULT " + json.dumps(result), flush=True)
    # A clean shutdown of Serve can take a long while and still leaves agents
    # behind; end every process this run started instead.
    for pid in _wrk.descendants(os.getpid()):
        if pid != os.getpid():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    os._exit(0)


if __name__ == "__main__":
    main()
