#!/usr/bin/env bash
# Side-by-side benchmark of the node's whole path for a burst: one agent on
# loopback, `agora run --count N --wait -- true` (CLI → socket → host →
# auction → executor → supervisors → status events back), timed end to end.
# Two builds alternate round by round on the same machine, so that noise
# from other work falls on both; prints each round, the medians and the
# ratio NEW/OLD. Not a test: nothing here asserts on time.
#
# Usage: scripts/bench/node_burst.sh OLD_AGORA NEW_AGORA [ROUNDS] [COUNT]
#   e.g. scripts/bench/node_burst.sh /tmp/old/release/agora target/release/agora 5 500
set -euo pipefail
old="${1:?usage: node_burst.sh OLD_AGORA NEW_AGORA [ROUNDS] [COUNT]}"
new="${2:?usage: node_burst.sh OLD_AGORA NEW_AGORA [ROUNDS] [COUNT]}"
rounds="${3:-5}"
count="${4:-500}"
for b in "$old" "$new"; do
    [ -x "$b" ] || { echo "node_burst.sh: $b is not an executable agora binary" >&2; exit 2; }
done
work="$(mktemp -d -t agora-burst-XXXXXX)"
agent_pid=""
cleanup() {
    if [ -n "$agent_pid" ]; then kill "$agent_pid" 2>/dev/null || true; wait "$agent_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# one_round BIN: prints the seconds `run --wait` took.
one_round() {
    local bin="$1" dir="$work/node" port
    rm -rf "$dir" && mkdir -p "$dir"
    port="$(free_port)"
    (umask 077 && "$bin" keygen >"$work/key")
    "$bin" agent --data-dir "$dir" --listen "127.0.0.1:$port" --p2p-listen "127.0.0.1:$(free_port)" \
        --seeds "127.0.0.1:$port" --cluster-key-file "$work/key" --cpus 4 --mem 4096 \
        >"$dir/agent.log" 2>&1 &
    agent_pid=$!
    for _ in $(seq 1 300); do [ -S "$dir/agora.sock" ] && break; sleep 0.1; done
    [ -S "$dir/agora.sock" ] || { echo "node_burst.sh: the agent did not start; its log:" >&2; tail "$dir/agent.log" >&2; exit 1; }
    local t0 t1
    t0=$(date +%s.%N)
    "$bin" --socket "$dir/agora.sock" --timeout 30 run --count "$count" --cpus 0.05 --mem 8 --wait -- true \
        >/dev/null 2>"$work/run.err" || { echo "node_burst.sh: the run failed:" >&2; cat "$work/run.err" >&2; exit 1; }
    t1=$(date +%s.%N)
    kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; agent_pid=""
    echo "$t1 - $t0" | bc -l
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

: >"$work/old" ; : >"$work/new"
for r in $(seq 1 "$rounds"); do
    o=$(one_round "$old"); n=$(one_round "$new")
    echo "$o" >>"$work/old"; echo "$n" >>"$work/new"
    printf 'round %d: old %.2f s  new %.2f s\n' "$r" "$o" "$n"
done
mo=$(median <"$work/old"); mn=$(median <"$work/new")
printf 'median of %d rounds, %d tasks: old %.2f s, new %.2f s, new/old %.3f\n' \
    "$rounds" "$count" "$mo" "$mn" "$(echo "$mn / $mo" | bc -l)"
