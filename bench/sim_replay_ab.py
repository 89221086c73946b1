"""The simulator's replay speed, this checkout against another one, alternated in one run.

Two replays, each timed in a fresh process per run, the two checkouts taking turns (the
machine is shared and noisy: CPU seconds via ``time.process_time``, medians):

- ``month``: ``bench/sim_month.py``'s jumping replay of a quiet model's 30 days (9,833
  requests in minute-long bursts; goal < 0.5 s);
- ``day``: ``bench/sim_speed.py``'s day at 50 req/s (4.32 M requests; must not get slower).

Both checkouts must give the same metrics (``ticks`` aside: the work done); checked here.
Writes bench/results/sim_replay_ab.json.

    python bench/sim_replay_ab.py --before ../old-checkout [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# Run in the checkout under test (its own tree first on PYTHONPATH): one replay, its CPU seconds.
CHILD = r"""
import json, sys, time
import numpy as np
from swell.config import parse_autoscaling
from swell.sim import ColdStart, SimConfig, replay, synthetic_trace
if sys.argv[1] == "month":
    arrivals = synthetic_trace("bursts:rate=0.25,width=60,lull=5m/2h,duration=30d", seed=0).arrivals
    service = np.random.default_rng(0).lognormal(np.log(2.0), 0.5, arrivals.shape[0])
    settings = parse_autoscaling({"max_replica": 10}, max_replica_cap=10)
    config = SimConfig(settings=settings, predict_concurrency=4, cold_start=ColdStart.parse("30"))
else:
    arrivals = synthetic_trace("poisson:rate=50,duration=86400", seed=0).arrivals
    service = np.ones(arrivals.shape[0])
    settings = parse_autoscaling({"max_replica": 100}, max_replica_cap=100)
    config = SimConfig(settings=settings, cold_start=ColdStart.parse("10"), seed=0)
cpu, wall = time.process_time(), time.perf_counter()
metrics = dict(replay(arrivals, service, "swell", config).metrics)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
print(json.dumps({"cpu_s": cpu, "wall_s": wall, "ticks": metrics.pop("ticks"), "metrics": metrics}))
"""


def _one(tree: Path, case: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", CHILD, case], cwd=tree, env=env, check=True,
                         capture_output=True, text=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the other checkout (the baseline)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "sim_replay_ab.json")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": HERE.parent}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {case: {"before": [], "after": []} for case in ("month", "day")}
    for case in runs:
        for _ in range(args.runs):
            for name, tree in trees.items():
                runs[case][name].append(_one(tree, case))
    out: dict[str, Any] = {"before": str(trees["before"]), "runs": args.runs, "cases": {}}
    for case, by in runs.items():
        same = all(r["metrics"] == by["before"][0]["metrics"] for rs in by.values() for r in rs)
        row: dict[str, Any] = {"same_metrics": same}
        for name, rs in by.items():
            row[name] = {"cpu_s_median": round(statistics.median(r["cpu_s"] for r in rs), 3),
                         "cpu_s": [round(r["cpu_s"], 3) for r in rs],
                         "wall_s": [round(r["wall_s"], 3) for r in rs], "ticks": rs[0]["ticks"]}
        row["after_over_before"] = round(row["after"]["cpu_s_median"] / row["before"]["cpu_s_median"], 3)
        out["cases"][case] = row
        print(f"{case:5}: before {row['before']['cpu_s_median']:.3f} s CPU ({row['before']['ticks']:,} ticks), "
              f"after {row['after']['cpu_s_median']:.3f} s ({row['after']['ticks']:,} ticks), "
              f"x{row['after_over_before']}, same metrics: {same}")
    out["load_average"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
