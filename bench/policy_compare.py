"""The policy comparison of issue 8 on the shared Azure traces.

Same mechanics for every policy: the token service-time model 0.0002 s/context
token + 0.02 s/generated token + 0.05 s, 4 slots per replica, 30 s cold start,
max 10 replicas.  Rows: the peers (Knative KPA, Ray Serve), Swell with the
default settings, the clairvoyant oracle, and per advise run (at the defaults'
p99 queue wait, and with ``--queue-wait-p99`` set to the better peer's): Swell
with what ``swell advise`` recommends, each option of its menu, with the extras it offers (settings tuned
for them) when it offers any, and, for the record, with each extra switched on
over the recommended settings.  Prints the table and writes
bench/results/policy_compare.json, with the issue's bar checked per trace:
replica-seconds ≤ the cheaper peer's, ≥ 30 % fewer delayed requests than the
better peer, replica-seconds ≤ 1.5 × the oracle's.

    python bench/policy_compare.py [--traces ../shared/traces] [--out bench/results/policy_compare.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from swell.autoscaling import Extras
from swell.config import parse_autoscaling
from swell.sim import ColdStart, ServiceTime, SimConfig, read_csv_trace, replay
from swell.sim._advise import AdviseSetup, advise

SERVICE = "tokens:0.0002,0.02,0.05"
COLD = 30.0
SLOTS = 4
MAX = 10
KEYS = ("replica_seconds", "requests_delayed_by_cold_start", "queue_wait_p99", "cold_starts", "mean_replicas")


def _row(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in KEYS}


def run(path: Path) -> dict[str, Any]:
    trace = read_csv_trace(path)
    service = ServiceTime.parse(SERVICE).durations(trace)
    settings = parse_autoscaling({"max_replica": MAX})
    cold = ColdStart("fixed", COLD)
    config = SimConfig(settings=settings, predict_concurrency=SLOTS, cold_start=cold)
    rows: dict[str, Any] = {}
    for name in ("knative", "ray-serve", "swell", "oracle"):
        rows[name if name != "swell" else "swell (defaults)"] = _row(replay(trace.arrivals, service, name, config).metrics)
    kpa, ray = rows["knative"], rows["ray-serve"]
    slo = min(kpa["queue_wait_p99"], ray["queue_wait_p99"])
    runs = [_advised(trace, service, settings, cold, rows, None), _advised(trace, service, settings, cold, rows, slo)]
    return {
        "trace": path.name,
        "requests": len(trace),
        "policies": rows,
        "bar_targets": runs[0]["bar_targets"],
        "advise": runs,
    }


def _advised(trace: Any, service: Any, settings: Any, cold: ColdStart, peers: dict[str, Any], budget: float | None) -> dict[str, Any]:
    rows = dict(peers)
    t = time.perf_counter()
    advice = advise(AdviseSetup(trace.arrivals, service, settings, SLOTS, cold, MAX, queue_wait_p99=budget))
    took = time.perf_counter() - t
    # The recommendation without extras (the PATCH body), replayed on its own ...
    plain = SimConfig(settings=parse_autoscaling(advice.recommended), predict_concurrency=SLOTS, cold_start=cold)
    rows["swell (advised)"] = _row(replay(trace.arrivals, service, "swell", plain).metrics)
    # ... and with the extras advise offers (its settings tuned for them), when it offers any.
    if advice.extras and advice.extras_recommended is not None:
        extras = Extras(
            burst=advice.extras.get("burst", False),
            trend=advice.extras.get("trend", False),
            cold_start=COLD,
            service_time=float(service.mean()),
            predict_concurrency=SLOTS,
        )
        tuned = SimConfig(settings=parse_autoscaling(advice.extras_recommended), predict_concurrency=SLOTS,
                          cold_start=cold, extras=extras)
        rows["swell (advised + extras)"] = _row(replay(trace.arrivals, service, "swell", tuned).metrics)
    # Each option of advise's menu (cost against latency), replayed.
    for option in advice.menu:
        chosen = SimConfig(settings=parse_autoscaling(option.settings), predict_concurrency=SLOTS, cold_start=cold)
        rows[f"swell (menu: {option.name})"] = _row(replay(trace.arrivals, service, "swell", chosen).metrics)
    # For the record, each extra switched on over the advised settings as they are (offered or not).
    for name in ("trend", "burst"):
        extra = Extras(burst=name == "burst", trend=name == "trend", cold_start=COLD,
                       service_time=float(service.mean()), predict_concurrency=SLOTS)
        config = SimConfig(settings=parse_autoscaling(advice.recommended), predict_concurrency=SLOTS,
                           cold_start=cold, extras=extra)
        rows[f"swell (advised, {name} on)"] = _row(replay(trace.arrivals, service, "swell", config).metrics)
    kpa, ray, oracle = rows["knative"], rows["ray-serve"], rows["oracle"]
    cheaper = min(kpa["replica_seconds"], ray["replica_seconds"])
    better = min(kpa["requests_delayed_by_cold_start"], ray["requests_delayed_by_cold_start"])

    def bar(ours: dict[str, Any]) -> dict[str, bool]:
        checks = {
            "replica_seconds_at_most_cheaper_peer": ours["replica_seconds"] <= cheaper,
            "delayed_at_least_30pct_below_better_peer": ours["requests_delayed_by_cold_start"] <= 0.7 * better,
            "within_1_5x_oracle_replica_seconds": ours["replica_seconds"] <= 1.5 * oracle["replica_seconds"],
        }
        return {**checks, "met": all(checks.values())}

    return {
        "queue_wait_p99_budget": budget,
        "policies": {k: v for k, v in rows.items() if k not in peers},
        "advised_settings": advice.recommended,
        "advised_extras": advice.extras,
        "advised_extras_settings": advice.extras_recommended,
        "menu": {o.name: o.settings for o in advice.menu},
        "findings": [f.id for f in advice.findings],
        "advise_seconds": round(took, 2),
        "advise_replays": advice.simulations,
        "bar": {name: bar(rows[name]) for name in rows if name.startswith("swell (advised")},
        "bar_targets": {"replica_seconds_max": min(cheaper, 1.5 * oracle["replica_seconds"]), "delayed_max": 0.7 * better},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parent
    parser.add_argument("--traces", type=Path, default=here.parent.parent / "shared" / "traces")
    parser.add_argument("--out", type=Path, default=here / "results" / "policy_compare.json")
    parser.add_argument("--only", choices=("code", "conv"), default=None, help="One trace (results not written).")
    args = parser.parse_args()
    names = (args.only,) if args.only else ("code", "conv")
    results = [run(args.traces / f"AzureLLMInferenceTrace_{n}.csv") for n in names]
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for r in results:
        table = Table(title=f"{r['trace']} ({r['requests']:,} requests)", title_justify="left")
        table.add_column("policy")
        for k in KEYS:
            table.add_column(k.replace("requests_delayed_by_cold_start", "delayed"), justify="right")
        named = dict(r["policies"])
        for run_ in r["advise"]:
            budget = run_["queue_wait_p99_budget"]
            tag = "p99 as now" if budget is None else f"p99 ≤ {budget:.2f} s"
            named.update({f"{k} ({tag})": v for k, v in run_["policies"].items()})
        for name, row in named.items():
            table.add_row(name, *(f"{row[k]:,.2f}" if isinstance(row[k], float) else f"{row[k]:,}" for k in KEYS))
        console.print(table)
        console.print(f"bar targets: {r['bar_targets']}")
        for run_ in r["advise"]:
            console.print(f"p99 budget {run_['queue_wait_p99_budget']}: advised {run_['advised_settings']}; "
                          f"findings {run_['findings']}; {run_['advise_replays']} replays in {run_['advise_seconds']} s")
            if run_["advised_extras"]:
                console.print(f"  with extras {run_['advised_extras']}: {run_['advised_extras_settings']}")
            for name, checks in run_["bar"].items():
                console.print(f"  {name}: {checks}")
    if args.only:
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"setup": {"service_time": SERVICE, "cold_start_s": COLD, "predict_concurrency": SLOTS,
                                              "max_replica": MAX}, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
