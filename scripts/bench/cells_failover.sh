#!/usr/bin/env bash
# Gateway failover in a cluster of cells (issue 13, "Gateway death"):
# starts CELLS cells of SIZE agents on loopback with one gateway each
# (`--gateways 1`), waits until every node knows every cell, SIGKILLs cell
# c1's gateway, and times (from the kill) until
#   - a survivor of c1 holds the gateway role (`agora cells --json`),
#   - every node of every other cell sees c1 with its new gateway and
#     SIZE-1 members alive (the federation view recovered).
# Repeats ROUNDS times on fresh clusters and prints each round and the
# medians. Not a test: nothing here asserts on time.
#
# Usage: scripts/bench/cells_failover.sh [--agora BIN] [--rounds R]
#                                        [--cells C] [--size S] [--interval MS]
#   --agora BIN     the binary [default: target/release/agora, else target/debug/agora]
#   --rounds R      [default: 3]
#   --cells C       [default: 3]
#   --size S        agents per cell [default: 4]
#   --interval MS   --gossip-interval-ms of every agent [default: the agent's, 500]
#
# Needs python3 (ports, JSON). Every process it starts is stopped on exit.
set -euo pipefail
agora="" rounds=3 ncells=3 size=4 interval=""
while [ $# -gt 0 ]; do
    case "$1" in
        --agora) agora="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --cells) ncells="$2"; shift 2 ;;
        --size) size="$2"; shift 2 ;;
        --interval) interval="$2"; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "cells_failover.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
here="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -z "$agora" ]; then
    agora="$here/target/release/agora"
    [ -x "$agora" ] || agora="$here/target/debug/agora"
fi
[ -x "$agora" ] || { echo "cells_failover.sh: no agora binary at $agora (cargo build --release)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "cells_failover.sh: needs python3" >&2; exit 2; }
[ "$size" -ge 2 ] || { echo "cells_failover.sh: --size must be 2 or more (a survivor takes the role)" >&2; exit 2; }

work="$(mktemp -d -t agora-failover-XXXXXX)"
pids=()
stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
now() { date +%s.%N; }
n=$((ncells * size))

# cells NODE: the node's `agora cells --json` (empty when it does not answer).
cells() { "$agora" --socket "$work/r/$1/agora.sock" --timeout 5 cells --json 2>/dev/null || true; }

round() {
    rm -rf "$work/r"; mkdir -p "$work/r"
    (umask 077 && "$agora" keygen >"$work/r/key")
    python3 - "$n" >"$work/r/ports" <<'EOF'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    row = []
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind); s.bind(("127.0.0.1", 0)); held.append(s)
        row.append(str(s.getsockname()[1]))
    print(" ".join(row))
EOF
    local fed seeds="" i=0
    fed=$(awk '{printf "%s127.0.0.1:%s", (NR > 1 ? "," : ""), $3}' "$work/r/ports")
    while read -r g p f; do
        local c=$((i / size + 1)) k=$((i % size + 1)) id
        id="c${c}n${k}"
        args=(agent --data-dir "$work/r/$id" --node-id "$id" --listen "127.0.0.1:$g"
            --p2p-listen "127.0.0.1:$p" --cluster-key-file "$work/r/key" --cpus 1 --mem 256
            --no-cgroups --cell "c$c" --gateways 1 --federation-listen "127.0.0.1:$f"
            --federation-seeds "$fed")
        [ -n "$interval" ] && args+=(--gossip-interval-ms "$interval")
        [ -n "$seeds" ] && args+=(--seeds "$seeds")
        "$agora" "${args[@]}" >"$work/r/$id.log" 2>&1 &
        pids+=($!)
        [ "$k" = 1 ] && seeds="${seeds:+$seeds,}127.0.0.1:$g"
        i=$((i + 1))
    done <"$work/r/ports"
    # Formed: every node knows every cell with one gateway and SIZE alive.
    local t0 formed=""
    t0=$(now)
    while [ -z "$formed" ]; do
        local ok=0
        for c in $(seq 1 "$ncells"); do for k in $(seq 1 "$size"); do
            cells "c${c}n${k}" | python3 -c '
import json, sys
n, size = int(sys.argv[1]), int(sys.argv[2])
try:
    v = json.load(sys.stdin)
except Exception:
    sys.exit(1)
rows = v["cells"]
sys.exit(0 if len(rows) == n and all(r["alive"] == size and len(r["gateways"]) == 1 for r in rows) else 1)' "$ncells" "$size" && ok=$((ok + 1))
        done; done
        [ "$ok" = "$n" ] && formed=$(echo "$(now) - $t0" | bc -l)
        if [ "$(echo "$(now) - $t0 > 120" | bc -l)" = 1 ]; then
            echo "cells_failover.sh: the cells did not form in 120 s ($ok of $n nodes)" >&2; return 1
        fi
        sleep 0.1
    done
    # The victim: c1's gateway, as c1n1 sees it.
    local victim
    victim=$(cells c1n1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["cells"][0]["gateways"][0])')
    local vi=$(( ${victim#c1n} - 1 ))
    local t_kill
    t_kill=$(now)
    kill -KILL "${pids[$vi]}"
    local role="" view=""
    while [ -z "$role" ] || [ -z "$view" ]; do
        if [ -z "$role" ]; then
            for k in $(seq 1 "$size"); do
                [ "c1n$k" = "$victim" ] && continue
                if cells "c1n$k" | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["gateway"] else 1)'; then
                    role=$(echo "$(now) - $t_kill" | bc -l); break
                fi
            done
        fi
        if [ -z "$view" ]; then
            local seen=0
            for c in $(seq 2 "$ncells"); do for k in $(seq 1 "$size"); do
                cells "c${c}n${k}" | python3 -c '
import json, sys
victim, size = sys.argv[1], int(sys.argv[2])
v = json.load(sys.stdin)
r = [r for r in v["cells"] if r["name"] == "c1"]
sys.exit(0 if r and r[0]["gateways"] and r[0]["gateways"][0] != victim and r[0]["alive"] == size - 1 else 1)' "$victim" "$size" && seen=$((seen + 1))
            done; done
            [ "$seen" = $(( (ncells - 1) * size )) ] && view=$(echo "$(now) - $t_kill" | bc -l)
        fi
        if [ "$(echo "$(now) - $t_kill > 120" | bc -l)" = 1 ]; then
            echo "cells_failover.sh: no recovery in 120 s (role: ${role:-no}, view: ${view:-no})" >&2; return 1
        fi
        sleep 0.1
    done
    printf '%s %s %s\n' "$formed" "$role" "$view" >>"$work/results"
    printf 'round: formed %.2f s; after the kill of %s: new gateway %.2f s, every other cell sees it %.2f s\n' \
        "$formed" "$victim" "$role" "$view"
    stop_all
}

echo "$ncells cells of $size agents, one gateway each, binary $agora"
for r in $(seq 1 "$rounds"); do round; done
python3 - "$work/results" <<'EOF'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
med = [statistics.median(c) for c in zip(*rows)]
print(f"medians over {len(rows)} rounds: formed {med[0]:.2f} s, new gateway {med[1]:.2f} s, "
      f"federation view recovered {med[2]:.2f} s (from the SIGKILL)")
EOF
