"""How fast the simulator replays a day: 24 h of Poisson traffic at 50 req/s.

4.32 M requests, 1 s service, 10 s cold start, Baseten's default settings but
max_replica 100 (the cap raised to 100).  Prints and writes
bench/results/sim_speed.json: requests simulated per second of wall time,
wall seconds, trace generation time (apart), peak RSS, and two references
measured in the same run so that a ratio stays comparable across machines:
the first hour of the same trace, and a pure-Python heap loop.

    python bench/sim_speed.py [--hours 24] [--rate 50] [--out bench/results/sim_speed.json]
"""

from __future__ import annotations

import argparse
import heapq
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

from swell.config import parse_autoscaling
from swell.sim import ColdStart, SimConfig, replay, synthetic_trace


def _rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def _python_heap_ops_per_s(n: int = 1_000_000) -> float:
    """A machine-speed yardstick: heapreplace on 100 floats, like one slot heap."""
    heap = [0.0] * 100
    t = time.perf_counter()
    x = 0.0
    for _ in range(n):
        x += 0.37
        heapq.heapreplace(heap, x)
    return n / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sim_speed.json")
    args = parser.parse_args()

    rss_start = _rss_mb()
    t = time.perf_counter()
    trace = synthetic_trace(f"poisson:rate={args.rate:g},duration={args.hours * 3600:g}", seed=0)
    service = np.ones(len(trace))
    generation_s = time.perf_counter() - t
    trace_mb = (trace.arrivals.nbytes + service.nbytes) / 2**20
    rss_trace = _rss_mb()

    settings = parse_autoscaling({"max_replica": 100}, max_replica_cap=100)
    config = SimConfig(settings=settings, cold_start=ColdStart.parse("10"), seed=0)

    # Reference 1: the first hour of the same trace, same engine.
    hour = trace.arrivals[trace.arrivals < 3600.0]
    t = time.perf_counter()
    replay(hour, service[: hour.shape[0]], "swell", config)
    hour_s = time.perf_counter() - t

    t = time.perf_counter()
    result = replay(trace.arrivals, service, "swell", config)
    wall_s = time.perf_counter() - t
    rss_end = _rss_mb()

    heap_ops = _python_heap_ops_per_s()
    requests = len(trace)
    rps = requests / wall_s
    hour_rps = hour.shape[0] / hour_s
    m = result.metrics
    out = {
        "scenario": {
            "trace": f"poisson:rate={args.rate:g},duration={args.hours:g}h (seed 0)",
            "requests": requests,
            "service_s": 1.0,
            "cold_start_s": 10.0,
            "settings": settings.model_dump(),
            "policy": "swell",
        },
        "requests_per_wall_second": round(rps),
        "wall_s": round(wall_s, 3),
        "trace_generation_s": round(generation_s, 3),
        "ticks": m["ticks"],
        "peak_rss_mb": round(rss_end, 1),
        "rss_after_trace_mb": round(rss_trace, 1),
        "rss_before_trace_mb": round(rss_start, 1),
        "trace_arrays_mb": round(trace_mb, 1),
        "per_request_result_arrays_mb": round(requests * 8 / 2**20, 1),
        "baseline_first_hour": {
            "requests": int(hour.shape[0]),
            "wall_s": round(hour_s, 3),
            "requests_per_wall_second": round(hour_rps),
        },
        "ratio_day_to_first_hour": round(rps / hour_rps, 3),
        "python_heapreplace_per_s": round(heap_ops),
        "requests_per_heapreplace": round(rps / heap_ops, 4),
        "goal": "whole day < 30 s",
        "goal_met": wall_s < 30.0,
        "result": {k: m[k] for k in ("replica_hours", "mean_replicas", "max_replicas", "cold_starts",
                                     "queue_wait_p99", "latency_p99", "requests_delayed_by_cold_start")},
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "processor": platform.machine()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(
        f"{requests:,} requests in {wall_s:.2f} s: {rps:,.0f} requests/s "
        f"(first hour alone: {hour_rps:,.0f}/s; trace generated in {generation_s:.2f} s; "
        f"peak RSS {rss_end:.0f} MB, trace arrays {trace_mb:.0f} MB)"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
