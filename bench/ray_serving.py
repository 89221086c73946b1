"""Swell on a Ray cluster: requests to a replica on another Ray node, and scale from zero.

One run, in a loopback-only network namespace (the script enters one itself:
Ray probes 8.8.8.8 and listens on every interface), with a local Ray cluster
(a head with no CPU and one worker node), the servers and the cluster pinned
to the server's core and wrk to the other:

- bare:       a bare uvicorn app: the physical limit;
- swell:      ``swell serve`` (process backend), ``examples/echo`` on a Unix socket;
- swell-ray:  ``swell serve --backend ray``, the same model as a Ray actor's
              replica process on the worker node, called over TCP with its token;

then scale from zero on the Ray backend: the first request's latency after
the deployment has scaled to zero, minus the model's own ``load()`` (what the
platform adds: Ray placing the actor, the node starting the replica process,
noticing ready, proxying), on two servers of the same cluster taking turns:
``swell-ray`` (the replica process pre-started by the standby actor) and its
baseline ``swell-ray-no-prestart`` (``SWELL_RAY_PRESTART=0``: a fresh
interpreter at the wake).  ``--wake-only`` skips the throughput legs and
leaves every process on every core (no wrk to keep a core for).  Ray
Serve is not measured here (serve_throughput.py and cold_start_pool.py have
its legs when ``bench/.venv-ray`` exists).

    python bench/ray_serving.py [--duration 3] [--reps 3] [--wake-only]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import _wrk
from _common import console, out
from rich.table import Table

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


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


def scale_from_zero(servers: dict[str, _common.SwellServer], reps: int) -> dict[str, list[dict[str, Any]]]:
    """``reps`` wakes on each server, taking turns (the machine's load falls on both alike)."""
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
    for rep in range(reps):
        for name, server in servers.items():
            run = _wake(server, deployments[name])
            console.log(f"{name} scale from zero #{rep + 1}: {run}")
            runs[name].append(run)
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
            "start": cold.get("start"), "prestarted": prestarted, "node": replica.get("node")}


def _throughput(stack: contextlib.ExitStack, ray_server: _common.SwellServer,
                args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    targets: dict[str, tuple[str, dict[str, str] | None]] = {}
    targets["bare"] = (stack.enter_context(_common.bare_app()), None)
    servers = {"swell": stack.enter_context(_common.SwellServer()), "swell-ray": ray_server}
    for name, server in servers.items():
        pushed = server.push(_common.ECHO_PACKAGE)
        url = server.predict_url(pushed["model_id"])
        status, body = _wrk.post(url, headers=server.headers, timeout=120)
        if status != 200:
            raise SystemExit(f"{name} answered {status}: {body[:300]!r}")
        targets[name] = (url, server.headers)
    scripts = {name: _wrk.wrk_script(headers) for name, (_, headers) in targets.items()}
    levels: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    try:
        for connections in args.concurrency:
            for name, (url, _) in targets.items():
                levels[name].append(_measure(name, url, connections, args, scripts[name]))
    finally:
        for script in scripts.values():
            script.unlink(missing_ok=True)
    return {name: {"levels": rows} for name, rows in levels.items()}


def inner(args: argparse.Namespace) -> None:
    os.environ.update(RAY_ENV)
    if not args.wake_only:  # the cluster's processes inherit it; wrk has its own core
        os.sched_setaffinity(0, {int(_wrk.SERVER_CPU)})
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1",
                                                            "include_dashboard": False})
    legs: dict[str, dict[str, Any]] = {}
    try:
        cluster.add_node(num_cpus=6, node_ip_address="127.0.0.1")  # logical CPUs: room for both servers' standbys
        cluster.wait_for_nodes()
        with contextlib.ExitStack() as stack:
            ray_args = ("--backend", "ray", "--ray-address", cluster.address)
            waking = {
                "swell-ray": stack.enter_context(_common.SwellServer(args=ray_args)),
                "swell-ray-no-prestart": stack.enter_context(
                    _common.SwellServer(extra_env={"SWELL_RAY_PRESTART": "0"}, args=ray_args)
                ),
            }
            if not args.wake_only:
                legs = _throughput(stack, waking["swell-ray"], args)
            wakes = scale_from_zero(waking, args.reps)
    finally:
        cluster.shutdown()
    print("RESULT " + json.dumps({"legs": legs, "scale_from_zero": wakes}), flush=True)


def table(legs: dict[str, dict[str, Any]], concurrency: list[int]) -> Table:
    t = Table(title="requests/s, p50 / p99 ms (servers and Ray on 1 core, wrk on the other)")
    t.add_column("connections", justify="right")
    for leg in legs:
        t.add_column(leg, justify="right")
    t.add_column("swell-ray/bare", justify="right")
    t.add_column("swell-ray/swell", justify="right")
    for i, c in enumerate(concurrency):
        cells = [f"{legs[leg]['levels'][i]['rps']:,.0f}  {legs[leg]['levels'][i]['p50_ms']:.2f} / "
                 f"{legs[leg]['levels'][i]['p99_ms']:.2f}" for leg in legs]
        ray, bare, swell = (legs[k]["levels"][i]["rps"] for k in ("swell-ray", "bare", "swell"))
        t.add_row(str(c), *cells, f"{ray / bare:.0%}", f"{ray / swell:.0%}")
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3, help="seconds per level (default 3)")
    parser.add_argument("--warmup", type=float, default=1, help="seconds of warm-up per level")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 64])
    parser.add_argument("--reps", type=int, default=3, help="wakes from zero on each Ray server (default 3)")
    parser.add_argument("--wake-only", action="store_true", help="only scale from zero (no throughput legs)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args)
        return
    if shutil.which("unshare") is None:
        raise SystemExit("unshare (util-linux) is needed to run Ray in a loopback-only network namespace")
    argv = [sys.executable, str(Path(__file__).resolve()), "--inner", *sys.argv[1:]]
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
    if result["legs"]:
        out.print(table(result["legs"], args.concurrency))
    for name, wakes in result["scale_from_zero"].items():
        platform = sorted(w["platform_s"] for w in wakes)
        out.print(f"{name}: scale from zero (first request minus load()): "
                  f"median {platform[len(platform) // 2]:.3f} s over {len(wakes)} wakes: {platform}")
    if args.wake_only:  # keep the last full run's throughput legs, marked as carried over
        previous_path = _common.RESULTS / "ray_serving.json"
        previous = json.loads(previous_path.read_text()) if previous_path.exists() else {}
        if previous.get("legs"):
            result["legs"] = previous["legs"]
            result["legs_carried_from"] = previous.get("legs_carried_from") or previous.get("machine")
            args.duration, args.concurrency = previous.get("duration_s"), previous.get("concurrency")
    _common.write_result("ray_serving", {"duration_s": args.duration, "concurrency": args.concurrency, **result})


if __name__ == "__main__":
    main()
