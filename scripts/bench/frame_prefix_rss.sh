#!/usr/bin/env bash
# Side-by-side memory benchmark of a framing attack: one agent, then N
# socket clients that each send the handshake and a frame prefix announcing
# 1 MiB, then one byte, and wait. Prints the agent's RSS before, while they
# wait, and after they close, for two builds alternated round by round, and
# the medians. (Issue 12: the old reader allocated the announced frame on
# the word of its prefix.) Not a test: nothing here asserts.
#
# Usage: scripts/bench/frame_prefix_rss.sh OLD_AGORA NEW_AGORA [ROUNDS] [CLIENTS]
set -euo pipefail
old="${1:?usage: frame_prefix_rss.sh OLD_AGORA NEW_AGORA [ROUNDS] [CLIENTS]}"
new="${2:?usage: frame_prefix_rss.sh OLD_AGORA NEW_AGORA [ROUNDS] [CLIENTS]}"
rounds="${3:-3}"
clients="${4:-500}"
command -v python3 >/dev/null || { echo "frame_prefix_rss.sh: needs python3" >&2; exit 2; }
for b in "$old" "$new"; do
    [ -x "$b" ] || { echo "frame_prefix_rss.sh: $b is not an executable agora binary" >&2; exit 2; }
done
if [ "$(ulimit -n)" -lt $((clients + 64)) ]; then
    ulimit -n $((clients + 64)) 2>/dev/null || { echo "frame_prefix_rss.sh: raise the open-files limit to $((clients + 64))" >&2; exit 2; }
fi
work="$(mktemp -d -t agora-prefix-XXXXXX)"
agent_pid=""
cleanup() {
    if [ -n "$agent_pid" ]; then kill "$agent_pid" 2>/dev/null || true; wait "$agent_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/attack.py" <<'EOF'
import socket, struct, sys, time
path, pid, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
before = rss()
conns = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    hs = b"agora/1 json"
    s.sendall(struct.pack(">I", len(hs)) + hs + struct.pack(">I", 1 << 20) + b"{")
    conns.append(s)
time.sleep(3)
during = rss()
for s in conns:
    s.close()
time.sleep(2)
print(before, during, rss())
EOF

# One round: prints "BEFORE DURING AFTER" in MB.
round() {
    local bin="$1" dir="$work/run"
    rm -rf "$dir"; mkdir -p "$dir"
    "$bin" keygen > "$dir/key"; chmod 600 "$dir/key"
    local port
    port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$bin" agent --data-dir "$dir/n1" --listen "127.0.0.1:$port" --cluster-key-file "$dir/key" \
        --node-id m1 --no-cgroups > "$dir/log" 2>&1 &
    agent_pid=$!
    for _ in $(seq 100); do [ -S "$dir/n1/agora.sock" ] && break; sleep 0.1; done
    [ -S "$dir/n1/agora.sock" ] || { echo "the agent did not start; its log:" >&2; cat "$dir/log" >&2; exit 1; }
    sleep 1
    python3 "$work/attack.py" "$dir/n1/agora.sock" "$agent_pid" "$clients"
    kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; agent_pid=""
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: > "$work/old"; : > "$work/new"
echo "round build before_MB during_MB after_MB ($clients clients announcing 1 MiB)"
for r in $(seq "$rounds"); do
    o=$(round "$old"); echo "$r old $o"; echo "$o" >> "$work/old"
    n=$(round "$new"); echo "$r new $n"; echo "$n" >> "$work/new"
done
od=$(awk '{print $2}' "$work/old" | median)
nd=$(awk '{print $2}' "$work/new" | median)
echo "median RSS during the attack: old ${od} MB, new ${nd} MB, new/old $(awk -v a="$nd" -v b="$od" 'BEGIN {printf "%.3f", a/b}')"
