#!/usr/bin/env bash
# local-cluster.sh: run a small Agora cluster on this machine, on loopback.
#
# Starts N `agora agent` processes, each with its own temporary data dir and
# free ports, all sharing a fresh cluster key made with `agora keygen`. It
# prints the AGORA_SOCKET to export in another terminal, then waits; Ctrl-C
# (or any exit) stops every agent it started and removes the temporary
# directory (unless --keep).
#
#   scripts/local-cluster.sh                  # 3 nodes, 2 cpus and 2 GiB each
#   scripts/local-cluster.sh -n 5 --cpus 1 --mem 1024
#   AGORA_BIN=target/debug/agora scripts/local-cluster.sh
#
# Ports: each node's gossip (UDP) listens on 127.0.0.1:PORT (--listen) and
# its libp2p (TCP) on PORT+1, the agent's default; the framework socket is
# DATA_DIR/agora.sock.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: local-cluster.sh [-n NODES] [--cpus N] [--mem MIB] [--bin PATH] [--dir DIR] [--keep]

  -n, --nodes NODES   number of agents to start (default 3)
  --cpus N            cpus each agent advertises (default 2)
  --mem MIB           memory each agent advertises, in MiB (default 2048)
  --bin PATH          the agora binary (default: $AGORA_BIN, then target/release/agora,
                      target/debug/agora, then agora on PATH)
  --dir DIR           parent of the data dirs (default: a new temporary directory)
  --keep              keep the data dirs (logs, sandboxes) after stopping
EOF
}

nodes=3
cpus=2
mem=2048
bin="${AGORA_BIN:-}"
dir=""
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        -n|--nodes) nodes="${2:?-n needs a number}"; shift 2 ;;
        --cpus) cpus="${2:?--cpus needs a number}"; shift 2 ;;
        --mem) mem="${2:?--mem needs a number of MiB}"; shift 2 ;;
        --bin) bin="${2:?--bin needs a path}"; shift 2 ;;
        --dir) dir="${2:?--dir needs a path}"; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "local-cluster.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
case "$nodes" in
    ''|*[!0-9]*|0) echo "local-cluster.sh: -n must be a positive number, got '$nodes'" >&2; exit 2 ;;
esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "$bin" ]; then
    for candidate in "$repo/target/release/agora" "$repo/target/debug/agora"; do
        if [ -x "$candidate" ]; then bin="$candidate"; break; fi
    done
fi
if [ -z "$bin" ]; then
    bin="$(command -v agora || true)"
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "local-cluster.sh: no agora binary found; build it with 'cargo build --release -p agora-node'" \
         "or pass --bin PATH (or set AGORA_BIN)" >&2
    exit 1
fi

if [ -z "$dir" ]; then
    dir="$(mktemp -d "${TMPDIR:-/tmp}/agora-cluster.XXXXXX")"
    made_dir=1
else
    mkdir -p "$dir"
    made_dir=0
fi

pids=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ ${#pids[@]} -gt 0 ]; then
        echo "stopping ${#pids[@]} agents..." >&2
        for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
        # agents leave the cluster gracefully on TERM; give them 10 s, then KILL
        for _ in $(seq 1 100); do
            local alive=0
            for pid in "${pids[@]}"; do
                if kill -0 "$pid" 2>/dev/null; then alive=1; fi
            done
            [ "$alive" = 0 ] && break
            sleep 0.1
        done
        for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
        wait 2>/dev/null || true
    fi
    if [ "$keep" = 1 ] || [ "$made_dir" = 0 ]; then
        echo "data dirs and logs kept in $dir" >&2
    else
        rm -rf "$dir"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port P such that P and P+1 are free on 127.0.0.1 for both UDP and TCP.
port_pair_free() {
    local p=$1
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$p" <<'EOF' 2>/dev/null
import socket, sys
p = int(sys.argv[1])
held = []
try:
    for port in (p, p + 1):
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(socket.AF_INET, kind)
            held.append(s)
            s.bind(("127.0.0.1", port))
except OSError:
    sys.exit(1)
finally:
    for s in held:
        s.close()
EOF
    elif command -v ss >/dev/null 2>&1; then
        ! ss -Hlntu | awk '{print $5}' | grep -Eq "[:.]($p|$((p + 1)))\$"
    else
        # nothing to probe with: trust the random choice
        true
    fi
}

used=" "
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
        p=$(( p - p % 2 ))
        case "$used" in *" $p "*|*" $((p + 1)) "*) continue ;; esac
        if port_pair_free "$p"; then
            used="$used$p $((p + 1)) "
            echo "$p"
            return 0
        fi
    done
    echo "local-cluster.sh: could not find free ports on 127.0.0.1" >&2
    return 1
}

key="$dir/cluster.key"
(umask 077 && "$bin" keygen >"$key") || {
    echo "local-cluster.sh: '$bin keygen' failed" >&2
    exit 1
}

addrs=()
for i in $(seq 1 "$nodes"); do
    addrs+=("127.0.0.1:$(free_port)")
done

for i in $(seq 1 "$nodes"); do
    node_dir="$dir/node$i"
    mkdir -p "$node_dir"
    listen="${addrs[$((i - 1))]}"
    seeds=""
    for a in "${addrs[@]}"; do
        if [ "$a" != "$listen" ] || [ "$nodes" = 1 ]; then seeds="${seeds:+$seeds,}$a"; fi
    done
    "$bin" agent \
        --data-dir "$node_dir" \
        --listen "$listen" \
        --seeds "$seeds" \
        --cluster-key-file "$key" \
        --cpus "$cpus" \
        --mem "$mem" \
        >"$node_dir/agent.log" 2>&1 &
    pids+=("$!")
    echo "node$i: pid $!, gossip $listen (udp), p2p port $(( ${listen##*:} + 1 )) (tcp), log $node_dir/agent.log" >&2
done

# Ready when every agent's framework socket exists (deadline 60 s).
deadline=$(( SECONDS + 60 ))
for i in $(seq 1 "$nodes"); do
    sock="$dir/node$i/agora.sock"
    until [ -S "$sock" ]; do
        if ! kill -0 "${pids[$((i - 1))]}" 2>/dev/null; then
            echo "local-cluster.sh: node$i exited; the end of its log:" >&2
            tail -n 20 "$dir/node$i/agent.log" >&2 || true
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "local-cluster.sh: node$i has no socket at $sock after 60 s; see $dir/node$i/agent.log" >&2
            exit 1
        fi
        sleep 0.2
    done
done

cat <<EOF

Agora: $nodes nodes on 127.0.0.1 ($cpus cpus, $mem MiB each). In another terminal:

    export AGORA_SOCKET=$dir/node1/agora.sock
    $bin nodes
    $bin run --count 10 --cpus 0.5 --wait -- sh -c 'echo hello from \$AGORA_NODE_ID'
    $bin ps

Sockets of the other nodes: $dir/nodeN/agora.sock. Ctrl-C stops the cluster.
EOF

# Wait; stop everything if any agent dies.
while true; do
    for i in $(seq 1 "$nodes"); do
        if ! kill -0 "${pids[$((i - 1))]}" 2>/dev/null; then
            echo "local-cluster.sh: node$i (pid ${pids[$((i - 1))]}) exited; the end of its log:" >&2
            tail -n 20 "$dir/node$i/agent.log" >&2 || true
            exit 1
        fi
    done
    sleep 1
done
