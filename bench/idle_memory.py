"""Idle memory: summed PSS and RSS of the server and one idle trivial replica.

Swell: ``swell serve`` (pinned to CPU 1) with ``examples/echo`` pushed and
called once, so one replica is up; then left idle for a few seconds and
every process in the server's tree is measured from /proc/PID/smaps_rollup
(PSS, RSS) and /proc/PID/pagemap ("unique": the physical pages the group
maps, each counted once, which unlike summed PSS does not move with what
else runs on the machine).
Pool sizes: the same Swell leg with ``--pool-size`` 0, 1, 2 (1 is the
default, the ``swell`` leg), to show what each standby replica costs.
Ray Serve: the same model with its defaults, every Ray process (the driver
and all it started), in the same run.  PSS splits shared pages between the
processes that share them, so its sum is what the tree really costs.

    python bench/idle_memory.py [--settle 5] [--legs swell,ray] [--pool-sizes 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import _common
import _wrk
from _common import console, out
from rich.table import Table


def swell_leg(args: argparse.Namespace, pool_size: int | None = None) -> dict[str, Any]:
    env = {"SWELL_POOL_SIZE": str(pool_size)} if pool_size is not None else None
    with _common.SwellServer(extra_env=env) as server:
        pushed = server.push(_common.ECHO_PACKAGE)
        status, body = _wrk.post(server.predict_url(pushed["model_id"]), headers=server.headers)
        if status != 200:
            raise SystemExit(f"Swell answered {status}: {body[:500]!r}")
        time.sleep(args.settle)
        tree = _wrk.descendants(server.pid)
        standbys = [p for p in tree if _comm(p) == "swell-standby"]
        return {
            "standbys": _wrk.memory(standbys),
            "all": _wrk.memory(tree),
            "server": _wrk.memory([server.pid]),
            "replicas_and_fork_server": _wrk.memory([p for p in tree if p != server.pid]),
        }


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


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
    parser.add_argument("--pool-sizes", default="0,1,2", help="Swell's --pool-size values to measure ('' for none)")
    args = parser.parse_args()
    chosen = [leg for leg in ("swell", "ray") if leg in args.legs.split(",")]
    sizes = [int(n) for n in args.pool_sizes.split(",") if n.strip()]
    legs: dict[str, dict[str, Any]] = {}
    pools: dict[str, dict[str, Any]] = {}
    with _common.progress() as bar:
        task = bar.add_task("idle memory", total=len(chosen) + len(sizes))
        for leg in chosen:
            bar.update(task, description=f"idle memory: {leg}")
            legs[leg] = {"swell": swell_leg, "ray": ray_leg}[leg](args)
            bar.advance(task)
        for size in sizes:
            bar.update(task, description=f"idle memory: pool size {size}")
            pools[str(size)] = swell_leg(args, size)
            bar.advance(task)

    previous = Path(__file__).resolve().parent / "results" / "idle_memory.json"
    if previous.exists():  # a leg not run this time keeps its last figure, marked so
        old = json.loads(previous.read_text())
        for leg, data in old.get("legs", {}).items():
            if leg not in legs:
                data.setdefault("carried_from", old.get("machine", {}).get("date"))
                legs[leg] = data

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
    pool_table: dict[str, dict[str, Any]] = {}
    if pools:
        t = Table(title="idle memory of swell serve by --pool-size, server + one idle replica (MiB)")
        for column in ("pool size", "processes", "PSS", "RSS", "unique", "standbys' PSS", "standbys' unique"):
            t.add_column(column, justify="right")
        for size, data in pools.items():
            total, standbys = data["all"], data["standbys"]
            pool_table[size] = {
                "processes": len(total["processes"]), "pss_mib": total["pss_mib"], "rss_mib": total["rss_mib"],
                "unique_mib": total["unique_mib"], "standbys": len(standbys["processes"]),
                "standbys_pss_mib": standbys["pss_mib"], "standbys_unique_mib": standbys["unique_mib"],
            }
            t.add_row(size, str(len(total["processes"])), f"{total['pss_mib']:.1f}", f"{total['rss_mib']:.1f}",
                      f"{total['unique_mib'] or 0:.1f}", f"{standbys['pss_mib']:.1f}",
                      f"{standbys['unique_mib'] or 0:.1f}")
        out.print(t)
    _common.write_result("idle_memory", {"settle_s": args.settle, "legs": legs, "ratios": ratio,
                                         "pool_sizes": pool_table, "pool_size_legs": pools})


if __name__ == "__main__":
    main()
