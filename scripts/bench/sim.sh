#!/usr/bin/env bash
# Benchmark of agora-sim (issue 4): 10,000 nodes x 16 cores, `short` at load
# 0.8, --scheduler all (the auction on its own thread beside the baselines).
# Prints wall time, peak RSS, events/s, each scheduler's own wall time and
# speed against real time, and the headline results from report.json.
#
# Usage: scripts/bench/sim.sh [SIMULATED_SECONDS]   (default 300, the target)
#   NODES=10000 CELL=500 SEED=1 OUT=/tmp/agora-sim-bench scripts/bench/sim.sh 30
# Not a test: nothing here asserts on time.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION="${1:-300}"
NODES="${NODES:-10000}"
CELL="${CELL:-500}"
SEED="${SEED:-1}"
OUT="${OUT:-/tmp/agora-sim-bench}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release -p agora-sim
BIN="$CARGO_TARGET_DIR/release/agora-sim"
mkdir -p "$OUT"

run() { # name, extra args...
  local name="$1"; shift
  echo "== $name: $NODES nodes, $DURATION simulated s"
  /usr/bin/time -v "$BIN" --nodes "$NODES" --cores-per-node 16 --load 0.8 --workload short \
    --duration "$DURATION" --cell-size "$CELL" --seed "$SEED" --quiet --out "$OUT/$name" "$@" \
    >"$OUT/$name.txt" 2>"$OUT/$name.time" || { cat "$OUT/$name.time"; return 1; }
  cat "$OUT/$name.txt"
  grep -E "Elapsed \(wall|Maximum resident" "$OUT/$name.time"
  python3 - "$OUT/$name/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
run = r["run"]
print(f"events/s: {run['events'] / max(run['wall_s'], 1e-9):,.0f}; simulated/wall: {run['simulated_s'] / max(run['wall_s'], 1e-9):.2f}x")
for name, s in r["schedulers"].items():
    print(f"  {name}: {s['wall_s']:.1f} s wall, {run['simulated_s'] / max(s['wall_s'], 1e-9):.3f}x real time")
a = r["schedulers"].get("auction")
if a:
    print(f"auction vs central: median {a['response_time_ratio_to_central']['p50']:.3f}x, p99 {a['response_time_ratio_to_central']['p99']:.3f}x, "
          f"overcommit {a['overcommit_violations']}, fairness gap {a['fairness_max_share_gap']:.4f}")
g = r.get("gossip")
if g:
    print(f"gossip: {g['bytes_per_node_per_s']:.0f} B/node/s, max message {g['max_message_bytes']} B, oversize {g['oversize_messages']}")
PY
}

run all --scheduler all
