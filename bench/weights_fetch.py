"""Weight fetch: parallel byte ranges vs one stream of the same file, from a local HTTP
server and from moto's S3 server in the same run, and a cached reload vs a fetch.

Each leg runs ``--repeat`` times into an empty cache (the cached legs into a warm
one) through ``WeightsFetcher.prepare`` — what a replica runs before ``load()``:
fetch, sha256, move into the cache, link at the mount location.  The servers run
in their own processes.  The page cache is not dropped between runs: the origin
file stays in memory, so the figures are the fetcher's own cost, not a disk's.

    python bench/weights_fetch.py                    # 1 GiB, 3 runs per leg (~3 min)
    python bench/weights_fetch.py --size 256Mi --repeat 1
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import console, out, write_result
from rich.table import Table

from swell.weights import FetchOptions, WeightsCache, WeightsFetcher
from swell.weights._plan import parse_size
from swell.weights._testing import MotoS3, write_random_file

_SERVER = """
import sys, time
from pathlib import Path
from swell.weights._testing import FileServer
from swell.weights._testing import ServerBehaviour
server = FileServer({"model.bin": Path(sys.argv[1])})
capped = FileServer({"model.bin": Path(sys.argv[1])}, ServerBehaviour(rate=float(sys.argv[2])))
print(server.port, capped.port, flush=True)
sys.stdin.read()
"""


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_leg(entry: dict[str, Any], options: FetchOptions, env: dict[str, str], cache_dir: Path,
            package: Path, *, warm: bool) -> dict[str, float]:
    if not warm:
        shutil.rmtree(cache_dir, ignore_errors=True)
    shutil.rmtree(package, ignore_errors=True)
    cache = WeightsCache(cache_dir)
    fetcher = WeightsFetcher(cache, options, env=env)
    cpu, start = cpu_seconds(), time.perf_counter()
    report = fetcher.prepare([entry], package)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    cache.release()
    return {"seconds": seconds, "cpu_seconds": cpu, "bytes_fetched": report.bytes_fetched,
            "bytes_cached": report.bytes_cached}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1Gi", help="file size (default 1Gi)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per leg (default 3; the median is reported)")
    parser.add_argument("--part-size", default="16Mi", help="part size of the parallel legs (default 16Mi)")
    parser.add_argument("--parallelism", type=int, default=8, help="parallel parts (default 8)")
    parser.add_argument("--legs", default="http,capped,s3,cached", help="subset of http,capped,s3,cached")
    parser.add_argument("--capped-rate", default="100Mi",
                        help="per-connection rate of the capped HTTP server (default 100Mi bytes/s)")
    args = parser.parse_args()
    size = parse_size(args.size)
    legs_wanted = set(args.legs.split(","))
    ranges = FetchOptions(part_size=parse_size(args.part_size), parallelism=args.parallelism)
    stream = FetchOptions(part_size=None, parallelism=1)

    work = Path(tempfile.mkdtemp(prefix="swell-bench-weights-"))
    results: dict[str, Any] = {}
    try:
        origin = work / "model.bin"
        console.print(f"writing a {size / 2**20:.0f} MiB file…")
        digest = write_random_file(origin, size)
        rate = parse_size(args.capped_rate)
        server = subprocess.Popen([sys.executable, "-c", _SERVER, str(origin), str(rate)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None
        port, capped_port = (int(p) for p in server.stdout.readline().split())
        http_url = f"http://127.0.0.1:{port}/model.bin"
        capped_url = f"http://127.0.0.1:{capped_port}/model.bin"
        capped = f"http, {args.capped_rate}/s per conn."
        moto = None
        try:
            plan: list[tuple[str, str, dict[str, Any], FetchOptions, dict[str, str], bool]] = []
            if "http" in legs_wanted:
                entry = {"source": http_url, "mount_location": "/app/w", "sha256": digest}
                plan += [("http", "single stream", entry, stream, {}, False),
                         ("http", "parallel ranges", entry, ranges, {}, False)]
            if "capped" in legs_wanted:
                entry = {"source": capped_url, "mount_location": "/app/w", "sha256": digest}
                plan += [(capped, "single stream", entry, stream, {}, False),
                         (capped, "parallel ranges", entry, ranges, {}, False)]
            if "s3" in legs_wanted:
                console.print("starting moto and uploading the file…")
                moto = MotoS3()
                client = moto.client()
                client.create_bucket(Bucket="bench")
                client.upload_file(str(origin), "bench", "model.bin")
                entry = {"source": "s3://bench/model.bin", "mount_location": "/app/w", "sha256": digest}
                plan += [("s3 (moto)", "single stream", entry, stream, moto.env(), False),
                         ("s3 (moto)", "parallel ranges", entry, ranges, moto.env(), False)]
            if "cached" in legs_wanted:
                plan += [("http", "cached, revalidated (HEAD)", {"source": http_url, "mount_location": "/app/w"},
                          ranges, {}, True),
                         ("http", "cached, sha256 given (no request)",
                          {"source": http_url, "mount_location": "/app/w", "sha256": digest}, ranges, {}, True)]
            for source, leg, entry, options, env, warm in plan:
                cache_dir, package = work / "cache", work / "package"
                if warm:  # fill the cache once; the runs then reload from it
                    run_leg(entry, ranges, env, cache_dir, package, warm=False)
                runs = []
                for i in range(args.repeat):
                    runs.append(run_leg(entry, options, env, cache_dir, package, warm=warm))
                    console.print(f"{source:10} {leg:34} run {i + 1}: {runs[-1]['seconds']:.3f} s")
                seconds = statistics.median(r["seconds"] for r in runs)
                results[f"{source} / {leg}"] = {
                    "source": source, "leg": leg, "runs": runs, "median_seconds": seconds,
                    "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
                    "mib_per_s": size / 2**20 / seconds,
                    "part_size": options.part_size, "parallelism": options.parallelism,
                    "bytes_fetched": runs[-1]["bytes_fetched"],
                }
        finally:
            server.stdin.close()  # type: ignore[union-attr]
            server.wait(10)
            if moto is not None:
                moto.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def ratio(a: str, b: str) -> float | None:
        if a in results and b in results:
            return results[b]["median_seconds"] / results[a]["median_seconds"]
        return None

    ratios = {
        "http: parallel ranges vs single stream (speed-up)": ratio("http / parallel ranges", "http / single stream"),
        "http capped per connection: parallel ranges vs single stream (speed-up)":
            ratio(f"{capped} / parallel ranges", f"{capped} / single stream") if "capped" in legs_wanted else None,
        "s3 (moto): parallel ranges vs single stream (speed-up)":
            ratio("s3 (moto) / parallel ranges", "s3 (moto) / single stream"),
        "http: cached reload (HEAD) vs parallel fetch (speed-up)":
            ratio("http / cached, revalidated (HEAD)", "http / parallel ranges"),
        "http: cached reload (sha256) vs parallel fetch (speed-up)":
            ratio("http / cached, sha256 given (no request)", "http / parallel ranges"),
    }
    table = Table(title=f"weights fetch, {size / 2**20:.0f} MiB, median of {args.repeat} "
                        f"({os.cpu_count()} CPUs; parts {args.part_size} × {args.parallelism})")
    for column in ("source", "leg", "seconds", "MiB/s", "CPU s", "bytes fetched"):
        table.add_column(column, justify="left" if column in ("source", "leg") else "right")
    for r in results.values():
        table.add_row(r["source"], r["leg"], f"{r['median_seconds']:.3f}", f"{r['mib_per_s']:.0f}",
                      f"{r['median_cpu_seconds']:.2f}", f"{r['bytes_fetched']:,}")
    out.print(table)
    for name, value in ratios.items():
        if value is not None:
            out.print(f"{name}: {value:.2f}x")
    path = write_result("weights_fetch", {"size_bytes": size, "repeat": args.repeat,
                                          "part_size": ranges.part_size, "parallelism": ranges.parallelism,
                                          "legs": results, "ratios": ratios})
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
