"""Scale from zero on a model with weights, with and without the prewarmed pool.

``examples/weights`` (numpy, a weights file fetched over HTTP into the shared
cache) is deployed fresh and woken by one request, N times per leg; its
``load()`` appends its own duration to ``BENCH_LOAD_LOG``, and the figure is
the first request's latency minus that: what the platform adds (scheduling,
the process, imports the model file makes, fetching or reading weights from
the cache, noticing ready, proxying).

Legs:

- ``spawned``: ``--no-fork-server``, each replica a fresh interpreter;
- ``forkserver``: each replica forked on demand from a process that imported
  Swell's runtime and weights fetcher, not numpy
  (``--prewarm-modules none --pool-size 0``);
- ``fork``: forked on demand from a fork server that has also imported the
  heavy libraries (numpy; torch when installed) (``--pool-size 0``);
- ``pool``: the default: the wake takes a standby replica, forked from that
  fork server ahead of time and set up up to its model (``--pool-size 1``);
- ``ray``: Ray Serve on the same model file (``min_replicas: 0``), in a
  loopback-only network namespace, when ``bench/.venv-ray`` exists.

Legs not run this time are carried over from the previous result file with
``carried_from`` (the date of the run that measured them).

    python bench/cold_start_pool.py [--reps 8] [--legs spawned,forkserver,fork,pool,ray]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _wrk

WEIGHTS_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "weights"
WEIGHTS_PORT = 8765  # examples/weights/config.yaml fetches from here

TIMED_LOAD = '''

# --- bench/cold_start_pool.py: load() records its own duration ---
import json as _bench_json
import os as _bench_os
import time as _bench_time

_bench_load = Model.load


def _bench_timed_load(self):
    started = _bench_time.perf_counter()
    _bench_load(self)
    log = _bench_os.environ.get("BENCH_LOAD_LOG")
    if log:
        with open(log, "a") as f:
            f.write(_bench_json.dumps({"load_seconds": _bench_time.perf_counter() - started}) + "\\n")


Model.load = _bench_timed_load
'''

LEGS = {
    "spawned": {"SWELL_FORK_SERVER": "false"},
    "forkserver": {"SWELL_PREWARM_MODULES": "none", "SWELL_POOL_SIZE": "0"},
    "fork": {"SWELL_POOL_SIZE": "0"},
    "pool": {"SWELL_POOL_SIZE": "1"},
}


def _package(root: Path) -> Path:
    package = root / "weights-timed"
    shutil.copytree(WEIGHTS_EXAMPLE, package, ignore=shutil.ignore_patterns("__pycache__", "files"))
    model = package / "model" / "model.py"
    model.write_text(model.read_text() + TIMED_LOAD)
    return package


@contextlib.contextmanager
def _weights_server() -> Iterator[None]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(WEIGHTS_PORT), "--bind", "127.0.0.1",
         "--directory", str(WEIGHTS_EXAMPLE / "files")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        import urllib.request

        def up() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{WEIGHTS_PORT}/mlp.npy", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        _wrk.wait_until(up, 20, "the weights file server")
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def _summary(reps: list[dict[str, Any]]) -> dict[str, Any]:
    overhead = [r["overhead_s"] for r in reps]
    first = [r["first_request_s"] for r in reps]
    load = [r["load_s"] for r in reps]
    return {
        "reps": len(reps),
        "overhead_median_s": round(_wrk.percentile(overhead, 50), 4) if reps else None,
        "overhead_p90_s": round(_wrk.percentile(overhead, 90), 4) if reps else None,
        "overhead_min_s": round(min(overhead), 4) if reps else None,
        "first_request_median_s": round(_wrk.percentile(first, 50), 4) if reps else None,
        "load_median_s": round(_wrk.percentile(load, 50), 4) if reps else None,
    }


def swell_leg(leg: str, args: argparse.Namespace, package: Path) -> dict[str, Any]:
    import _common
    from _common import console

    load_log = Path(tempfile.mkdtemp(prefix="swell-bench-")) / "loads.jsonl"
    load_log.touch()
    reps: list[dict[str, Any]] = []
    deadline = time.monotonic() + args.budget
    env = {"BENCH_LOAD_LOG": str(load_log), **LEGS[leg]}
    with _common.SwellServer(extra_env=env) as server:
        # The fork server (when on) starts with the server: let it finish, as
        # it would have long before a real deployment's first wake.
        time.sleep(args.settle)
        for i in range(args.reps):
            if time.monotonic() > deadline:
                console.log(f"{leg}: time budget spent after {i} repetitions")
                break
            pushed = server.push(package)
            model_id, deployment_id = pushed["model_id"], pushed["deployment_id"]
            path = f"/v1/models/{model_id}/deployments/{deployment_id}"
            server.api("PATCH", path + "/autoscaling_settings", {"autoscaling_window": 10, "scale_down_delay": 0})
            _wrk.wait_until(lambda: server.api("GET", path)["status"] == "Scaled to zero", 10,  # noqa: B023
                            "deployment scaled to zero")
            loads_before = len(load_log.read_text().splitlines())
            body = json.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2]]})
            started = time.perf_counter()
            status, answer = _wrk.post(server.predict_url(model_id, deployment_id), body=body,
                                       headers=server.headers, timeout=120)
            latency = time.perf_counter() - started
            if status != 200:
                raise SystemExit(f"Swell ({leg}) answered {status}: {answer[:500]!r}\n{server.log.read_text()[-3000:]}")
            lines = load_log.read_text().splitlines()[loads_before:]
            load = json.loads(lines[-1])["load_seconds"] if lines else 0.0
            view = server.api("GET", path)
            cold = next((r["cold_start"] for r in view.get("replicas", []) if r.get("cold_start")), None)
            reps.append({"first_request_s": latency, "load_s": load, "overhead_s": latency - load,
                         "cold_start": cold})
            console.log(f"{leg} rep {i + 1}: first request {latency * 1000:.1f} ms, own load() "
                        f"{load * 1000:.1f} ms, breakdown {cold}")
            # Back to zero before the next one, so replicas do not pile up on the core.
            _wrk.wait_until(lambda: server.api("GET", path)["status"] == "Scaled to zero", 30,  # noqa: B023
                            "deployment scaled to zero again")
    return {"reps": reps, "summary": _summary(reps)}


def ray_leg(args: argparse.Namespace, package: Path) -> dict[str, Any]:
    import _common
    from _common import console

    inner = " ".join([
        "ip link set lo up;",
        "exec taskset -c", _wrk.SERVER_CPU, str(_common.RAY_PYTHON), str(Path(__file__).resolve()),
        "--ray-inner", "--reps", str(args.reps), "--budget", str(args.budget), "--package", str(package),
    ])
    proc = subprocess.run(["unshare", "-n", "sh", "-c", inner], capture_output=True, text=True,
                          timeout=args.budget + 180, check=False)
    for line in proc.stderr.splitlines():
        if line.startswith("[ray] "):
            console.log(line)
    result = next((json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")), None)
    if result is None:
        raise SystemExit("Ray's leg gave no result:\n" + proc.stderr[-3000:])
    result["summary"] = _summary(result["reps"])
    return result


def ray_inner(args: argparse.Namespace) -> None:
    """Inside the namespace, on Ray's interpreter: the same model file under Ray Serve."""
    import signal

    import ray
    from ray import serve

    package = Path(args.package)
    ray_dir = package.parent / "ray-package"
    if not ray_dir.exists():
        shutil.copytree(package, ray_dir)
        (ray_dir / "model_cache" / "mlp").mkdir(parents=True, exist_ok=True)
        shutil.copy(WEIGHTS_EXAMPLE / "files" / "mlp.npy", ray_dir / "model_cache" / "mlp" / "mlp.npy")
    load_log = ray_dir / "loads.jsonl"
    load_log.touch()

    @serve.deployment(autoscaling_config={"min_replicas": 0, "max_replicas": 1})
    class WeightsModel:
        def __init__(self, package_dir: str, log: str) -> None:
            import importlib.util

            os.chdir(package_dir)  # the model reads its weights relative to its package, as under Truss
            os.environ["BENCH_LOAD_LOG"] = log
            spec = importlib.util.spec_from_file_location("bench_model", Path(package_dir) / "model" / "model.py")
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self.model = module.Model()
            self.model.load()

        async def __call__(self, request):  # type: ignore[no-untyped-def]
            return self.model.predict(await request.json())

    ray.init(logging_level="ERROR", log_to_driver=False)
    reps = []
    deadline = time.monotonic() + args.budget
    body = json.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2]]})
    for i in range(args.reps):
        if time.monotonic() > deadline:
            break
        name = f"weights{i}"
        serve.run(WeightsModel.bind(str(ray_dir), str(load_log)), name=name, route_prefix=f"/{name}")
        before = len(load_log.read_text().splitlines())
        started = time.perf_counter()
        status, answer = _wrk.post(f"http://127.0.0.1:8000/{name}", body=body, timeout=120)
        latency = time.perf_counter() - started
        if status != 200:
            raise SystemExit(f"Ray Serve answered {status}: {answer[:300]!r}")
        lines = load_log.read_text().splitlines()[before:]
        load = json.loads(lines[-1])["load_seconds"] if lines else 0.0
        reps.append({"first_request_s": latency, "load_s": load, "overhead_s": latency - load})
        print(f"[ray] rep {i + 1}: first request {latency:.3f} s, load {load:.4f} s", file=sys.stderr, flush=True)
        serve.delete(name)
    print("RESULT " + json.dumps({"reps": reps, "ray_version": ray.__version__}), flush=True)
    for pid in _wrk.descendants(os.getpid()):
        if pid != os.getpid():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=8, help="wake-ups per leg (default 8)")
    parser.add_argument("--budget", type=float, default=150, help="seconds per leg at most")
    parser.add_argument("--legs", default="spawned,forkserver,fork,pool,ray", help="comma-separated subset")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the server starts")
    parser.add_argument("--ray-inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--package", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ray_inner:
        ray_inner(args)
        return

    import _common
    from _common import console, out
    from rich.table import Table

    chosen = [leg for leg in (*LEGS, "ray") if leg in args.legs.split(",")]
    if "ray" in chosen and not _common.ray_available():
        console.log("bench/.venv-ray is missing (bash bench/setup.sh): Ray's leg is skipped")
        chosen.remove("ray")
    root = Path(tempfile.mkdtemp(prefix="swell-bench-pool-"))
    package = _package(root)
    legs: dict[str, dict[str, Any]] = {}
    try:
        with _weights_server():
            for leg in chosen:
                console.log(f"leg: {leg}")
                legs[leg] = ray_leg(args, package) if leg == "ray" else swell_leg(leg, args, package)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    previous = Path(__file__).resolve().parent / "results" / "cold_start_pool.json"
    if previous.exists():
        old = json.loads(previous.read_text())
        for leg, data in old.get("legs", {}).items():
            if leg not in legs and leg in (*LEGS, "ray") and data.get("summary", {}).get("reps"):
                # Same leg name, same meaning since the fork-on-demand leg was renamed "fork".
                if leg == "pool" and "carried_from" not in data and "fork" not in old["legs"]:
                    continue  # that "pool" was today's "fork": not the same thing
                data.setdefault("carried_from", old.get("machine", {}).get("date"))
                legs[leg] = data
        legs = {leg: legs[leg] for leg in (*LEGS, "ray") if leg in legs}

    t = Table(title="scale from zero on examples/weights: first request minus the model's own load() (s)")
    for column in ("leg", "reps", "median", "p90", "min", "first request, median", "load(), median", "measured"):
        t.add_column(column, justify="right")
    for leg, data in legs.items():
        s = data["summary"]
        t.add_row(leg, str(s["reps"]), f"{s['overhead_median_s']:.3f}", f"{s['overhead_p90_s']:.3f}",
                  f"{s['overhead_min_s']:.3f}", f"{s['first_request_median_s']:.3f}", f"{s['load_median_s']:.4f}",
                  f"carried ({data['carried_from']})" if data.get("carried_from") else "this run")
    out.print(t)
    goal = {"overhead_goal_s": 0.2}
    if "pool" in legs:
        goal["pool_meets_goal"] = legs["pool"]["summary"]["overhead_median_s"] <= 0.2  # type: ignore[assignment]
    if "pool" in legs and "fork" in legs:
        goal["pool_minus_fork_median_s"] = round(  # type: ignore[assignment]
            legs["pool"]["summary"]["overhead_median_s"] - legs["fork"]["summary"]["overhead_median_s"], 4
        )
    _common.write_result("cold_start_pool", {"legs": legs, "goal": goal})


if __name__ == "__main__":
    main()
