"""Idle memory: summed PSS and RSS of the server and one idle trivial replica.

Swell: ``swell serve`` (pinned to CPU 1) with ``examples/echo`` pushed and
called once, so one replica is up; then left idle for a few seconds and
every process in the server's tree is measured from /proc/PID/smaps_rollup
(PSS, RSS) and /proc/PID/pagemap ("unique": the physical pages the group
maps, each counted once, which unlike summed PSS does not move with what
else runs on the machine).
Ray Serve: the same model with its defaults, every Ray process (the driver
and all it started), in the same run.  PSS splits shared pages between the
processes that share them, so its sum is what the tree really costs.

    python bench/idle_memory.py [--settle 5] [--legs swell,ray]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import _common
import _wrk
from _common import console, out
from rich.table import Table


def swell_leg(args: argparse.Namespace) -> dict[str, Any]:
    with _common.SwellServer() as server:
        pushed = server.push(_common.ECHO_PACKAGE)
        status, body = _wrk.post(server.predict_url(pushed["model_id"]), headers=server.headers)
        if status != 200:
            raise SystemExit(f"Swell answered {status}: {body[:500]!r}")
        time.sleep(args.settle)
        tree = _wrk.descendants(server.pid)
        return {
            "all": _wrk.memory(tree),
            "server": _wrk.memory([server.pid]),
            "replicas_and_fork_server": _wrk.memory([p for p in tree if p != server.pid]),
        }


def ray_leg(args: argparse.Namespace) -> dict[str, Any]:
    return _common.run_ray_leg(
        "idle_memory",
        ["--settle", str(args.settle)],
        timeout=150 + args.settle,
        on_line=lambda line: console.log(f"ray {line}"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settle", type=float, default=5, help="idle seconds before measuring")
    parser.add_argument("--legs", default="swell,ray", help="comma-separated subset")
    args = parser.parse_args()
    chosen = [leg for leg in ("swell", "ray") if leg in args.legs.split(",")]
    legs: dict[str, dict[str, Any]] = {}
    with _common.progress() as bar:
        task = bar.add_task("idle memory", total=len(chosen))
        for leg in chosen:
            bar.update(task, description=f"idle memory: {leg}")
            legs[leg] = {"swell": swell_leg, "ray": ray_leg}[leg](args)
            bar.advance(task)

    t = Table(title="idle memory, server + one idle trivial replica (MiB)")
    for column in ("leg", "processes", "PSS", "RSS", "unique"):
        t.add_column(column, justify="right")
    for leg, data in legs.items():
        total = data["all"]
        unique = total.get("unique_mib")
        t.add_row(leg, str(len(total["processes"])), f"{total['pss_mib']:.1f}",
                  f"{total['rss_mib']:.1f}", f"{unique:.1f}" if unique is not None else "-")
        for proc in total["processes"]:
            t.add_row("", f"{proc['name']}: {proc['cmd'][:50]}", f"{proc['pss_mib']:.1f}",
                      f"{proc['rss_mib']:.1f}", style="dim")
    out.print(t)
    ratio = {}
    if "swell" in legs and "ray" in legs:
        ratio["ray_over_swell_pss"] = round(legs["ray"]["all"]["pss_mib"] / legs["swell"]["all"]["pss_mib"], 1)
        ratio["ray_over_swell_rss"] = round(legs["ray"]["all"]["rss_mib"] / legs["swell"]["all"]["rss_mib"], 1)
        swell_unique, ray_unique = legs["swell"]["all"]["unique_mib"], legs["ray"]["all"]["unique_mib"]
        if swell_unique and ray_unique:
            ratio["ray_over_swell_unique"] = round(ray_unique / swell_unique, 1)
        out.print(f"Ray Serve uses {ratio['ray_over_swell_pss']}× Swell's PSS "
                  f"and {ratio['ray_over_swell_rss']}× its RSS")
    _common.write_result("idle_memory", {"settle_s": args.settle, "legs": legs, "ratios": ratio})


if __name__ == "__main__":
    main()
