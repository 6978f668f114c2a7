#!/usr/bin/env bash
# Benchmark of agora-sim (issue 14): 10,000 nodes x 4 cores, `short` at load
# 0.9, cells of 500, --scheduler all, 300 simulated seconds. The target: at
# most 10 minutes of wall time and 4 GiB of peak RSS on a 2-core machine.
# The baselines run first, side by side; then the auction runs its cells on
# every core (agora-sim --threads, default one per core).
#
# Prints wall time, peak RSS, CPU time, events/s, each scheduler's own wall
# time and speed against real time, the headline results from report.json,
# the machine's load before and after (wall times are only as good as the
# machine is quiet), and how the run compares with the target.
#
# Usage: scripts/bench/sim.sh [--stress] [SIMULATED_SECONDS]   (default 300)
#   --stress   the earlier benchmark instead: 16 cores per node at load 0.8
#              (232,700 tasks per simulated second at 10,000 nodes; it took
#              35-39 minutes for 300 s on one core for the auction)
#   NODES=1000 SEED=2 THREADS=2 OUT=DIR scripts/bench/sim.sh 30
#   (also CELL, cells of that many nodes, default 500)
# Needs: cargo, GNU time (/usr/bin/time, Debian package `time`) and python3
# (Debian package `python3`); it says which is missing.
# Not a test: nothing here asserts on time.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
CORES=4
LOAD=0.9
MODE="benchmark (issue 14): 4 cores per node, load 0.9"
DURATION=300
for arg in "$@"; do
  case "$arg" in
    --stress) CORES=16; LOAD=0.8; MODE="stress (issue 4): 16 cores per node, load 0.8" ;;
    -h|--help) usage; exit 0 ;;
    *[!0-9.]*|'') echo "sim.sh: unknown argument '$arg' (want --stress or a number of simulated seconds; see --help)" >&2; exit 1 ;;
    *) DURATION="$arg" ;;
  esac
done
NODES="${NODES:-10000}"
CELL="${CELL:-500}"
SEED="${SEED:-1}"
THREADS="${THREADS:-0}"
OUT="${OUT:-${TMPDIR:-/tmp}/agora-sim-bench}"

missing=0
need() { # command, what for, Debian package
  if ! command -v "$1" >/dev/null 2>&1 && [ ! -x "$1" ]; then
    echo "sim.sh: $1 is missing; it is needed $2. Install it with: apt-get install $3" >&2
    missing=1
  fi
}
need cargo "to build agora-sim" cargo
need python3 "to read report.json" python3
need /usr/bin/time "to measure wall time and peak memory" time
if [ -x /usr/bin/time ] && ! /usr/bin/time --version 2>&1 | grep -q GNU; then
  echo "sim.sh: /usr/bin/time is not GNU time (no -v); install it with: apt-get install time" >&2
  missing=1
fi
[ "$missing" = 0 ] || exit 1

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release -p agora-sim
BIN="$CARGO_TARGET_DIR/release/agora-sim"
mkdir -p "$OUT"

run() { # name, extra args...
  local name="$1"; shift
  echo "== $MODE; $NODES nodes, cells of $CELL, seed $SEED, $DURATION simulated s"
  echo "   machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  /usr/bin/time -v "$BIN" --nodes "$NODES" --cores-per-node "$CORES" --load "$LOAD" --workload short \
    --duration "$DURATION" --cell-size "$CELL" --seed "$SEED" --threads "$THREADS" --quiet \
    --out "$OUT/$name" "$@" >"$OUT/$name.txt" 2>"$OUT/$name.time" || { cat "$OUT/$name.time"; return 1; }
  echo "   load after: $(cut -d' ' -f1-3 /proc/loadavg)"
  cat "$OUT/$name.txt"
  grep -E "Elapsed \(wall|Maximum resident|User time|System time" "$OUT/$name.time"
  python3 - "$OUT/$name/report.json" "$OUT/$name.time" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[1]))
run = r["run"]
print(f"events/s: {run['events'] / max(run['wall_s'], 1e-9):,.0f}; simulated/wall: {run['simulated_s'] / max(run['wall_s'], 1e-9):.3f}x")
for name, s in r["schedulers"].items():
    print(f"  {name}: {s['wall_s']:.1f} s wall, {run['simulated_s'] / max(s['wall_s'], 1e-9):.3f}x real time")
a = r["schedulers"].get("auction")
if a:
    print(f"auction vs central: median {a['response_time_ratio_to_central']['p50']:.3f}x, p99 {a['response_time_ratio_to_central']['p99']:.3f}x, "
          f"overcommit {a['overcommit_violations']}, fairness gap {a['fairness_max_share_gap']:.4f}")
g = r.get("gossip")
if g:
    print(f"gossip: {g['bytes_per_node_per_s'] / 1000:.1f} KB/node/s, max message {g['max_message_bytes']} B, oversize {g['oversize_messages']}")
t = open(sys.argv[2]).read()
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) * 1024
wall = run["wall_s"]
if run["simulated_s"] >= 300 and run["nodes"] >= 10000:
    ok = wall <= 600 and rss <= 4 << 30
    print(f"target (<= 600 s, <= 4 GiB): {wall:.0f} s, {rss / (1 << 30):.2f} GiB: {'met' if ok else 'missed'}")
else:
    print(f"wall {wall:.0f} s, peak {rss / (1 << 30):.2f} GiB (the target is for 10,000 nodes over 300 s)")
PY
}

run all --scheduler all
