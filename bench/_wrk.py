"""Load generation and process measurement shared by every benchmark leg.

Standard library only: the Ray leg imports this from Ray's own virtual
environment, which has none of Swell's dependencies.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

#: The load generator runs here, the server under test on SERVER_CPU.
WRK_CPU = "0"
SERVER_CPU = "1"

#: Every leg sends exactly this request.
BODY = '{"text": "hello, swell"}'

_LUA = r"""
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
%(headers)s

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\":%%d,\"duration_us\":%%d,\"connect\":%%d,\"read\":%%d," ..
    "\"write\":%%d,\"status\":%%d,\"timeout\":%%d,\"p50_us\":%%d,\"p90_us\":%%d," ..
    "\"p99_us\":%%d,\"mean_us\":%%.1f,\"max_us\":%%d}\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


@dataclass
class WrkResult:
    connections: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: int  # socket errors + non-2xx/3xx answers + timeouts

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def wrk_script(headers: dict[str, str] | None = None, body: str = BODY) -> Path:
    lines = "\n".join(
        f'wrk.headers["{k}"] = [==[{v}]==]' for k, v in (headers or {}).items()
    )
    fd, name = tempfile.mkstemp(prefix="swell-bench-", suffix=".lua")
    with os.fdopen(fd, "w") as f:
        f.write(_LUA % {"body": body, "headers": lines})
    return Path(name)


def run_wrk(
    url: str, connections: int, seconds: float, script: Path, *, timeout_s: float = 10.0
) -> WrkResult:
    """One wrk run (one thread, ``connections`` connections) pinned to WRK_CPU."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    cmd = [
        "taskset", "-c", WRK_CPU, wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
        f"--timeout={max(1, round(timeout_s))}s", "--latency", "-s", str(script), url,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=False
    )
    for line in proc.stdout.splitlines():
        if line.startswith("WRKJSON "):
            d = json.loads(line.removeprefix("WRKJSON "))
            break
    else:
        raise RuntimeError(f"wrk gave no result (rc {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    secs = d["duration_us"] / 1e6
    errors = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
    return WrkResult(
        connections=connections,
        requests=d["requests"],
        seconds=round(secs, 3),
        rps=round(d["requests"] / secs, 1) if secs else 0.0,
        p50_ms=d["p50_us"] / 1000,
        p90_ms=d["p90_us"] / 1000,
        p99_ms=d["p99_us"] / 1000,
        mean_ms=round(d["mean_us"] / 1000, 3),
        max_ms=d["max_us"] / 1000,
        errors=errors,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str, body: str = BODY, headers: dict[str, str] | None = None,
         timeout: float = 120.0) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body.encode(), method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns something truthy; bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:  # noqa: BLE001 - not up yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc's children lists)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                pass
    return sorted(set(out))


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def memory(pids: list[int]) -> dict[str, object]:
    """Summed PSS and RSS (MiB) of ``pids``, with each process named."""
    rows = []
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                "utf-8", "replace"
            ).strip()
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        fields = {}
        for line in rollup.splitlines()[1:]:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                fields[key] = int(parts[0])
        rows.append({
            "pid": pid,
            "name": comm,
            "cmd": cmdline[:160],
            "pss_mib": round(fields.get("Pss", 0) / 1024, 1),
            "rss_mib": round(fields.get("Rss", 0) / 1024, 1),
        })
    pages = unique_pages([r["pid"] for r in rows])  # type: ignore[misc]
    return {
        "pss_mib": round(sum(r["pss_mib"] for r in rows), 1),
        "rss_mib": round(sum(r["rss_mib"] for r in rows), 1),
        "unique_mib": round(pages * _PAGE / 2**20, 1) if pages is not None else None,
        "processes": rows,
    }


_PAGE = os.sysconf("SC_PAGE_SIZE")
_PFN_MASK = (1 << 55) - 1


def unique_pages(pids: list[int]) -> int | None:
    """Physical pages mapped by ``pids``, each counted once however many of
    them map it: what the group holds by itself.

    Summed PSS also divides a shared page with processes *outside* the group
    (other Pythons on a shared machine share libpython's pages), so it moves
    with the neighbours; this does not.  Needs root (PFNs in
    /proc/PID/pagemap); ``None`` without.
    """
    import array

    frames: set[int] = set()
    for pid in pids:
        try:
            regions = []
            start = end = 0
            for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
                head = line.split(" ", 1)[0]
                if "-" in head and not head.endswith(":"):
                    lo, _, hi = head.partition("-")
                    start, end = int(lo, 16), int(hi, 16)
                elif head == "Rss:" and int(line.split()[1]) > 0:
                    regions.append((start, end))
            with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
                for lo, hi in regions:
                    pagemap.seek(lo // _PAGE * 8)
                    entries = array.array("Q", pagemap.read((hi - lo) // _PAGE * 8))
                    frames.update(e & _PFN_MASK for e in entries if e >> 63)
        except (OSError, ValueError):
            continue
    if not frames or frames == {0}:
        return None  # no permission to see frame numbers
    frames.discard(0)
    return len(frames)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in 0..100."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)
