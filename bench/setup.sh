#!/usr/bin/env bash
# What the benchmarks need besides Swell itself: wrk (Debian's) and Ray Serve
# in its own virtual environment (never in Swell's), bench/.venv-ray.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v wrk >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi
for tool in taskset unshare ip; do
  command -v "$tool" >/dev/null || { echo "missing $tool (util-linux / iproute2)" >&2; exit 1; }
done
if [ ! -x .venv-ray/bin/python ]; then
  python3 -m venv .venv-ray
  .venv-ray/bin/python -m pip install -q --disable-pip-version-check 'ray[serve]'
fi
.venv-ray/bin/python -c 'import ray; print("ray", ray.__version__)'
wrk --version 2>&1 | head -1 || true
