"""Ray Serve's leg of every benchmark, run with Ray's own interpreter inside a
network namespace that has only a loopback (the calling script arranges both):

    unshare -n sh -c 'ip link set lo up; exec taskset -c 1 \
        bench/.venv-ray/bin/python bench/_ray_leg.py MODE [options]'

Ray Serve keeps its defaults everywhere: one replica, its own proxy on
127.0.0.1:8000, default ``max_ongoing_requests``, and, for scale from zero,
``autoscaling_config={"min_replicas": 0, "max_replicas": 1}`` and nothing
else.  Prints progress lines on stderr and one ``RESULT {json}`` line on stdout.

``cluster`` mode is ray_serving.py's leg: it joins a running cluster
(``--address``, one whose Ray and Python versions match this interpreter's)
or starts one of the same shape (a head with no CPU, one worker node), runs
the proxy on the head only, on ``--port``, and the echo replica where Ray
places it (the worker: the head has no CPU), prints ``READY {json}`` and waits: each
``wake`` line on stdin runs one of ``scale_from_zero``'s repetitions on the
same cluster and prints ``WAKE {json}``; its ``RESULT`` comes when stdin
closes.
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

        def node(self) -> str:
            import ray

            return ray.get_runtime_context().get_node_id()  # type: ignore[no-any-return]

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
    _start_ray()
    wake = _Waker(args.url)
    reps = []
    deadline = time.monotonic() + args.budget
    for i in range(args.reps):
        if time.monotonic() > deadline:
            _say(f"time budget spent after {i} repetitions")
            break
        reps.append(wake())
        _say(f"rep {i + 1}: first request {reps[-1]['first_request_s']:.3f} s, load {reps[-1]['load_s']:.4f} s")
    return {"reps": reps}


class _Waker:
    """Each call deploys a fresh application of the trivial model (it starts
    at ``min_replicas = 0``), times its first request and deletes it."""

    def __init__(self, url: str) -> None:
        _, self.trivial = _deployments()
        self.url = url
        self.load_log = Path(tempfile.mkdtemp(prefix="swell-bench-ray-")) / "loads.jsonl"
        self.load_log.touch()
        self.count = 0

    def __call__(self) -> dict[str, float]:
        from ray import serve

        name = f"trivial{self.count}"
        self.count += 1
        serve.run(self.trivial.bind(str(self.load_log)), name=name, route_prefix=f"/{name}")
        loads_before = len(self.load_log.read_text().splitlines())
        started = time.perf_counter()
        status, body = _wrk.post(f"{self.url}/{name}", timeout=120)
        latency = time.perf_counter() - started
        if status != 200:
            raise SystemExit(f"Ray Serve answered {status}: {body[:300]!r}")
        lines = self.load_log.read_text().splitlines()[loads_before:]
        load = json.loads(lines[-1])["load_seconds"] if lines else 0.0
        serve.delete(name)
        return {"first_request_s": latency, "load_s": load, "overhead_s": latency - load}


def cluster(args: argparse.Namespace) -> dict[str, object]:
    """Ray Serve on ray_serving.py's cluster; see the module's docstring."""
    import ray
    from ray import serve

    own = None
    started = time.monotonic()
    if args.address:
        address = args.address
    else:  # versions differ from Swell's: a cluster of the same shape, our own
        from ray.cluster_utils import Cluster

        own = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False})
        own.add_node(num_cpus=args.worker_cpus, node_ip_address="127.0.0.1")
        own.wait_for_nodes()
        address = own.address
    # The cluster's workers run Swell's interpreter, which has no Ray Serve:
    # this job's actors (controller, proxy, replicas) run this one.  The
    # controller kills a proxy not ready within 5 s, and serve.start() then
    # fails: on a loaded core its imports alone take longer, so it gets 60.
    ray.init(address=address, logging_level="ERROR", log_to_driver=False,
             runtime_env={"py_executable": sys.executable,
                          "env_vars": {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60"}})
    head = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and not n["Resources"].get("CPU"))
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": args.port})
    echo, _ = _deployments()
    handle = serve.run(echo.bind(), name="echo", route_prefix="/")
    replica_node = handle.node.remote().result()
    _say(f"serve up in {time.monotonic() - started:.1f} s, the replica on node {replica_node[:12]}")
    status, body = _wrk.post(args.url + "/")
    if status != 200:
        raise SystemExit(f"Ray Serve answered {status}: {body[:300]!r}")
    ready = {"url": args.url + "/", "replica_node": replica_node, "proxy_node": head,
             "same_cluster": own is None, "ray_version": ray.__version__}
    print("READY " + json.dumps(ready), flush=True)
    wake = _Waker(args.url)
    for line in sys.stdin:  # one wake per "wake" line, until stdin closes
        if line.strip() == "wake":
            print("WAKE " + json.dumps(wake()), flush=True)
    return ready


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
    parser.add_argument("mode", choices=["throughput", "scale_from_zero", "idle_memory", "cluster"])
    parser.add_argument("--address", default="", help="cluster mode: the cluster to join (else its own)")
    parser.add_argument("--port", type=int, default=8000, help="Ray Serve's proxy port")
    parser.add_argument("--worker-cpus", type=int, default=8, help="cluster mode, own cluster: the worker's CPUs")
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 64]
    )
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--budget", type=float, default=150)
    parser.add_argument("--settle", type=float, default=5)
    args = parser.parse_args()
    args.url = f"http://127.0.0.1:{args.port}"
    result = {"throughput": throughput, "scale_from_zero": scale_from_zero,
              "idle_memory": idle_memory, "cluster": cluster}[args.mode](args)
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
