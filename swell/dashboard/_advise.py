"""``swell advise`` for one deployment, run from the dashboard.

The advice comes from the CLI's own command (its public entry point), run as a
child process so a search of a hundred or more replays never holds the server's
event loop: the deployment's recorded traffic is written as a trace (one
``timestamp`` a request, spread across its second as the CLI spreads them), and
its settings, predict concurrency, measured cold start and service time (Little's
law over the history) go in as flags.  One run at a time per server.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from swell.config import EXTRA_SETTINGS, SCALAR_SETTINGS

__all__ = ["AdviseError", "advise_args", "run_advise", "trace_csv"]

TIMEOUT_SECONDS = 120.0
_one_at_a_time = asyncio.Lock()


class AdviseError(Exception):
    """Why no advice could be given, as a sentence."""


def trace_csv(traffic: Mapping[str, Any]) -> str:
    """The recorded per-second arrivals as a ``timestamp`` CSV (unix seconds)."""
    start = traffic.get("start")
    interval = float(traffic.get("interval") or 1.0)
    counts = list(traffic.get("arrivals") or [])
    if start is None or not any(counts):
        raise AdviseError("no traffic recorded for this deployment yet: call it, then ask again")
    rows = ["timestamp"]
    for k, n in enumerate(counts):
        for j in range(int(n)):
            rows.append(f"{float(start) + (k + (j + 0.5) / n) * interval:.6f}")
    return "\n".join(rows) + "\n"


def advise_args(view: Mapping[str, Any], traffic: Mapping[str, Any], max_replica_cap: int) -> list[str]:
    """The flags that describe this deployment to ``swell advise``."""
    settings = view.get("autoscaling_settings") or {}
    args = ["--json", "--max-replica-cap", str(max_replica_cap)]
    args += ["--predict-concurrency", str(int(view.get("predict_concurrency") or 1))]
    for name in SCALAR_SETTINGS:
        if settings.get(name) is not None:
            args += ["--" + name.replace("_", "-"), str(settings[name])]
    args += ["--" + name for name in EXTRA_SETTINGS if settings.get(name)]
    arrivals = sum(traffic.get("arrivals") or [])
    busy = sum(traffic.get("concurrency") or []) * float(traffic.get("interval") or 1.0)
    if arrivals > 0 and busy > 0:
        args += ["--service-time", f"{busy / arrivals:.6f}"]
    colds = [
        float(r["cold_start"]["total_seconds"])
        for r in view.get("replicas") or []
        if isinstance(r.get("cold_start"), dict) and isinstance(r["cold_start"].get("total_seconds"), (int, float))
    ]
    if colds:
        args += ["--cold-start", f"{max(colds):.3f}"]
    return args


async def run_advise(
    view: Mapping[str, Any], traffic: Mapping[str, Any], max_replica_cap: int, *, quick: bool = False
) -> dict[str, Any]:
    """``swell advise TRACE --json`` over the deployment's history: its JSON answer
    (``quick``: ``--quick``, without the joint search, as the server's background advice runs it)."""
    text = trace_csv(traffic)
    if _one_at_a_time.locked():
        raise AdviseError("another advise run is in progress on this server; try again when it ends")
    async with _one_at_a_time:
        with tempfile.TemporaryDirectory(prefix="swell-advise-") as folder:
            trace = Path(folder) / "traffic.csv"
            trace.write_text(text)
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "from swell.cli import main; main()", "advise", str(trace),
                *advise_args(view, traffic, max_replica_cap), *(["--quick"] if quick else []),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                out, err = await asyncio.wait_for(process.communicate(), TIMEOUT_SECONDS)
            except TimeoutError:
                process.kill()
                await process.wait()
                raise AdviseError(f"swell advise took over {TIMEOUT_SECONDS:.0f} s and was stopped") from None
    if process.returncode != 0:
        raise AdviseError(err.decode(errors="replace").strip().splitlines()[-1] if err.strip() else "swell advise failed")
    try:
        return dict(json.loads(out))
    except ValueError:
        raise AdviseError("swell advise did not answer JSON") from None
