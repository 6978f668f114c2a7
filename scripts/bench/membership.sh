#!/usr/bin/env bash
# Membership speed, Agora against HashiCorp Serf, side by side on loopback.
#
# For each N, RUNS times (alternating Agora and Serf, so that noise from
# other work on the machine falls on both), it:
#   1. starts one agent (the seed) and waits until it is up;
#   2. launches N-2 more at once, each told the seed, and times FORM: from
#      that launch until each of these N-1 has seen the others alive (this
#      includes starting N-2 processes on a shared machine);
#   3. launches the Nth alone, with the seed, and times JOIN: from its
#      launch until every member has seen it alive and it has seen every
#      member alive;
#   4. three seconds later SIGKILLs n2 (not the seed) and times DETECT: from
#      the kill until every survivor has seen it dead (Agora) or failed
#      (Serf);
#   5. counts FALSE verdicts: any other member declared dead/failed by
#      anyone during the run.
# Then prints the medians. Not a test: nothing here asserts on time.
#
# How it observes: every Agora agent logs "node is alive" / "node declared
# dead" with a microsecond timestamp (the moment its core learns it), so
# Agora is not polled. Serf's event handlers are coalesced by the agent
# (about a second late), so a small watcher polls every Serf agent's
# `members` over its RPC port instead (one sweep over all agents takes a
# few milliseconds) and writes the same kind of event lines.
#
# Usage: scripts/bench/membership.sh [N...]          (default: 16 32)
# Environment:
#   AGORA_BIN      agora binary (default target/release/agora, then target/debug/agora)
#   SERF_BIN       serf binary (default: serf on PATH; Serf is skipped when absent,
#                  `apt-get install -y serf` installs it on Debian/Ubuntu)
#   RUNS           runs per system and N (default 3)
#   AGORA_ARGS     extra `agora agent` flags, e.g. "--gossip-interval-ms 500"
#   ONLY           "agora" or "serf" to run one system
#   IDLE_SECS      after the join of the first run, keep the cluster idle this
#                  long and report false death verdicts (e.g. 600 for the
#                  10-minute run); default 0 (skipped)
#   COST_SECS      after the join of each run, measure for this many seconds
#                  each agent's CPU (from /proc) and, for Agora, gossip bytes
#                  sent (agora_gossip_sent_bytes_total from /metrics: the
#                  agents then also serve HTTP on loopback); default 0 (skipped)
#   KEEP           1: keep the agents' directories and logs (path printed at exit)
#   LOAD           1: during IDLE_SECS, keep both cores busy with running tasks
#                  (busy loops submitted with `agora run`) and report verdicts
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(16 32)
for n in "${sizes[@]}"; do
    case "$n" in ''|*[!0-9]*) echo "membership.sh: N must be a number >= 3, got '$n'" >&2; exit 2 ;; esac
    [ "$n" -ge 3 ] || { echo "membership.sh: N must be >= 3 (one seed, one victim, one survivor), got $n" >&2; exit 2; }
done
runs="${RUNS:-3}"
only="${ONLY:-}"
idle="${IDLE_SECS:-0}"
load="${LOAD:-0}"
cost="${COST_SECS:-0}"
agora="${AGORA_BIN:-}"
if [ -z "$agora" ]; then
    for c in "$repo/target/release/agora" "$repo/target/debug/agora"; do
        [ -x "$c" ] && { agora="$c"; break; }
    done
fi
if [ "$only" != serf ]; then
    [ -n "$agora" ] && [ -x "$agora" ] || {
        echo "membership.sh: no agora binary; build one (cargo build --release -p agora-node) or set AGORA_BIN" >&2; exit 2; }
fi
serf="${SERF_BIN:-$(command -v serf || true)}"
if [ "$only" != agora ] && { [ -z "$serf" ] || [ ! -x "$serf" ]; }; then
    echo "membership.sh: serf not found, running Agora only (apt-get install -y serf, or set SERF_BIN)" >&2
    serf=""
fi
command -v python3 >/dev/null || { echo "membership.sh: needs python3 (free ports, log timestamps)" >&2; exit 2; }
ulimit -n 8192 2>/dev/null || true

work="$(mktemp -d -t agora-membership-XXXXXX)"
pids=()
stop_all() {
    local p
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
    # Task supervisors outlive their agent; any still running under this
    # run's directory (the LOAD tasks) are stopped by process id.
    # TERM first: a supervisor then stops its task's process group.
    local left
    left=$(grep -l -s -F "$work/" /proc/[0-9]*/cmdline | cut -d/ -f3 | grep -vx "$$" || true)
    if [ -n "$left" ]; then
        for p in $left; do kill -TERM "$p" 2>/dev/null || true; done
        sleep 2
        for p in $left; do kill -9 "$p" 2>/dev/null || true; done
    fi
}
cleanup() {
    stop_all
    if [ "${KEEP:-0}" = 1 ]; then echo "membership.sh: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_ports K: K distinct free loopback ports (UDP and TCP both free).
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
held, out = [], []
while len(out) < int(sys.argv[1]):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
    p = u.getsockname()[1]
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        t.bind(("127.0.0.1", p))
    except OSError:
        u.close(); continue
    held += [u, t]; out.append(p)
print(" ".join(map(str, out)))
EOF
}

now() { date +%s.%N; }

# analyse SYSTEM DIR N T_FORM T_JOIN VICTIM T_KILL: prints
# "form join detect false" (seconds; "-" when not reached, or not asked:
# pass "-" for a time not yet taken).
#   form:   from T_FORM until each of n1..n(N-1) has seen the others alive;
#   join:   from T_JOIN until every member has seen nN alive and nN has
#           seen every member alive;
#   detect: from T_KILL until every survivor has seen VICTIM dead;
#   false:  death verdicts about any other member, or about VICTIM before
#           T_KILL.
# Agora: DIR/nK/agent.log; Serf: DIR/nK/events.
analyse() {
    python3 - "$@" <<'EOF'
import sys, os, re, datetime
system, d, n, t_form, t_join, victim, t_kill = sys.argv[1:8]
n = int(n)
num = lambda x: float(x) if x != "-" else None
t_form, t_join, t_kill = num(t_form), num(t_join), num(t_kill)
names = [f"n{i}" for i in range(1, n + 1)]
joiner = names[-1]
ts_re = re.compile(r"^(?:\x1b\[[0-9;]*m)*(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z")
def events(name):
    """(time, kind, peer) for one observer; kind is 'alive' or 'dead'."""
    out = []
    if system == "agora":
        try: lines = open(os.path.join(d, name, "agent.log"), errors="replace")
        except OSError: return out
        for line in lines:
            kind = "alive" if "node is alive" in line else "dead" if "node declared dead" in line else None
            if not kind: continue
            m = ts_re.match(line); p = re.search(r"node=(\S+)", re.sub(r"\x1b\[[0-9;]*m", "", line))
            if not m or not p: continue
            t = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc).timestamp()
            out.append((t, kind, p.group(1)))
    else:
        try: lines = open(os.path.join(d, name, "events"), errors="replace")
        except OSError: return out
        for line in lines:
            f = line.split()
            if len(f) < 3: continue
            kind = {"member-join": "alive", "member-failed": "dead"}.get(f[1])
            if kind: out.append((float(f[0]), kind, f[2]))
    return out
def latest(times):
    return None if any(t is None for t in times) or not times else max(times)
ev = {me: events(me) for me in names}
first = {me: {} for me in names}
false = 0
for me in names:
    for t, kind, peer in ev[me]:
        if kind == "alive" and peer != me and peer not in first[me]: first[me][peer] = t
        if kind == "dead" and (peer != victim or t_kill is None or t < t_kill): false += 1
form = latest([first[o].get(p) for o in names[:-1] for p in names[:-1] if p != o]) if t_form is not None else None
join = None
if t_join is not None:
    join = latest([first[o].get(joiner) for o in names[:-1]] + [first[joiner].get(p) for p in names[:-1]])
detect = None
if t_kill is not None:
    detect = latest([min([t for t, k, p in ev[o] if k == "dead" and p == victim and t >= t_kill], default=None)
                     if True else None for o in names if o != victim])
f = lambda at, since: f"{at - since:.3f}" if at is not None else "-"
print(f(form, t_form), f(join, t_join), f(detect, t_kill), false)
EOF
}

# wait_for SYSTEM DIR N FIELD SECS: waits until analyse's FIELD (1 form,
# 2 join, 3 detect; with the times in T_FORM, T_JOIN, T_KILL) is reached or
# SECS pass.
wait_for() {
    local deadline r
    deadline=$(( $(date +%s) + $5 ))
    while :; do
        r=$(analyse "$1" "$2" "$3" "${T_FORM:--}" "${T_JOIN:--}" "$VICTIM" "${T_KILL:--}" | cut -d' ' -f"$4")
        [ "$r" != "-" ] && return 0
        [ "$(date +%s)" -ge "$deadline" ] && return 1
        sleep 0.2
    done
}

agora_start() { # DIR NAME GOSSIP_PORT P2P_PORT SEED
    local dir="$1/$2"
    mkdir -p "$dir"
    # shellcheck disable=SC2086
    "$agora" agent --data-dir "$dir" --node-id "$2" --listen "127.0.0.1:$3" --p2p-listen "127.0.0.1:$4" \
        --seeds "$5" --cluster-key-file "$1/key" --cpus 1 --mem 256 --no-cgroups ${AGORA_ARGS:-} \
        ${6:+--http "127.0.0.1:$6" --http-public-read} \
        >"$dir/agent.log" 2>&1 &
    pids+=($!)
}

serf_start() { # DIR NAME BIND_PORT RPC_PORT [JOIN]
    local dir="$1/$2"
    mkdir -p "$dir"
    "$serf" agent -node "$2" -bind "127.0.0.1:$3" -rpc-addr "127.0.0.1:$4" -log-level warn \
        ${5:+-join "$5"} >"$dir/agent.log" 2>&1 &
    pids+=($!)
}

# launch SYSTEM DIR I SEED: starts agent nI.
launch() {
    if [ "$1" = agora ]; then
        agora_start "$2" "n$3" "${ports[$((2 * $3 - 2))]}" "${ports[$((2 * $3 - 1))]}" "$4" \
            "${http_ports[$(($3 - 1))]:-}"
    else
        serf_start "$2" "n$3" "${ports[$((2 * $3 - 2))]}" "${ports[$((2 * $3 - 1))]}" "$4"
    fi
}

# one_run SYSTEM N RUN: writes "form join detect false [idle_false]".
one_run() {
    local system="$1" n="$2" d="$work/$1-$2-$3" i seed res
    mkdir -p "$d"
    read -r -a ports <<<"$(free_ports $((2 * n)))"
    http_ports=()
    [ "$cost" -gt 0 ] && read -r -a http_ports <<<"$(free_ports "$n")"
    T_FORM="" T_JOIN="" T_KILL="" VICTIM=n2
    seed="127.0.0.1:${ports[0]}"
    if [ "$system" = agora ]; then
        (umask 077 && "$agora" keygen >"$d/key")
        agora_start "$d" n1 "${ports[0]}" "${ports[1]}" "$seed" "${http_ports[0]:-}"
        for _ in $(seq 1 300); do [ -S "$d/n1/agora.sock" ] && break; sleep 0.05; done
        [ -S "$d/n1/agora.sock" ] || { echo "membership.sh: the seed agent did not start:" >&2; tail "$d/n1/agent.log" >&2; exit 1; }
    else
        serf_start "$d" n1 "${ports[0]}" "${ports[1]}"
        for _ in $(seq 1 300); do "$serf" members -rpc-addr "127.0.0.1:${ports[1]}" >/dev/null 2>&1 && break; sleep 0.05; done
        local rpc=()
        for i in $(seq 1 "$n"); do mkdir -p "$d/n$i"; rpc+=("n$i=${ports[$((2 * i - 1))]}"); done
        python3 "$work/serfwatch.py" "$d" "${rpc[@]}" 2>"$d/watch.err" &
        watcher_pid=$!
    fi
    # Form: N-1 agents, N-2 of them launched at once.
    T_FORM=$(now)
    for i in $(seq 2 $((n - 1))); do launch "$system" "$d" "$i" "$seed"; done
    wait_for "$system" "$d" "$n" 1 60 ||
        echo "membership.sh: $system $n: the first $((n - 1)) did not all see each other within 60 s" >&2
    sleep 2
    # Join: the Nth alone.
    T_JOIN=$(now)
    launch "$system" "$d" "$n" "$seed"
    wait_for "$system" "$d" "$n" 2 60 ||
        echo "membership.sh: $system $n: n$n and the members did not all see each other within 60 s" >&2
    local cost_out=""
    if [ "$cost" -gt 0 ]; then cost_out=$(cost_phase "$system" "$n"); fi
    local idle_false=""
    if [ "$idle" -gt 0 ] && [ "$3" = 1 ]; then
        idle_false=$(idle_phase "$system" "$d" "$n")
    fi
    sleep 3 # let the detector gather heartbeat samples, as a running cluster has
    T_KILL=$(now)
    kill -9 "${pids[1]}" 2>/dev/null || echo "membership.sh: $system $n: the victim had already exited; its log: $d/n2/agent.log" >&2
    wait "${pids[1]}" 2>/dev/null || true
    wait_for "$system" "$d" "$n" 3 60 ||
        echo "membership.sh: $system $n: not every survivor saw $VICTIM dead within 60 s" >&2
    sleep 0.5 # late false verdicts
    res=$(analyse "$system" "$d" "$n" "$T_FORM" "$T_JOIN" "$VICTIM" "$T_KILL")
    if [ -n "${watcher_pid:-}" ]; then kill "$watcher_pid" 2>/dev/null || true; wait "$watcher_pid" 2>/dev/null || true; watcher_pid=""; fi
    stop_all
    echo "$res ${idle_false:--} $cost_out"
}

# cost_phase SYSTEM N: "cpu% bytes" per agent over COST_SECS: CPU time of
# every agent (utime+stime from /proc) and, for Agora, gossip bytes sent
# per agent per second ("-" for Serf).
cost_phase() {
    local tick; tick=$(getconf CLK_TCK)
    python3 - "$1" "$2" "$cost" "$tick" "${http_ports[*]:-}" "${pids[@]}" <<'EOF'
import sys, time, urllib.request
system, n, secs, tick, http = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5].split()
pids = sys.argv[6:]
def cpu():
    total = 0
    for p in pids:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except OSError:
            pass
    return total / tick
def sent():
    total = 0
    for port in http:
        try:
            for line in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode().splitlines():
                if line.startswith("agora_gossip_sent_bytes_total"):
                    total += float(line.split()[-1])
        except OSError:
            pass
    return total
c0, b0, t0 = cpu(), sent(), time.time()
time.sleep(secs)
c1, b1, t1 = cpu(), sent(), time.time()
dt = t1 - t0
b = f"{(b1 - b0) / dt / n:.0f}" if system == "agora" and http else "-"
print(f"{100 * (c1 - c0) / dt / n:.2f} {b}")
EOF
}

# idle_phase SYSTEM DIR N: keeps the formed cluster idle (or loaded) IDLE_SECS
# and prints how many death verdicts it produced.
idle_phase() {
    local system="$1" d="$2" n="$3" before after
    before=$(analyse "$system" "$d" "$n" - - none - | cut -d' ' -f4)
    if [ "$load" = 1 ] && [ "$system" = agora ]; then
        local cores; cores=$(nproc)
        "$agora" --socket "$d/n1/agora.sock" run --count $((2 * cores)) --cpus 0.9 --mem 8 \
            -- sh -c 'while :; do :; done' >/dev/null 2>&1 || echo "membership.sh: could not submit the load tasks" >&2
    elif [ "$load" = 1 ]; then
        local cores; cores=$(nproc)
        for _ in $(seq 1 $((2 * cores))); do timeout "$idle" sh -c 'while :; do :; done' & done
    fi
    if [ "$load" = 1 ]; then echo "membership.sh: $system $n: loaded (busy tasks on every core) for $idle s..." >&2; else echo "membership.sh: $system $n: idle for $idle s..." >&2; fi
    sleep "$idle"
    after=$(analyse "$system" "$d" "$n" - - none - | cut -d' ' -f4)
    if [ "$load" = 1 ] && [ "$system" = agora ]; then
        # Tasks outlive a SIGKILLed agent (their supervisors are separate
        # processes): kill them through the cluster before stopping it.
        local id
        for id in $("$agora" --socket "$d/n1/agora.sock" ps --json 2>/dev/null |
            python3 -c 'import json,sys; [print(t.get("id") or t.get("task_id")) for t in json.load(sys.stdin) if t.get("state") in ("running","staging","starting")]'); do
            "$agora" --socket "$d/n1/agora.sock" kill "$id" >/dev/null 2>&1 || true
        done
        sleep 3
    fi
    echo $((after - before))
}

# The Serf watcher: polls `members` over each agent's RPC (msgpack) and
# appends "TIME member-join NAME" / "TIME member-failed NAME" to
# DIR/NAME/events the first time it sees each state.
cat >"$work/serfwatch.py" <<'EOF'
import os, socket, struct, sys, time
def pack(o):
    if isinstance(o, dict):
        return bytes([0x80 | len(o)]) + b"".join(pack(k) + pack(v) for k, v in o.items())
    if isinstance(o, str):
        b = o.encode(); return bytes([0xa0 | len(b)]) + b
    if isinstance(o, int):
        return bytes([o]) if o < 128 else b"\xcf" + struct.pack(">Q", o)
    raise TypeError(o)
class Reader:
    def __init__(self, s): self.s, self.buf = s, b""
    def take(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk: raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]; return out
    def obj(self):
        b = self.take(1)[0]
        if b <= 0x7f: return b
        if b >= 0xe0: return b - 256
        if 0x80 <= b <= 0x8f: return {self.obj(): self.obj() for _ in range(b & 0x0f)}
        if 0x90 <= b <= 0x9f: return [self.obj() for _ in range(b & 0x0f)]
        if 0xa0 <= b <= 0xbf: return self.take(b & 0x1f).decode(errors="replace")
        if b == 0xc0: return None
        if b in (0xc2, 0xc3): return b == 0xc3
        sizes = {0xc4: 1, 0xc5: 2, 0xc6: 4, 0xd9: 1, 0xda: 2, 0xdb: 4}
        if b in sizes:
            n = int.from_bytes(self.take(sizes[b]), "big"); raw = self.take(n)
            return raw if b < 0xd0 else raw.decode(errors="replace")
        ints = {0xcc: ">B", 0xcd: ">H", 0xce: ">I", 0xcf: ">Q", 0xd0: ">b", 0xd1: ">h", 0xd2: ">i", 0xd3: ">q"}
        if b in ints:
            f = ints[b]; return struct.unpack(f, self.take(struct.calcsize(f)))[0]
        if b in (0xca, 0xcb):
            f = ">f" if b == 0xca else ">d"; return struct.unpack(f, self.take(struct.calcsize(f)))[0]
        if b in (0xdc, 0xdd):
            n = int.from_bytes(self.take(2 if b == 0xdc else 4), "big"); return [self.obj() for _ in range(n)]
        if b in (0xde, 0xdf):
            n = int.from_bytes(self.take(2 if b == 0xde else 4), "big"); return {self.obj(): self.obj() for _ in range(n)}
        raise ValueError(f"msgpack byte {b:#x} not handled")
d, agents = sys.argv[1], [a.split("=") for a in sys.argv[2:]]
conns, seen, seq = {}, set(), 1
while True:
    for name, port in agents:
        try:
            if name not in conns:
                s = socket.create_connection(("127.0.0.1", int(port)), timeout=2)
                s.sendall(pack({"Command": "handshake", "Seq": 0}) + pack({"Version": 1}))
                r = Reader(s); r.obj(); conns[name] = (s, r)
            s, r = conns[name]
            seq += 1
            s.sendall(pack({"Command": "members", "Seq": seq}))
            head = r.obj()
            body = r.obj() if not head.get("Error") else {}
            now = time.time()
            with open(os.path.join(d, name, "events"), "a") as f:
                for m in body.get("Members", []):
                    ev = {"alive": "member-join", "failed": "member-failed"}.get(m.get("Status"))
                    key = (name, m.get("Name"), ev)
                    if ev and key not in seen:
                        seen.add(key); f.write(f"{now:.6f} {ev} {m.get('Name')}\n")
        except (OSError, EOFError, ValueError):
            conns.pop(name, None)
    time.sleep(0.02)
EOF

median() { grep -v '^-$' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "-"; else print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

systems=()
[ "$only" != serf ] && systems+=(agora)
[ -n "$serf" ] && [ "$only" != agora ] && systems+=(serf)
echo "agora: ${agora:-skipped} ${AGORA_ARGS:-}"
echo "serf:  ${serf:-skipped}"
summary=()
for n in "${sizes[@]}"; do
    for s in "${systems[@]}"; do : >"$work/$s-$n.form"; : >"$work/$s-$n.join"; : >"$work/$s-$n.detect"; : >"$work/$s-$n.false"; done
    for r in $(seq 1 "$runs"); do
        for s in "${systems[@]}"; do
            one_run "$s" "$n" "$r" >"$work/result"
            read -r fo j k f idle_f cpu bytes <"$work/result"
            [ "$idle_f" = "-" ] && idle_f=""
            echo "$fo" >>"$work/$s-$n.form"; echo "$j" >>"$work/$s-$n.join"; echo "$k" >>"$work/$s-$n.detect"; echo "$f" >>"$work/$s-$n.false"
            printf '%-5s N=%-3d run %d: form %s s  join %s s  detect %s s  false verdicts %s%s\n' "$s" "$n" "$r" "$fo" "$j" "$k" "$f" \
                "${idle_f:+  idle ${idle} s: $idle_f false verdicts}${cpu:+  cpu ${cpu}% per agent, gossip ${bytes} B/s sent per agent}"
        done
    done
    for s in "${systems[@]}"; do
        summary+=("$(printf '| %-5s | %3d | %8s | %8s | %8s | %5s |' "$s" "$n" "$(median <"$work/$s-$n.form")" "$(median <"$work/$s-$n.join")" \
            "$(median <"$work/$s-$n.detect")" "$(awk '{s+=$1} END {print s+0}' "$work/$s-$n.false")")")
    done
done
echo
echo "medians of $runs runs (seconds); false = death verdicts about live members, all runs"
echo "| system | N | form | join | detect | false |"
echo "|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${summary[@]}"
