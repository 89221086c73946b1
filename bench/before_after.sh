#!/usr/bin/env bash
# The same benchmarks on two checkouts, back to back on one machine, so a change is
# judged against its own baseline (this machine is shared and noisy: read the ratios).
#   BEFORE=../old-checkout bash bench/before_after.sh      (AFTER defaults to this checkout)
# Both run with this checkout's .venv, each with its own tree first on PYTHONPATH.
# Tables go to stdout; each script's JSON is copied to $OUT (default bench/results/before_after/).
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
BEFORE=$(cd "${BEFORE:?set BEFORE to the old checkout}" && pwd)
AFTER=$(cd "${AFTER:-$here}" && pwd)
OUT=${OUT:-$here/bench/results/before_after}
venv=$here/.venv/bin
mkdir -p "$OUT"
for tree in "$BEFORE" "$AFTER"; do
  name=$([ "$tree" = "$BEFORE" ] && echo before || echo after)
  cd "$tree"
  export PYTHONPATH=$tree PATH=$venv:$PATH
  echo "=== $name ($tree): serve_throughput"
  timeout 400 python bench/serve_throughput.py --legs bare,swell --rounds 2 2>/dev/null | tail -8
  cp bench/results/serve_throughput.json "$OUT/$name-serve_throughput.json"
  echo "=== $name: scale_from_zero"
  timeout 300 python bench/scale_from_zero.py --legs swell --reps 10 2>/dev/null | tail -6
  cp bench/results/scale_from_zero.json "$OUT/$name-scale_from_zero.json"
  echo "=== $name: idle_memory"
  timeout 200 python bench/idle_memory.py --legs swell --pool-sizes 0,1 2>/dev/null | tail -6
  cp bench/results/idle_memory.json "$OUT/$name-idle_memory.json"
  echo "=== $name: sim_speed"
  timeout 300 python bench/sim_speed.py --out "$OUT/$name-sim_speed.json" 2>/dev/null | tail -2
  git -C "$tree" checkout -q -- bench/results 2>/dev/null || true  # the scripts' own result files stay as committed
done
