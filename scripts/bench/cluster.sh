#!/usr/bin/env bash
# A whole cluster on loopback (issue 13): starts N agents on this machine,
# times how long until every node sees all N alive, submits TASKS tasks
# (`sleep 30`, 0.01 CPU, no memory) with one `agora run --count`, times
# until all run, then times a kill of all of them; prints total RSS, CPU
# used (from /proc), TCP sockets, false death verdicts, bids and rejects
# per task. Not a test: nothing here asserts on time.
#
# Usage: scripts/bench/cluster.sh [--agora BIN] [--cpus C] [--mem M]
#                                 [--kill-clients K] [--keep] N TASKS
#   e.g. scripts/bench/cluster.sh 50 500
#   --agora BIN       the binary [default: target/release/agora, else
#                     target/debug/agora]
#   --cpus/--mem      what each agent offers [default: 1 and 256]: with
#                     0.01-CPU tasks, a node takes up to 100
#   --kill MODE       name: one `agora kill --name bench`; each: one
#                     `agora kill TASK` per task, K in parallel [default:
#                     name where the binary has it, else each]
#   --kill-clients K  parallel `agora kill` clients [default: 16]
#   --sleep S         each task runs `sleep S` [default: 30]; a task that
#                     is through it before all have started counts as started
#   --limit S         give up waiting for each phase after S s [default: 300]
#   --keep            keep the work directory (logs) and print its path
#   --cells K         run the agents in K cells (`agora agent --cells K`,
#                     docs/CELLS.md): formed then means every node sees its
#                     whole cell alive and knows all K cells, whose live
#                     members add up to N [default: one flat cluster]
#
# AGENT_ARGS="--gossip-interval-ms 1000 ..." adds flags to every agent.
#
# Needs: python3 (free ports), curl (/metrics), ss, pgrep, bc, and an open-files
# limit of at least 64 + 40 x N (each agent holds sockets and files).
# Every agent gets --http on loopback (to read /metrics) and
# --no-cgroups. Every process it starts is stopped on exit, also on ^C.
set -euo pipefail

agora=""
cpus=1
mem=256
kill_clients=16
kill_mode=auto
sleep_s=30
limit=300
keep=0
cells=""
while [ $# -gt 0 ]; do
    case "$1" in
        --agora) agora="$2"; shift 2 ;;
        --cpus) cpus="$2"; shift 2 ;;
        --mem) mem="$2"; shift 2 ;;
        --kill-clients) kill_clients="$2"; shift 2 ;;
        --kill) kill_mode="$2"; shift 2 ;;
        --sleep) sleep_s="$2"; shift 2 ;;
        --limit) limit="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        --cells) cells="$2"; shift 2 ;;
        -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
        --*) echo "cluster.sh: unknown flag $1 (see --help)" >&2; exit 2 ;;
        *) break ;;
    esac
done
n="${1:?usage: cluster.sh [flags] N TASKS (see --help)}"
tasks="${2:?usage: cluster.sh [flags] N TASKS (see --help)}"
if [ -n "$cells" ] && ! [ "$cells" -ge 1 ] 2>/dev/null; then
    echo "cluster.sh: --cells K needs a number of cells, 1 or more" >&2
    exit 2
fi
here="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -z "$agora" ]; then
    agora="$here/target/release/agora"
    [ -x "$agora" ] || agora="$here/target/debug/agora"
fi
[ -x "$agora" ] || { echo "cluster.sh: no agora binary at $agora: build it (cargo build --release) or give --agora BIN" >&2; exit 2; }
for tool in python3 curl pgrep awk ss bc; do
    command -v "$tool" >/dev/null || { echo "cluster.sh: needs $tool on PATH" >&2; exit 2; }
done
need_files=$((64 + 40 * n))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need_files" ]; then
    ulimit -n "$need_files" 2>/dev/null || {
        echo "cluster.sh: the open-files limit is $(ulimit -n); $n agents need about $need_files (ulimit -n $need_files)" >&2
        exit 2
    }
fi

work="$(mktemp -d -t agora-cluster-XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    # Supervisors the agents started (their sandboxes are under $work),
    # each with its task in its own session.
    for p in $(pgrep -f "__supervise $work/" || true); do
        sid=$(ps -o sid= -p "$p" 2>/dev/null | tr -d ' ')
        [ -n "$sid" ] && pkill -KILL -s "$sid" 2>/dev/null || true
        kill -KILL "$p" 2>/dev/null || true
    done
    for _ in $(seq 1 50); do pgrep -f "__supervise $work/" >/dev/null || break; sleep 0.1; done
    if [ "$keep" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# N distinct free ports per kind (gossip UDP, p2p TCP, HTTP TCP, federation
# UDP), held open together so that none repeats.
python3 - "$n" >"$work/ports" <<'EOF'
import socket, sys
n = int(sys.argv[1]); held = []
for _ in range(n):
    row = []
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM, socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind); s.bind(("127.0.0.1", 0)); held.append(s)
        row.append(str(s.getsockname()[1]))
    print(" ".join(row))
EOF
(umask 077 && "$agora" keygen >"$work/key")
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l | xargs printf '%.2f'; }
metric_sum() { # metric_sum NAME_REGEX: the sum over every node's /metrics
    local name="$1"
    awk '{print $3}' "$work/ports" | xargs -P 8 -I{} curl -s --max-time 5 "http://127.0.0.1:{}/metrics" |
        awk -v re="^$name( |\\{)" '$0 ~ re {s += $NF} END {printf "%d\n", s}' || true
}

seed=""
# In cells, a node needs a seed of its own cell: the first 8 x K agents
# (those started before it) seed every later one, and the federation
# addresses of the first 64 seed every gateway.
fed_seeds=$(awk 'NR <= 64 {printf "%s127.0.0.1:%s", (NR > 1 ? "," : ""), $4}' "$work/ports")
# launch I GPORT PPORT HPORT FPORT: starts agent nI; its pid goes to pids[I-1].
launch() {
    local i="$1" gport="$2" pport="$3" hport="$4" fport="$5" dir="$work/n$1"
    mkdir -p "$dir"
    args=(agent --data-dir "$dir" --node-id "n$i" --listen "127.0.0.1:$gport"
        --p2p-listen "127.0.0.1:$pport" --http "127.0.0.1:$hport" --http-public-read
        --cluster-key-file "$work/key" --cpus "$cpus" --mem "$mem" --no-cgroups)
    [ -n "$seed" ] && args+=(--seeds "$seed")
    [ -n "$cells" ] && args+=(--cells "$cells" --federation-listen "127.0.0.1:$fport"
        --federation-seeds "$fed_seeds")
    # shellcheck disable=SC2206 # AGENT_ARGS is split on purpose
    [ -n "${AGENT_ARGS:-}" ] && args+=(${AGENT_ARGS})
    "$agora" "${args[@]}" >"$dir/agent.log" 2>&1 &
    pids[i - 1]=$!
}
i=0
t_start=$(now)
while read -r gport pport hport fport; do
    i=$((i + 1))
    launch "$i" "$gport" "$pport" "$hport" "$fport"
    if [ -z "$cells" ]; then
        [ -z "$seed" ] && seed="127.0.0.1:$gport"
    elif [ "$i" -le $((8 * cells)) ]; then
        seed="${seed:+$seed,}127.0.0.1:$gport"
    fi
done <"$work/ports"
# A port picked free above can be taken by the time its agent starts (at
# 200 agents, 2 of them found theirs in use): those start again on new
# ports, at most 3 times.
for _ in 1 2 3; do
    sleep 1
    again=0
    for i in $(seq 1 "$n"); do
        if ! kill -0 "${pids[i - 1]}" 2>/dev/null && grep -q "Address already in use" "$work/n$i/agent.log"; then
            if [ "$i" = 1 ]; then
                echo "cluster.sh: the first agent (every other's seed) found its port taken; run again" >&2
                exit 1
            fi
            read -r gport pport hport fport < <(python3 -c '
import socket
s = [socket.socket(socket.AF_INET, k) for k in (socket.SOCK_DGRAM, socket.SOCK_STREAM, socket.SOCK_STREAM, socket.SOCK_DGRAM)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')
            sed -i "${i}s/.*/$gport $pport $hport $fport/" "$work/ports"
            rm -rf "$work/n$i"
            launch "$i" "$gport" "$pport" "$hport" "$fport"
            again=$((again + 1))
        fi
    done
    [ "$again" = 0 ] && break
    echo "cluster.sh: $again agents found their port taken; started them again on new ports"
done

# Formed: every node's agora_nodes{state="alive"} is N; in cells, every
# node sees all of its cell alive (the cell's size: how many nodes say
# they are in it) and knows K cells whose live members add up to N.
cells_formed() { # prints how many nodes see the cluster formed
    python3 "$here/scripts/bench/cells_formed.py" "$work/ports" "$n" "$cells"
}
formed=""
ok=0
while [ "$(since "$t_start" | cut -d. -f1)" -lt "$limit" ]; do
    if [ -n "$cells" ]; then
        ok=$(cells_formed || echo 0)
    else
        ok=$(awk '{print $3}' "$work/ports" | xargs -P 8 -I{} curl -s --max-time 5 "http://127.0.0.1:{}/metrics" |
            awk -v n="$n" '/^agora_nodes\{state="alive"\}/ && $NF == n {c++} END {print c + 0}' || true)
    fi
    if [ "$ok" -ge "$n" ]; then formed=$(since "$t_start"); break; fi
    sleep 0.2
done
if [ -n "$cells" ]; then
    [ -n "$formed" ] || { echo "cluster.sh: the cells did not form in $limit s ($ok of $n nodes see their cell whole and all $cells cells)" >&2; exit 1; }
    echo "formed: every node sees its cell whole and all $cells cells ($n nodes) after ${formed} s (from the first agent's start)"
else
    [ -n "$formed" ] || { echo "cluster.sh: the cluster did not form in $limit s ($ok of $n nodes see all $n alive)" >&2; exit 1; }
    echo "formed: every node sees $n alive after ${formed} s (from the first agent's start)"
fi

sock="$work/n1/agora.sock"
cli() { "$agora" --socket "$sock" --timeout 60 "$@"; }
t_submit=$(now)
cli run --count "$tasks" --cpus 0.01 --name bench --placement-timeout 120 -- sleep "$sleep_s" >"$work/run.out" 2>"$work/run.err" ||
    { echo "cluster.sh: agora run failed:" >&2; cat "$work/run.err" >&2; exit 1; }
# census: sets listed, waiting (staging, starting), started (running or
# finished), lost, failed, killed, active (waiting or running) from n1's
# agora_tasks gauge (n1 is the home of every bench task, so it knows each
# one's state; reading it costs no cluster-wide listing, which would load
# the cluster being measured); false when n1 did not answer.
census() {
    local line
    line=$(curl -s --max-time 10 "http://127.0.0.1:$n1_http/metrics" | awk '
        /^agora_tasks\{state="[a-z]+"\}/ { split($1, a, "\""); c[a[2]] = $NF }
        END {
            if (length(c) == 0) exit 1
            printf "%d %d %d %d %d %d %d\n", c["staging"] + c["starting"] + c["running"] + c["finished"] + c["lost"] + c["failed"] + c["killed"],
                c["staging"] + c["starting"], c["running"] + c["finished"], c["lost"], c["failed"], c["killed"],
                c["staging"] + c["starting"] + c["running"]
        }') || return 1
    read -r listed waiting started lost failed killed active <<<"$line"
}
n1_http=$(awk 'NR == 1 {print $3}' "$work/ports")
running=""
while [ "$(since "$t_submit" | cut -d. -f1)" -lt "$limit" ]; do
    # Started: running, or already through its sleep.
    if census; then
        if [ "$started" -ge "$tasks" ]; then running=$(since "$t_submit"); break; fi
        # None waiting any more, but not all started: some were lost or failed.
        if [ "$listed" -ge "$tasks" ] && [ "$waiting" = 0 ]; then break; fi
    fi
    sleep 0.5
done
census || true
if [ -n "$running" ]; then
    echo "running: all $tasks tasks started after ${running} s (from submit)"
else
    echo "running: only $started of $tasks tasks started ($lost lost, $failed failed) after $(since "$t_submit") s"
fi
sleep 2 # let gossip settle before the figures

rss_kib=0; cpu_ticks=0
for p in $(pgrep -f "agent --data-dir $work/"); do
    r=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    c=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
    rss_kib=$((rss_kib + r)); cpu_ticks=$((cpu_ticks + c))
done
hz=$(getconf CLK_TCK)
sockets=0
for p in $(pgrep -f "agent --data-dir $work/"); do
    s=$(find "/proc/$p/fd" -lname 'socket:*' 2>/dev/null | wc -l)
    sockets=$((sockets + s))
done
p2p_conns=$(metric_sum agora_peer_connections)
# Node-to-node TCP connections, counted once each (at the end that accepted).
tcp_conns=$(ss -Htn state established | awk 'NR == FNR {p[$2] = 1; next} {split($3, a, ":"); if (a[2] in p) c++} END {print c + 0}' "$work/ports" - || true)
bids=$(metric_sum agora_bids_sent_total)
rejects=$(metric_sum agora_bids_rejected_total)
failed=$(awk '{print $3}' "$work/ports" | xargs -P 8 -I{} curl -s --max-time 5 "http://127.0.0.1:{}/metrics" |
    awk '/^agora_peer_messages_total\{outcome="failed"\}/ {s += $NF} END {printf "%d\n", s}' || true)
retries=$(metric_sum agora_peer_message_retries_total)
dropped=$(metric_sum agora_peer_messages_dropped_total)
dead=$(cat "$work"/n*/agent.log | grep -c "node declared dead;" || true)
echo "agents: total RSS $((rss_kib / 1024)) MiB ($((rss_kib / n)) KiB each), CPU used $(echo "$cpu_ticks / $hz" | bc -l | xargs printf '%.1f') s (user+sys, all agents, since start)"
echo "sockets: $sockets open by the agents (fds); node-to-node TCP connections: $tcp_conns (ss), ${p2p_conns} (agora_peer_connections summed; 0 on builds without it)"
echo "auction: $(echo "$bids / $tasks" | bc -l | xargs printf '%.2f') bids per task, $(echo "$rejects / $tasks" | bc -l | xargs printf '%.2f') rejects per task"
echo "peer messages: $failed failed streams, $retries retried, $dropped dropped (retries and drops: 0 on builds without them)"
echo "false death verdicts: $dead (log lines 'node declared dead', summed over nodes; no node was stopped)"

# Kill them all: the ids from the run's output, K clients in parallel.
cli ps --json --name bench | python3 -c 'import json,sys; [print(r["id"]) for r in json.load(sys.stdin) if r["state"] in ("staging", "starting", "running")]' >"$work/ids" || true
if [ "$kill_mode" = auto ]; then
    if "$agora" kill --help 2>/dev/null | grep -q -- '--name'; then kill_mode=name; else kill_mode=each; fi
fi
t_kill=$(now)
if [ "$kill_mode" = name ]; then
    cli kill --name bench >/dev/null 2>"$work/kill.err" || true
    how="one agora kill --name"
else
    xargs -P "$kill_clients" -I{} "$agora" --socket "$sock" --timeout 60 kill {} <"$work/ids" >/dev/null 2>"$work/kill.err" || true
    how="$kill_clients parallel agora kill TASK"
fi
t_sent=$(since "$t_kill")
ended=""
while [ "$(since "$t_kill" | cut -d. -f1)" -lt "$limit" ]; do
    if census && [ "$active" = 0 ]; then ended=$(since "$t_kill"); break; fi
    sleep 0.5
done
census || true
echo "kill: $(wc -l <"$work/ids") kills sent in ${t_sent} s ($how, $killed killed); none running after ${ended:-(more than $limit)} s"
