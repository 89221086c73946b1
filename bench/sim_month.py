"""A month of a quiet model's traffic: replay ticking vs jumping, and ``swell advise`` on it.

The trace: ``bursts:rate=0.25,width=60,lull=5m/2h,duration=30d`` (seed 0), about 10k requests in
bursts of a minute an hour or so apart; service times lognormal around 2 s (seed 0); 4 slots a
replica, 30 s cold start, Baseten's default settings with ``max_replica`` 10.  Three replays of
the same trace, metric for metric equal (checked here): jumping (the default), idle-only (the
engine before jumping through busy stretches: it skips only silence with an empty window) and
tick by tick (every second of the month; ``--no-ticking`` leaves it out, it takes minutes).
Then ``advise`` on the same traffic (the joint search included), and ``advise --quick`` (what
``swell serve`` runs in the background: the single checks and the menu); with ``--jobs N`` also the
full advise with N worker processes (CPU seconds: this process's and its workers').  Wall and CPU
seconds of each; writes bench/results/sim_month.json.

    python bench/sim_month.py [--no-ticking] [--no-advise [--quick]] [--jobs N] [--out bench/results/sim_month.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from swell.config import parse_autoscaling
from swell.sim import ColdStart, SimConfig, replay, synthetic_trace
from swell.sim._advise import AdviseSetup, advise

SPEC = "bursts:rate=0.25,width=60,lull=5m/2h,duration=30d"


def month() -> tuple[np.ndarray, np.ndarray]:
    arrivals = synthetic_trace(SPEC, seed=0).arrivals
    service = np.random.default_rng(0).lognormal(np.log(2.0), 0.5, arrivals.shape[0])
    return arrivals, service


def _cpu() -> float:
    # This process and its children that have ended (advise's workers are joined before it returns).
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _timed(fn: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), _cpu()
    out = fn()
    return out, time.perf_counter() - wall, _cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-ticking", action="store_true", help="leave out the tick-by-tick replay (minutes)")
    parser.add_argument("--no-advise", action="store_true", help="leave out advise")
    parser.add_argument("--quick", action="store_true", help="with --no-advise: still time advise --quick")
    parser.add_argument("--jobs", type=int, default=1, help="also time the full advise with this many workers")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sim_month.json")
    args = parser.parse_args()

    arrivals, service = month()
    settings = parse_autoscaling({"max_replica": 10}, max_replica_cap=10)
    config = SimConfig(settings=settings, predict_concurrency=4, cold_start=ColdStart.parse("30"))
    modes = {"jump": config, "idle_only": dataclasses.replace(config, coast=False)}
    if not args.no_ticking:
        modes["ticking"] = dataclasses.replace(config, skip_idle=False)
    replays: dict[str, Any] = {}
    reference: dict[str, Any] | None = None
    for name, cfg in modes.items():
        result, wall, cpu = _timed(lambda cfg=cfg: replay(arrivals, service, "swell", cfg))
        metrics = dict(result.metrics)
        ticks = metrics.pop("ticks")
        if reference is None:
            reference = metrics
        replays[name] = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "ticks": ticks,
                         "equal_to_jump": metrics == reference}
        print(f"replay {name:9}: {wall:7.2f} s wall, {cpu:7.2f} s CPU, {ticks:,} ticks, equal: {metrics == reference}")
    out: dict[str, Any] = {
        "scenario": {"trace": f"{SPEC} (seed 0)", "requests": int(arrivals.shape[0]),
                     "days": round(float(arrivals[-1]) / 86400, 2), "service": "lognormal(ln 2 s, 0.5), seed 0",
                     "predict_concurrency": 4, "cold_start_s": 30.0, "settings": settings.model_dump()},
        "replay": replays,
        "metrics": reference,
        "goal": "replay < 0.5 s, advise < 60 s",
    }
    if not args.no_advise:
        setup = AdviseSetup(arrivals=arrivals, service=service, settings=settings, predict_concurrency=4,
                            cold_start=ColdStart.parse("30"), max_replica_cap=10)
        advice, wall, cpu = _timed(lambda: advise(setup))
        out["advise"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "replays": advice.simulations,
                         "findings": [f.id for f in advice.findings]}
        print(f"advise: {wall:.1f} s wall, {cpu:.1f} s CPU, {advice.simulations} replays, "
              f"findings: {', '.join(f.id for f in advice.findings) or 'none'}")
    if not args.no_advise and args.jobs > 1:
        setup = AdviseSetup(arrivals=arrivals, service=service, settings=settings, predict_concurrency=4,
                            cold_start=ColdStart.parse("30"), max_replica_cap=10, workers=args.jobs)
        pooled, wall, cpu = _timed(lambda: advise(setup))
        out["advise_jobs"] = {"jobs": args.jobs, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                              "replays": pooled.simulations, "same_advice": pooled.as_dict() == advice.as_dict()}
        print(f"advise --jobs {args.jobs}: {wall:.1f} s wall, {cpu:.1f} s CPU (with the workers'), "
              f"{pooled.simulations} replays, same advice: {pooled.as_dict() == advice.as_dict()}")
    if not args.no_advise or args.quick:
        # What the server runs in the background (swell advise --quick): the checks and the menu.
        setup = AdviseSetup(arrivals=arrivals, service=service, settings=settings, predict_concurrency=4,
                            cold_start=ColdStart.parse("30"), max_replica_cap=10, joint_search=False)
        advice, wall, cpu = _timed(lambda: advise(setup))
        out["advise_quick"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "replays": advice.simulations,
                               "findings": [f.id for f in advice.findings]}
        print(f"advise --quick: {wall:.1f} s wall, {cpu:.1f} s CPU, {advice.simulations} replays, "
              f"findings: {', '.join(f.id for f in advice.findings) or 'none'}")
    out["machine"] = {"python": platform.python_version(), "numpy": np.__version__, "processor": platform.machine()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
