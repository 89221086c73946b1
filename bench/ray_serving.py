"""Swell on a Ray cluster vs Ray Serve on the same cluster: requests to a
replica on another Ray node, and scale from zero.

One run, in a loopback-only network namespace (the script enters one itself:
Ray probes 8.8.8.8 and listens on every interface), with a local Ray cluster
(a head with no CPU and one worker node), the servers and the cluster pinned
to the server's core and wrk to the other:

- bare:       a bare uvicorn app: the physical limit;
- swell:      ``swell serve`` (process backend), the echo model on a Unix socket;
- swell-ray:  ``swell serve --backend ray``, the same model as a Ray actor's
              replica process on the worker node, called over TCP with its token;
- swell-ray-sync: the same server, with ``examples/echo``, whose ``predict``
              is sync: it runs in a worker thread, as Truss runs it (a thread
              hand-off each way per request);
- ray-serve:  Ray Serve's HTTP proxy on the head node (``proxy_location``
              ``HeadOnly``) in front of the same echo model as a Serve
              deployment, whose replica Ray places on the worker node (the
              head has no CPU); Ray's defaults otherwise.  Ray Serve runs from
              ``bench/.venv-ray`` (never Swell's venv): its driver joins the
              same cluster when that venv's Ray and Python versions equal
              this one's (its actors then run that venv's interpreter through
              ``runtime_env={"py_executable": ...}``); otherwise it starts its
              own cluster of the same shape in the same namespace, and the
              result says ``"same_cluster": false``.

The echo model of ``swell`` and ``swell-ray`` is ``bench/models/echo_async``
(``async def predict``), the shape of Ray Serve's deployment and of the bare
app, so no leg takes a hop the others skip.

All five are up at once and measured in turns at each level, ``--rounds``
times over (each leg's best round is kept), so each pays the others' idle
background work, and the neighbours' load, alike.

Then scale from zero: the first request's latency after the deployment has
scaled to zero, minus the model's own ``load()`` (what the platform adds: Ray
placing the actor, the node starting the replica process, noticing ready,
proxying), in turns on ``swell-ray`` (the replica process pre-started by
the standby actor), its baseline ``swell-ray-no-prestart``
(``SWELL_RAY_PRESTART=0``: a fresh interpreter at the wake), two servers of
the same cluster, and ``ray-serve`` (a fresh application of a trivial
deployment with ``min_replicas: 0`` each time, as cold_start_pool.py and
scale_from_zero.py do).  ``--wake-only`` skips the throughput legs and
leaves every process on every core (no wrk to keep a core for).

    python bench/ray_serving.py [--duration 3] [--rounds 2] [--reps 3] [--wake-only] [--no-ray-serve]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import _wrk
from _common import console, out
from rich.table import Table

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
#: Logical: each Swell server's replicas and standby, Ray Serve's two replicas.
WORKER_CPUS = 8


def _in_namespace() -> bool:
    """Only ``lo`` here: no other interface has an address."""
    interfaces = [p.name for p in Path("/sys/class/net").iterdir()]
    return interfaces == ["lo"]


def _measure(name: str, url: str, connections: int, args: argparse.Namespace, script: Path) -> dict[str, Any]:
    _wrk.run_wrk(url, connections, args.warmup, script)
    result = _wrk.run_wrk(url, connections, args.duration, script)
    console.log(f"{name} c={connections}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.3f} ms, "
                f"p99 {result.p99_ms:.3f} ms, errors {result.errors}")
    return result.as_dict()


def _view(server: _common.SwellServer, pushed: dict[str, Any]) -> dict[str, Any]:
    return server.api("GET", f"/v1/models/{pushed['model_id']}/deployments/{pushed['deployment_id']}")  # type: ignore[no-any-return]


def scale_from_zero(servers: dict[str, _common.SwellServer], serve: RayServe | None, reps: int,
                    advance: Any) -> dict[str, list[dict[str, Any]]]:
    """``reps`` wakes on each server and Ray Serve, taking turns (the machine's load falls on all alike)."""
    deployments = {}
    for name, server in servers.items():
        pushed = server.push(_common.ECHO_PACKAGE)
        path = f"/v1/models/{pushed['model_id']}/deployments/{pushed['deployment_id']}/autoscaling_settings"
        server.api("PATCH", path, {"min_replica": 0, "autoscaling_window": 10, "scale_down_delay": 0})
        status, body = _wrk.post(server.predict_url(pushed["model_id"], pushed["deployment_id"]),
                                 headers=server.headers, timeout=120)  # a replica ready once: its standby is placed
        if status != 200:
            raise SystemExit(f"{name} answered {status}: {body[:300]!r}")
        deployments[name] = pushed
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    if serve is not None:
        runs["ray-serve"] = []
    for rep in range(reps):
        for name, server in servers.items():
            run = _wake(server, deployments[name])
            console.log(f"{name} scale from zero #{rep + 1}: {run}")
            runs[name].append(run)
            advance()
        if serve is not None:
            run = serve.wake()
            console.log(f"ray-serve scale from zero #{rep + 1}: {run}")
            runs["ray-serve"].append(run)
            advance()
    return runs


def _wake(server: _common.SwellServer, pushed: dict[str, Any]) -> dict[str, Any]:
    url = server.predict_url(pushed["model_id"], pushed["deployment_id"])
    _wrk.wait_until(lambda: not _view(server, pushed)["replicas"], 90, "scaled to zero", interval=0.2)
    started = time.perf_counter()
    status, body = _wrk.post(url, headers=server.headers, timeout=120)
    first = time.perf_counter() - started
    if status != 200:
        raise SystemExit(f"the wake answered {status}: {body[:300]!r}")
    replica = _view(server, pushed)["replicas"][0]
    cold = replica.get("cold_start") or {}
    load = cold.get("load_seconds") or replica.get("load_seconds") or 0.0
    logs = server.api("GET", f"/v1/models/{pushed['model_id']}/deployments/{pushed['deployment_id']}/logs"
                             f"?replica={replica['id']}")
    prestarted = any("in its pre-started process" in line["text"] for line in logs["lines"])
    return {"first_request_s": round(first, 3), "load_s": load, "platform_s": round(first - load, 3),
            "pending_s": cold.get("pending_seconds"), "process_s": cold.get("process_seconds"),
            "start": cold.get("start"), "prestarted": prestarted, "node": replica.get("node"), "cold_start": cold}


def _throughput(stack: contextlib.ExitStack, ray_server: _common.SwellServer, serve: RayServe | None,
                args: argparse.Namespace, advance: Any) -> dict[str, dict[str, Any]]:
    targets: dict[str, tuple[str, dict[str, str] | None]] = {}
    targets["bare"] = (stack.enter_context(_common.bare_app()), None)
    servers = {"swell": stack.enter_context(_common.SwellServer()), "swell-ray": ray_server}
    placement: dict[str, dict[str, Any]] = {}  # where each Ray leg's replica runs
    models = ((servers["swell"], "swell", _common.ECHO_ASYNC_PACKAGE),
              (ray_server, "swell-ray", _common.ECHO_ASYNC_PACKAGE),
              (ray_server, "swell-ray-sync", _common.ECHO_PACKAGE))
    for server, name, package in models:
        pushed = server.push(package)
        url = server.predict_url(pushed["model_id"])
        status, body = _wrk.post(url, headers=server.headers, timeout=120)
        if status != 200:
            raise SystemExit(f"{name} answered {status}: {body[:300]!r}")
        targets[name] = (url, server.headers)
        if server is ray_server:
            placement[name] = {"replica_node": _view(ray_server, pushed)["replicas"][0].get("node")}
    if serve is not None:
        ready = serve.ready()
        placement["ray-serve"] = {k: ready[k] for k in ("replica_node", "proxy_node", "same_cluster", "ray_version")}
        targets["ray-serve"] = (ready["url"], None)
    console.log(f"replicas: {placement}")
    scripts = {name: _wrk.wrk_script(headers) for name, (_, headers) in targets.items()}
    rounds: dict[str, dict[int, list[dict[str, Any]]]] = {name: {c: [] for c in args.concurrency} for name in targets}
    try:
        for _ in range(args.rounds):
            for connections in args.concurrency:
                for name, (url, _) in targets.items():
                    rounds[name][connections].append(_measure(name, url, connections, args, scripts[name]))
                    advance()
    finally:
        for script in scripts.values():
            script.unlink(missing_ok=True)
    return {name: {"levels": [max(rounds[name][c], key=lambda r: r["rps"]) for c in args.concurrency],
                   **placement.get(name, {})} for name in targets}


def _versions(python: Path) -> str:
    code = "import platform, ray; print(ray.__version__, platform.python_version())"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


class RayServe:
    """``_ray_leg.py cluster`` from bench/.venv-ray: Ray Serve on the same
    cluster (or its own, where the versions differ), its progress on the console."""

    def __init__(self, address: str) -> None:
        import ray

        ours = f"{ray.__version__} {sys.version.split()[0]}"
        theirs = _versions(_common.RAY_PYTHON)
        self.same = ours == theirs
        if not self.same:
            console.log(f"bench/.venv-ray has Ray and Python {theirs}, this venv {ours}: "
                        "Ray Serve gets its own cluster of the same shape")
        self.port = _wrk.free_port()
        command = [str(_common.RAY_PYTHON), str(_common.BENCH / "_ray_leg.py"), "cluster", "--port", str(self.port),
                   "--worker-cpus", str(WORKER_CPUS)]
        if self.same:
            command += ["--address", address]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        self._tail: list[str] = []
        self._pump = threading.Thread(target=self._log, daemon=True)
        self._pump.start()

    def _log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            line = line.rstrip()
            self._tail.append(line)
            del self._tail[:-40]
            if line.startswith("[ray] "):
                console.log("ray-serve " + line.removeprefix("[ray] "))

    def _line(self, prefix: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        try:
            for line in self.proc.stdout:
                if line.startswith(prefix + " "):
                    return json.loads(line.removeprefix(prefix + " "))  # type: ignore[no-any-return]
        finally:
            timer.cancel()
        raise SystemExit(f"Ray Serve's leg ended without {prefix}:\n" + "\n".join(self._tail))

    def ready(self) -> dict[str, Any]:
        return self._line("READY", 300)

    def wake(self) -> dict[str, Any]:
        """One fresh application with ``min_replicas: 0``: its first request minus load()."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("wake\n")
        self.proc.stdin.flush()
        run = self._line("WAKE", 180)
        return {"first_request_s": round(run["first_request_s"], 3), "load_s": round(run["load_s"], 4),
                "platform_s": round(run["overhead_s"], 3)}

    def stop(self) -> None:
        _common._stop(self.proc, grace=2)  # type: ignore[arg-type]
        self._pump.join(2)


def inner(args: argparse.Namespace) -> None:
    os.environ.update(RAY_ENV)
    if not args.wake_only:  # the cluster's processes inherit it; wrk has its own core
        os.sched_setaffinity(0, {int(_wrk.SERVER_CPU)})
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1",
                                                            "include_dashboard": False})
    legs: dict[str, dict[str, Any]] = {}
    levels = 0 if args.wake_only else args.rounds * len(args.concurrency) * (4 + args.ray_serve)
    try:
        worker = cluster.add_node(num_cpus=WORKER_CPUS, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        with contextlib.ExitStack() as stack, _common.progress() as bar:
            task = bar.add_task("ray_serving: starting", total=levels + args.reps * (2 + args.ray_serve))
            serve = None
            if args.ray_serve:  # first: it takes longest to come up
                serve = RayServe(cluster.address)
                stack.callback(serve.stop)
            ray_args = ("--backend", "ray", "--ray-address", cluster.address)
            waking = {
                "swell-ray": stack.enter_context(_common.SwellServer(args=ray_args)),
                "swell-ray-no-prestart": stack.enter_context(
                    _common.SwellServer(extra_env={"SWELL_RAY_PRESTART": "0"}, args=ray_args)
                ),
            }
            if not args.wake_only:
                bar.update(task, description="ray_serving: requests/s")
                legs = _throughput(stack, waking["swell-ray"], serve, args, lambda: bar.advance(task))
                if "ray-serve" in legs and legs["ray-serve"]["same_cluster"] \
                        and legs["ray-serve"]["replica_node"] != worker.node_id:
                    raise SystemExit(f"Ray Serve's replica is on {legs['ray-serve']['replica_node']}, not the worker")
            elif serve is not None:
                serve.ready()
            bar.update(task, description="ray_serving: scale from zero")
            wakes = scale_from_zero(waking, serve, args.reps, lambda: bar.advance(task))
    finally:
        cluster.shutdown()
    print("RESULT " + json.dumps({"worker_cpus": WORKER_CPUS, "legs": legs, "scale_from_zero": wakes}), flush=True)


def ratios(legs: dict[str, dict[str, Any]], concurrency: list[int]) -> dict[str, dict[str, float]]:
    """Per level: swell-ray's req/s over each other leg's, swell-ray-sync's over
    Ray Serve's and bare's, and Ray Serve's p50 and p99 over swell-ray's (how
    many times longer a request waits)."""
    out: dict[str, dict[str, float]] = {}
    if "swell-ray" not in legs:
        return out
    for i, c in enumerate(concurrency):
        ray = legs["swell-ray"]["levels"][i]
        row: dict[str, float] = {}
        for other in ("ray-serve", "bare", "swell"):
            if other in legs and legs[other]["levels"][i]["rps"]:
                row[f"swell_ray_over_{other.replace('-', '_')}"] = round(ray["rps"] / legs[other]["levels"][i]["rps"], 3)
        if "swell-ray-sync" in legs:
            sync = legs["swell-ray-sync"]["levels"][i]
            for other in ("ray-serve", "bare"):
                if other in legs and legs[other]["levels"][i]["rps"]:
                    key = f"swell_ray_sync_over_{other.replace('-', '_')}"
                    row[key] = round(sync["rps"] / legs[other]["levels"][i]["rps"], 3)
        if "ray-serve" in legs:
            serve = legs["ray-serve"]["levels"][i]
            row["ray_serve_p50_over_swell_ray"] = round(serve["p50_ms"] / ray["p50_ms"], 2)
            row["ray_serve_p99_over_swell_ray"] = round(serve["p99_ms"] / ray["p99_ms"], 2)
        out[str(c)] = row
    return out


def table(legs: dict[str, dict[str, Any]], concurrency: list[int]) -> Table:
    t = Table(title="requests/s, p50 / p99 ms (servers and Ray on 1 core, wrk on the other)")
    t.add_column("connections", justify="right")
    for leg in legs:
        t.add_column(leg, justify="right")
    for i, c in enumerate(concurrency):
        cells = []
        for leg in legs:
            level = legs[leg]["levels"][i]
            cells.append(f"{level['rps']:,.0f}  {level['p50_ms']:.2f} / {level['p99_ms']:.2f}"
                         + (f"  ({level['errors']} err)" if level["errors"] else ""))
        t.add_row(str(c), *cells)
    return t


def ratio_table(ratio: dict[str, dict[str, float]]) -> Table:
    t = Table(title="swell-ray's req/s over the others'; Ray Serve's latency over swell-ray's")
    columns = [("swell_ray_over_ray_serve", "/ ray-serve", "{:.1f}×"),
               ("swell_ray_over_bare", "/ bare", "{:.0%}"),
               ("swell_ray_over_swell", "/ swell", "{:.0%}"),
               ("swell_ray_sync_over_ray_serve", "sync / ray-serve", "{:.1f}×"),
               ("swell_ray_sync_over_bare", "sync / bare", "{:.0%}"),
               ("ray_serve_p50_over_swell_ray", "p50 ray-serve/swell-ray", "{:.1f}×"),
               ("ray_serve_p99_over_swell_ray", "p99 ray-serve/swell-ray", "{:.1f}×")]
    t.add_column("connections", justify="right")
    for _, title, _ in columns:
        t.add_column(title, justify="right")
    for c, r in ratio.items():
        t.add_row(c, *(fmt.format(r[key]) if key in r else "-" for key, _, fmt in columns))
    return t


def wake_table(wakes: dict[str, list[dict[str, Any]]]) -> Table:
    t = Table(title="scale from zero: first request minus the model's load() (s)")
    for column in ("leg", "wakes", "median", "min", "max", "each"):
        t.add_column(column, justify="right")
    for leg, runs in wakes.items():
        values = sorted(w["platform_s"] for w in runs)
        if values:
            t.add_row(leg, str(len(values)), f"{values[len(values) // 2]:.3f}", f"{values[0]:.3f}",
                      f"{values[-1]:.3f}", ", ".join(f"{v:.2f}" for v in values))
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3, help="seconds per level (default 3)")
    parser.add_argument("--warmup", type=float, default=1, help="seconds of warm-up per level")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of all legs per level; each leg's best is kept")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 64])
    parser.add_argument("--reps", type=int, default=3, help="wakes from zero on each Ray server (default 3)")
    parser.add_argument("--wake-only", action="store_true", help="only scale from zero (no throughput legs)")
    parser.add_argument("--ray-serve", action=argparse.BooleanOptionalAction, default=True,
                        help="Ray Serve's legs (default on; off without bench/.venv-ray)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args)
        return
    if shutil.which("unshare") is None:
        raise SystemExit("unshare (util-linux) is needed to run Ray in a loopback-only network namespace")
    if args.ray_serve and not _common.ray_available():
        console.log("bench/.venv-ray is missing (bash bench/setup.sh): Ray Serve's legs are skipped")
        args.ray_serve = False
    argv = [sys.executable, str(Path(__file__).resolve()), "--inner", *sys.argv[1:],
            "--ray-serve" if args.ray_serve else "--no-ray-serve"]
    command = "ip link set lo up && exec " + " ".join(f"'{a}'" for a in argv)
    proc = subprocess.Popen(["unshare", "--net", "sh", "-c", command], stdout=subprocess.PIPE, text=True)
    result: dict[str, Any] | None = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("RESULT "):
            result = json.loads(line.removeprefix("RESULT "))
        else:
            sys.stdout.write(line)
    if proc.wait() != 0 or result is None:
        raise SystemExit(f"the run in the namespace failed (exit {proc.returncode})")
    out.print(wake_table(result["scale_from_zero"]))
    if args.wake_only:  # keep the last full run's throughput legs, marked as carried over
        previous_path = _common.RESULTS / "ray_serving.json"
        previous = json.loads(previous_path.read_text()) if previous_path.exists() else {}
        if previous.get("legs"):
            result["legs"] = previous["legs"]
            result["legs_carried_from"] = previous.get("legs_carried_from") or previous.get("machine")
            args.duration, args.concurrency = previous.get("duration_s"), previous.get("concurrency")
    ratio = ratios(result["legs"], args.concurrency) if result["legs"] else {}
    if result["legs"]:
        out.print(table(result["legs"], args.concurrency))
        out.print(ratio_table(ratio))
    _common.write_result("ray_serving", {"duration_s": args.duration, "rounds": args.rounds, "concurrency": args.concurrency,
                                         **result, "ratios": ratio})


if __name__ == "__main__":
    main()
