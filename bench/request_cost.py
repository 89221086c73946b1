"""What one proxied request costs the server and its replica, counted, not timed.

On a shared machine requests/s moves with the neighbours by far more than a
change to Swell moves it. This benchmark counts work instead of timing it, so
two versions of Swell can be compared on a noisy machine:

- **instructions per request** (Ir, from valgrind's callgrind) of the server
  process and, separately, of its replica process (with the fork server);
- **system calls per request** of each (``strace -c -f``, in a second run
  without valgrind, so the two tools do not stack).

For this tree and, with ``--baseline PATH`` (repeatable), other checkouts of
Swell (each server runs with ``PYTHONPATH=PATH`` in this same virtual
environment), it
starts ``swell serve`` on a fresh data directory under
``valgrind --tool=callgrind --instr-atstart=no --trace-children=yes`` (the
replica, forked from the fork server, is traced too), pushes
``examples/echo``, and at each connection level (default 1, 8, 64) sends a
warm-up and then a few batches of requests over that many keep-alive
connections, each batch counted on its own (callgrind's counters zeroed before
it, dumped after it). The server's and replica's background work (event-loop
timers, the control tick) goes on at a rate per second, not per request, and
valgrind makes a request ~50× slower, so the idle rate (2 s windows with no
requests just before) × each batch's duration is subtracted (``raw`` keeps
it). The figure is the median over the batches: a periodic job that lands in
one batch moves that batch, not the median.

The load comes from a small asyncio HTTP/1.1 client in this process, pinned to
CPU 0, sending exactly the same request as the other benchmarks; the servers
are pinned to CPU 1.

    python bench/request_cost.py [--baseline /work/before] [--batches 8] [--batch 50] [--concurrency 1,8,64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
import _wrk
from _common import console, out
from rich.table import Table

#: callgrind's own slowdown is ~50×; the server's start-up takes a minute or two under it.
START_TIMEOUT_S = 420


# --------------------------------------------------------------------------- load


class Load:
    """Exactly so many POSTs over so many keep-alive connections, each
    connection sending its share one after another."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        m = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
        assert m, url
        self.host, self.port, path = m.group(1), int(m.group(2)), m.group(3)
        body = _wrk.BODY.encode()
        head = [
            f"POST {path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            *(f"{k}: {v}" for k, v in headers.items()),
            f"Content-Length: {len(body)}",
        ]
        self.request = ("\r\n".join(head) + "\r\n\r\n").encode() + body

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
        if "content-length" in fields:
            await reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            raise RuntimeError(f"an answer with neither Content-Length nor chunks: {head!r}")
        return status

    async def _open(self, connections: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        return [await asyncio.open_connection(self.host, self.port) for _ in range(connections)]

    async def _send(self, conns: list[Any], count: int, timeout: float) -> list[int]:
        statuses: list[int] = []
        shares = [count // len(conns) + (i < count % len(conns)) for i in range(len(conns))]

        async def run(conn: Any, n: int) -> None:
            for _ in range(n):
                statuses.append(await self._one(*conn))

        await asyncio.wait_for(asyncio.gather(*(run(c, n) for c, n in zip(conns, shares, strict=True))), timeout)
        return statuses

    def run(
        self, connections: int, batches: list[int], timeout: float, around: Any = None
    ) -> tuple[int, list[float]]:
        """Send ``batches`` of requests one after another over the same
        connections; ``around`` (a context manager factory) wraps the sending
        of each batch, after the connections are open. Returns (non-2xx
        answers, each batch's seconds)."""

        async def main() -> tuple[int, list[float]]:
            conns = await asyncio.wait_for(self._open(connections), 60)
            bad, seconds = 0, []
            try:
                for count in batches:
                    with around() if around is not None else contextlib.nullcontext():
                        started = time.monotonic()
                        statuses = await self._send(conns, count, timeout)
                        seconds.append(time.monotonic() - started)
                    bad += sum(1 for s in statuses if not 200 <= s < 300)
            finally:
                for _, writer in conns:
                    writer.close()
            return bad, seconds

        return asyncio.run(main())


# --------------------------------------------------------------------------- processes


def processes(server_pid: int) -> dict[str, list[int]]:
    """The server's process and the others below it (fork server, replicas)."""
    below = [p for p in _wrk.descendants(server_pid) if p != server_pid]
    return {"server": [server_pid], "replica": below}


def _callgrind(pids: list[int], *flags: str) -> None:
    """``callgrind_control FLAGS PID`` for every pid at once; back when all have answered."""
    procs = [
        subprocess.Popen(["callgrind_control", *flags, str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for pid in pids
    ]
    for proc in procs:
        proc.wait(120)


_TOTALS = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


def _dumped(directory: Path, pid: int, seen: set[Path]) -> int:
    """Ir in the dump files of ``pid`` not in ``seen`` (adding them there)."""
    total = 0
    for path in directory.glob(f"cg.{pid}.*"):
        if path in seen:
            continue
        seen.add(path)
        m = _TOTALS.search(path.read_bytes())
        total += int(m.group(1)) if m else 0
        path.unlink()
    return total


@dataclass
class Counted:
    """A window of callgrind counts: Ir by role, and its length."""

    ir: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


class Tree:
    """One checkout of Swell: its server under callgrind, or plain for strace."""

    def __init__(self, name: str, path: Path, *, traced: bool) -> None:
        self.name, self.path, self.traced = name, path, traced
        self.dumps = Path(tempfile.mkdtemp(prefix="swell-cost-"))
        launcher: tuple[str, ...] = ()
        if traced:
            launcher = (
                "valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=yes",
                f"--callgrind-out-file={self.dumps}/cg.%p",
            )
        self.server = _common.SwellServer(
            {"PYTHONPATH": str(path)}, launcher=launcher, start_timeout=START_TIMEOUT_S
        )
        self.url = ""
        self._seen: set[Path] = set()

    def start(self) -> None:
        """Start, push the echo model, answer once (the cold start)."""
        self.server.start()
        pushed = self.server.cli("push", str(_common.ECHO_PACKAGE), "--publish", timeout=600)
        self.url = self.server.predict_url(pushed["model_id"])
        status, body = _wrk.post(self.url, headers=self.server.headers, timeout=600)
        if status != 200:
            raise SystemExit(f"{self.name} answered {status}: {body[:500]!r}")
        console.log(f"{self.name}: serving ({'under callgrind' if self.traced else 'plain'})")

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.dumps, ignore_errors=True)

    def load(self) -> Load:
        return Load(self.url, self.server.headers)

    def instrument(self) -> None:
        _callgrind(self.all_pids(), "--instr=on")

    def all_pids(self) -> list[int]:
        return [p for pids in processes(self.server.pid).values() for p in pids]

    @contextlib.contextmanager
    def counting(self, into: Counted) -> Any:
        """Zero every process's counters, run the body, dump: Ir by role."""
        roles = processes(self.server.pid)
        pids = [p for ps in roles.values() for p in ps]
        # A command takes effect when the process next polls for one, some time
        # between sending it and its answer: the window runs midpoint to midpoint.
        asked = time.monotonic()
        _callgrind(pids, "--zero")
        started = (asked + time.monotonic()) / 2
        yield
        asked = time.monotonic()
        _callgrind(pids, "--dump")
        into.seconds = (asked + time.monotonic()) / 2 - started
        into.ir = {role: sum(_dumped(self.dumps, p, self._seen) for p in ps) for role, ps in roles.items()}


# --------------------------------------------------------------------------- measurements


def measure_instructions(tree: Tree, connections: int, args: argparse.Namespace) -> dict[str, Any]:
    """One level: the median over ``args.batches`` counted batches of each
    process's Ir per request, net of the median idle rate (2 s windows just
    before). A periodic job (a flush, a housekeeping pass) that lands in one
    window moves one batch, not the median."""
    load = tree.load()
    per_batch = max(args.batch, 2 * connections)
    bad, _ = load.run(connections, [max(args.warmup, connections)], timeout=600)
    time.sleep(1.0)  # closing the warm-up's connections is not idle work
    idle = [Counted() for _ in range(args.idle)]
    for window in idle:
        with tree.counting(window):
            time.sleep(2.0)
    batches = [Counted() for _ in range(args.batches)]
    more, _ = load.run(
        connections, [per_batch] * args.batches, timeout=900,
        around=functools.partial(lambda w: tree.counting(next(w)), iter(batches)),
    )
    if bad or more:
        raise SystemExit(f"{tree.name} c={connections}: {bad + more} non-2xx answers")
    row: dict[str, Any] = {
        "connections": connections,
        "requests": per_batch * args.batches,
        "batches": args.batches,
        "seconds": round(sum(b.seconds for b in batches), 2),
        "batch_seconds": [round(b.seconds, 2) for b in batches],
    }
    for role in ("server", "replica"):
        rate = statistics.median(w.ir.get(role, 0) / w.seconds for w in idle)
        raw = [b.ir.get(role, 0) / per_batch for b in batches]
        net = [(b.ir.get(role, 0) - rate * b.seconds) / per_batch for b in batches]
        row[f"{role}_ir"] = round(statistics.median(net))
        row[f"{role}_ir_raw"] = round(statistics.median(raw))
        row[f"{role}_ir_batches"] = [round(x) for x in net]
        row[f"{role}_idle_ir_per_s"] = round(rate)
    console.log(
        f"{tree.name} c={connections}: {args.batches}×{per_batch} requests in {row['seconds']:.1f} s;"
        f" Ir/request server {row['server_ir']:,} (raw {row['server_ir_raw']:,}),"
        f" replica {row['replica_ir']:,} (raw {row['replica_ir_raw']:,})"
    )
    return row


_STRACE_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\S+)\s*$")


def _strace_calls(path: Path) -> tuple[int, dict[str, int]]:
    total, by_name = 0, {}
    for line in path.read_text().splitlines():
        m = _STRACE_ROW.match(line)
        if m:
            if m.group(2) == "total":
                total = int(m.group(1))
            else:
                by_name[m.group(2)] = int(m.group(1))
    return total, by_name


@contextlib.contextmanager
def _straced(roles: dict[str, list[int]], files: dict[str, Path]) -> Any:
    """``strace -c -f`` on each role's processes (one strace per role) for the
    body; the counts land in ``files``."""
    procs = {
        role: subprocess.Popen(
            ["strace", "-c", "-f", "-o", str(files[role]), *(a for p in pids for a in ("-p", str(p)))],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for role, pids in roles.items()
    }
    try:  # attached when it has said so for every process
        for role, proc in procs.items():
            assert proc.stderr is not None
            want = len(roles[role])
            while want:
                line = proc.stderr.readline()
                if not line:
                    raise SystemExit(f"strace ended early on the {role}")
                want -= "attached" in line and "detached" not in line
        yield
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGINT)
        for proc in procs.values():
            proc.wait(30)


@contextlib.contextmanager
def _straced_batch(
    directory: Path, roles: dict[str, list[int]], into: list[dict[str, tuple[int, dict[str, int]]]]
) -> Any:
    """One straced batch: its counts by role appended to ``into``."""
    files = {role: directory / f"strace-{role}.txt" for role in roles}
    with _straced(roles, files):
        yield
    into.append({role: _strace_calls(path) for role, path in files.items()})


def measure_syscalls(tree: Tree, connections: int, args: argparse.Namespace) -> dict[str, Any]:
    """One level: the median over ``args.syscall_batches`` straced batches of
    each process's system calls per request (strace attached for each batch
    alone, so a periodic job moves one batch, not the median)."""
    load = tree.load()
    per_batch = max(args.syscall_batch, 2 * connections)
    load.run(connections, [max(args.warmup, connections)], timeout=120)
    roles = processes(tree.server.pid)
    batches: list[dict[str, tuple[int, dict[str, int]]]] = []
    tracing = functools.partial(_straced_batch, tree.dumps, roles, batches)
    bad, _ = load.run(connections, [per_batch] * args.syscall_batches, timeout=300, around=tracing)
    if bad:
        raise SystemExit(f"{tree.name} c={connections}: {bad} non-2xx answers under strace")
    row: dict[str, Any] = {"connections": connections, "requests": per_batch * args.syscall_batches}
    for role in roles:
        totals = [b[role][0] / per_batch for b in batches]
        middle = sorted(range(len(batches)), key=lambda i: totals[i])[len(batches) // 2]
        row[f"{role}_syscalls"] = round(statistics.median(totals), 2)
        row[f"{role}_syscalls_batches"] = [round(x, 2) for x in totals]
        row[f"{role}_syscalls_by_name"] = {  # of the median batch
            k: round(v / per_batch, 2)
            for k, v in sorted(batches[middle][role][1].items(), key=lambda kv: -kv[1])
            if v / per_batch >= 0.05
        }
    console.log(
        f"{tree.name} c={connections}: syscalls/request server {row['server_syscalls']},"
        f" replica {row['replica_syscalls']}"
    )
    return row


def run_trees(trees: list[Tree], levels: list[int], measure: Any, into: str, results: dict[str, Any]) -> None:
    """Start every tree at once (start-up under valgrind is the slow part),
    then measure them in turns, level by level, so that a busy spell on the
    machine falls on all of them alike; always stop them."""
    try:
        with ThreadPoolExecutor(len(trees)) as pool:
            for f in [pool.submit(t.start) for t in trees]:
                f.result()
        for connections in levels:
            for tree in trees:
                results[tree.name].setdefault(into, {})[str(connections)] = measure(tree, connections)
    finally:
        for tree in trees:
            tree.stop()


# --------------------------------------------------------------------------- report


def table(results: dict[str, Any], levels: list[int]) -> Table:
    names = list(results)
    t = Table(title="per request: instructions (callgrind Ir, net of idle) and system calls; medians of batches")
    t.add_column("connections", justify="right")
    t.add_column("figure")
    for name in names:
        t.add_column(name, justify="right")
    for name in names[1:]:
        t.add_column(f"this/{name}", justify="right")
    figures = [
        ("instructions", "server_ir", "server Ir"),
        ("instructions", "replica_ir", "replica Ir"),
        ("instructions", "total_ir", "server+replica Ir"),
        ("instructions", "server_ir_raw", "server Ir, raw"),
        ("instructions", "replica_ir_raw", "replica Ir, raw"),
        ("syscalls", "server_syscalls", "server syscalls"),
        ("syscalls", "replica_syscalls", "replica syscalls"),
    ]
    for c in levels:
        rows = [
            (kind, label, [results[n].get(kind, {}).get(str(c), {}).get(key) for n in names])
            for kind, key, label in figures
        ]
        rows = [row for row in rows if any(v is not None for v in row[2])]
        for i, (kind, label, values) in enumerate(rows):
            cells = [
                "-" if v is None else (f"{v:,.0f}" if kind == "instructions" else f"{v:.2f}") for v in values
            ]
            this = values[0]
            cells += [f"{this / v:.3f}" if this is not None and v else "-" for v in values[1:]]
            t.add_row(str(c) if i == 0 else "", label, *cells, end_section=i == len(rows) - 1)
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--baseline", type=Path, action="append", default=[],
        help="another checkout of Swell to compare with (e.g. /work/before); may be given more than once",
    )
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 64]
    )
    parser.add_argument("--batch", type=int, default=50, help="requests per counted batch (at least 2 × connections; default 50)")
    parser.add_argument("--batches", type=int, default=8, help="counted batches per level under callgrind (default 8)")
    parser.add_argument("--warmup", type=int, default=100, help="requests before each level's count (default 100)")
    parser.add_argument("--idle", type=int, default=3, help="2 s windows of idle counting before each level (default 3)")
    parser.add_argument("--syscall-batch", type=int, default=200, help="requests per straced batch (default 200)")
    parser.add_argument("--syscall-batches", type=int, default=5, help="straced batches per level (default 5)")
    parser.add_argument(
        "--only", choices=("instructions", "syscalls"), help="measure one of the two (default both)"
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(_wrk.WRK_CPU)})  # the load comes from here, beside wrk's core

    missing = [tool for tool in ("valgrind", "callgrind_control", "strace") if shutil.which(tool) is None]
    if missing:
        console.print(
            f"[yellow]request_cost: skipped, {', '.join(missing)} not installed"
            " (apt-get install -y valgrind strace)[/]"
        )
        return
    trees = {"this": _common.REPO}
    for path in args.baseline:
        baseline = path.resolve()
        if not (baseline / "swell" / "__init__.py").is_file():
            raise SystemExit(f"--baseline {baseline}: no swell/ package there")
        name = baseline.name
        while name in trees:
            name += "'"
        trees[name] = baseline

    results: dict[str, dict[str, Any]] = {name: {"path": str(path)} for name, path in trees.items()}
    if args.only != "syscalls":
        console.log("instructions: starting " + " and ".join(trees) + " under callgrind (a minute or two)")
        traced = [Tree(n, p, traced=True) for n, p in trees.items()]

        def instructions(tree: Tree, connections: int) -> dict[str, Any]:
            if connections == args.concurrency[0]:
                tree.instrument()
            return measure_instructions(tree, connections, args)

        run_trees(traced, args.concurrency, instructions, "instructions", results)
        for r in results.values():
            for row in r["instructions"].values():
                row["total_ir"] = row["server_ir"] + row["replica_ir"]
    if args.only != "instructions":
        run_trees(
            [Tree(n, p, traced=False) for n, p in trees.items()],
            args.concurrency,
            lambda tree, connections: measure_syscalls(tree, connections, args),
            "syscalls",
            results,
        )
    out.print(table(results, args.concurrency))
    _common.write_result(
        "request_cost",
        {
            "batch": args.batch,
            "batches": args.batches,
            "syscall_batch": args.syscall_batch,
            "syscall_batches": args.syscall_batches,
            "idle_windows_s": args.idle,
            "concurrency": args.concurrency,
            "trees": results,
        },
    )


if __name__ == "__main__":
    main()
