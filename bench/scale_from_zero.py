"""Scale-from-zero overhead: first-request latency minus the model's own load().

A trivial model (``bench/models/trivial``) whose ``load()`` records its own
duration is deployed fresh, scaled to zero, N times; each time one request
wakes it.  The overhead is what the platform adds: spawning the replica,
importing the runtime, starting its server, noticing it is ready, and
proxying the request.  Ray Serve runs the same trivial model with
``autoscaling_config={"min_replicas": 0, "max_replicas": 1}`` and otherwise
its defaults, in the same run, in a loopback-only network namespace.

    python bench/scale_from_zero.py [--reps 10] [--legs swell,ray]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import _wrk
from _common import console, out
from rich.table import Table


def _summary(reps: list[dict[str, float]]) -> dict[str, Any]:
    overhead = [r["overhead_s"] for r in reps]
    first = [r["first_request_s"] for r in reps]
    return {
        "reps": len(reps),
        "overhead_median_s": round(_wrk.percentile(overhead, 50), 4),
        "overhead_p90_s": round(_wrk.percentile(overhead, 90), 4),
        "overhead_min_s": round(min(overhead), 4) if overhead else None,
        "overhead_max_s": round(max(overhead), 4) if overhead else None,
        "first_request_median_s": round(_wrk.percentile(first, 50), 4),
    }


def swell_leg(args: argparse.Namespace, advance: Any) -> dict[str, Any]:
    load_log = Path(tempfile.mkdtemp(prefix="swell-bench-")) / "loads.jsonl"
    load_log.touch()
    reps: list[dict[str, float]] = []
    deadline = time.monotonic() + args.budget
    with _common.SwellServer(extra_env={"BENCH_LOAD_LOG": str(load_log)}) as server:
        for i in range(args.reps):
            if time.monotonic() > deadline:
                console.log(f"swell: time budget spent after {i} repetitions")
                break
            pushed = server.push(_common.TRIVIAL_PACKAGE)
            model_id, deployment_id = pushed["model_id"], pushed["deployment_id"]
            path = f"/v1/models/{model_id}/deployments/{deployment_id}"
            # Back to zero quickly after the replica the push may have started.
            server.api("PATCH", path + "/autoscaling_settings",
                       {"autoscaling_window": 10, "scale_down_delay": 0})
            _wrk.wait_until(
                lambda: server.api("GET", path)["status"] == "Scaled to zero", 10,  # noqa: B023
                "deployment scaled to zero",
            )
            loads_before = len(load_log.read_text().splitlines())
            started = time.perf_counter()
            status, body = _wrk.post(server.predict_url(model_id, deployment_id),
                                     headers=server.headers, timeout=60)
            latency = time.perf_counter() - started
            if status != 200:
                raise SystemExit(f"Swell answered {status}: {body[:500]!r}")
            lines = load_log.read_text().splitlines()[loads_before:]
            load = json.loads(lines[-1])["load_seconds"] if lines else 0.0
            view = server.api("GET", path)
            replicas = view.get("replicas") or [{}]
            reps.append({
                "first_request_s": latency,
                "load_s": load,
                "overhead_s": latency - load,
                "replica_reported_load_s": replicas[0].get("load_seconds"),
                "start_mode": replicas[0].get("start_mode"),  # how its process came to be
                "cold_start": replicas[0].get("cold_start"),  # the server's breakdown of the wake
            })
            # Each wake is measured with the machine's room free: this repetition's
            # replica is stopped now, not left holding its CPU share for the scale-down
            # window (else from the fifth one on the wake waits for room: --capacity-policy).
            server.api("POST", path + "/deactivate", {})
            _wrk.wait_until(
                lambda: not server.api("GET", path).get("replicas"), 30,  # noqa: B023
                "deactivated deployment's replica stopped",
            )
            console.log(f"swell rep {i + 1}: first request {latency * 1000:.1f} ms, "
                        f"load {load * 1000:.2f} ms, {replicas[0].get('start_mode')}, {replicas[0].get('cold_start')}")
            advance()
    return {"reps": reps, "summary": _summary(reps)}


def ray_leg(args: argparse.Namespace, advance: Any) -> dict[str, Any]:
    def on_line(line: str) -> None:
        console.log(f"ray {line}")
        if line.startswith("rep "):
            advance()

    result = _common.run_ray_leg(
        "scale_from_zero",
        ["--reps", str(args.reps), "--budget", str(args.budget)],
        timeout=args.budget + 90,
        on_line=on_line,
    )
    result["summary"] = _summary(result["reps"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=10, help="wake-ups per leg (default 10)")
    parser.add_argument("--budget", type=float, default=120, help="seconds per leg at most")
    parser.add_argument("--legs", default="swell,ray", help="comma-separated subset")
    args = parser.parse_args()
    chosen = [leg for leg in ("swell", "ray") if leg in args.legs.split(",")]
    runners = {"swell": swell_leg, "ray": ray_leg}
    legs: dict[str, dict[str, Any]] = {}
    with _common.progress() as bar:
        task = bar.add_task("scale from zero", total=len(chosen) * args.reps)
        for leg in chosen:
            bar.update(task, description=f"scale from zero: {leg}")
            legs[leg] = runners[leg](args, lambda: bar.advance(task))

    t = Table(title="scale from zero: first-request latency minus the model's load() (s)")
    for column in ("leg", "reps", "median", "p90", "min", "max", "first request, median"):
        t.add_column(column, justify="right")
    for leg, data in legs.items():
        s = data["summary"]
        t.add_row(leg, str(s["reps"]), f"{s['overhead_median_s']:.3f}", f"{s['overhead_p90_s']:.3f}",
                  f"{s['overhead_min_s']:.3f}", f"{s['overhead_max_s']:.3f}",
                  f"{s['first_request_median_s']:.3f}")
    out.print(t)
    ratio = {}
    if "swell" in legs and "ray" in legs:
        ratio["ray_over_swell_median"] = round(
            legs["ray"]["summary"]["overhead_median_s"] / legs["swell"]["summary"]["overhead_median_s"], 1
        )
        out.print(f"Ray's median overhead is {ratio['ray_over_swell_median']}× Swell's")
    _common.write_result("scale_from_zero", {"legs": legs, "ratios": ratio})


if __name__ == "__main__":
    main()
