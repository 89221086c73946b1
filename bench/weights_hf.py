"""Hugging Face weights: huggingface_hub's ``snapshot_download`` vs Swell's fetcher, same repo, same run.

A repo with one large ``model.safetensors`` (a single-file model, the common
case below ~10 GB) and the usual small files, served by :class:`HubServer`
(the Hub's download API on 127.0.0.1, in its own process; LFS files redirect
to a CDN on another port, as on the Hub) as is and with each connection capped
(as a CDN or a long path caps one stream).

Legs, each into an empty cache:

- ``snapshot_download``: huggingface_hub's own download into its cache folder
  (8 files at a time, one stream per file; no Xet: the local server speaks
  plain HTTP, as the Hub's resolve URLs do);
- ``snapshot_download + into the cache``: the same, then what Swell would have
  to do with its files to serve them from its shared cache (hash, copy);
- ``swell``: ``WeightsFetcher.prepare`` — listing through huggingface_hub,
  parallel ranges, sha256, into the cache, linked at the mount location.

    python bench/weights_hf.py                      # 512 MiB, 3 runs per leg
    python bench/weights_hf.py --size 256Mi --repeat 1 --capped-rate 100Mi
"""

from __future__ import annotations

import argparse
import hashlib
import os
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
from swell.weights._testing import write_random_file

_SERVER = """
import sys
from pathlib import Path
from swell.weights._testing import HubServer, repos_from_folder
plain = HubServer(repos_from_folder(Path(sys.argv[1])))
capped = HubServer(repos_from_folder(Path(sys.argv[1])))
capped.rate = float(sys.argv[2])
print(plain.endpoint, capped.endpoint, flush=True)
sys.stdin.read()
"""
REPO_ID = "bench/model"


def snapshot(endpoint: str, work: Path, into_cache: bool) -> float:
    from huggingface_hub import snapshot_download

    target, cache_dir = work / "hf-cache", work / "cache"
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(cache_dir, ignore_errors=True)
    start = time.perf_counter()
    folder = Path(snapshot_download(REPO_ID, cache_dir=target, endpoint=endpoint, token=False))
    if into_cache:
        cache = WeightsCache(cache_dir)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest = hashlib.sha256()
            partial = cache.partial_path(str(path))
            with open(path, "rb") as src, open(partial, "wb") as dst:
                while block := src.read(4 << 20):
                    digest.update(block)
                    dst.write(block)
            cache.insert(partial, digest.hexdigest())
        cache.release()
    return time.perf_counter() - start


def swell(endpoint: str, work: Path, options: FetchOptions) -> float:
    cache_dir, package = work / "cache", work / "package"
    shutil.rmtree(cache_dir, ignore_errors=True)
    shutil.rmtree(package, ignore_errors=True)
    cache = WeightsCache(cache_dir)
    start = time.perf_counter()
    WeightsFetcher(cache, options, env={"HF_ENDPOINT": endpoint}).prepare(
        [{"source": f"hf://{REPO_ID}", "mount_location": "/app/w"}], package)
    seconds = time.perf_counter() - start
    cache.release()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="512Mi", help="size of model.safetensors (default 512Mi)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per leg (default 3; the median is reported)")
    parser.add_argument("--capped-rate", default="16Mi",
                        help="per-connection cap (default 16Mi bytes/s: low enough to bind on a 2-core machine, "
                             "where the legs are CPU-bound near 50 MiB/s)")
    args = parser.parse_args()
    size, rate = parse_size(args.size), parse_size(args.capped_rate)
    options = FetchOptions()  # the defaults a replica uses: 16 MiB parts, 8 at a time
    work = Path(tempfile.mkdtemp(prefix="swell-bench-hf-"))
    results: dict[str, Any] = {}
    try:
        repo = work / "hub" / REPO_ID
        console.print(f"writing a {size / 2**20:.0f} MiB model.safetensors…")
        write_random_file(repo / "model.safetensors", size)
        for name, text in (("config.json", '{"hidden": 4096}'), ("tokenizer.json", "{}" * 50_000),
                           ("generation_config.json", "{}"), ("README.md", "# bench")):
            (repo / name).write_text(text)
        server = subprocess.Popen([sys.executable, "-c", _SERVER, str(work / "hub"), str(rate)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None
        plain, capped = server.stdout.readline().split()
        try:
            for where, endpoint in (("loopback", plain), (f"{args.capped_rate}/s per conn.", capped)):
                for leg, run in (("snapshot_download", lambda e=endpoint: snapshot(e, work, False)),
                                 ("snapshot_download + into the cache", lambda e=endpoint: snapshot(e, work, True)),
                                 ("swell", lambda e=endpoint: swell(e, work, options))):
                    runs = []
                    for i in range(args.repeat):
                        runs.append(run())
                        console.print(f"{where:22} {leg:36} run {i + 1}: {runs[-1]:.3f} s")
                    seconds = statistics.median(runs)
                    results[f"{where} / {leg}"] = {"server": where, "leg": leg, "runs": runs,
                                                   "median_seconds": seconds, "mib_per_s": size / 2**20 / seconds}
        finally:
            server.stdin.close()  # type: ignore[union-attr]
            server.wait(10)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ratios = {}
    for where in ("loopback", f"{args.capped_rate}/s per conn."):
        base = results[f"{where} / swell"]["median_seconds"]
        for leg in ("snapshot_download", "snapshot_download + into the cache"):
            ratios[f"{where}: swell vs {leg} (speed-up)"] = results[f"{where} / {leg}"]["median_seconds"] / base
    table = Table(title=f"Hugging Face repo, {size / 2**20:.0f} MiB model.safetensors + 4 small files, "
                        f"median of {args.repeat} ({os.cpu_count()} CPUs)")
    for column in ("server", "leg", "seconds", "MiB/s"):
        table.add_column(column, justify="left" if column in ("server", "leg") else "right")
    for r in results.values():
        table.add_row(r["server"], r["leg"], f"{r['median_seconds']:.3f}", f"{r['mib_per_s']:.0f}")
    out.print(table)
    for name, value in ratios.items():
        out.print(f"{name}: {value:.2f}x")
    path = write_result("weights_hf", {"size_bytes": size, "repeat": args.repeat, "capped_rate": rate,
                                       "part_size": options.part_size, "parallelism": options.parallelism,
                                       "legs": results, "ratios": ratios})
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
