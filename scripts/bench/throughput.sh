#!/usr/bin/env bash
# Batch throughput (issue 13, "Batch throughput against Slurm"): TASKS
# trivial tasks (`true`, 1 cpu each) on one agent with SLOTS cpus, timed from
# the submit to the last end, as `agora run --count TASKS --wait` (one
# submit) and, with --calls, as TASKS separate `agora run --wait` calls from
# 16 parallel clients. Builds given side by side alternate round by round,
# so that noise from other work falls on all of them; prints each round, the
# medians, the CPU seconds per round of the agent alone and of its whole
# tree (the agent, the task supervisors and the tasks: what launching costs
# the machine), and each build's ratio to the first. Not a test: nothing
# here asserts on time.
#
# Slurm: where `sbatch` and a running `slurmctld` are present (Debian's
# slurm-wlm, configured with one node of SLOTS cpus), the same TASKS run as
# a job array (`sbatch --array`) is timed beside each round. This
# script does not install or configure Slurm (scripts/bench/slurm_setup.sh
# does, as root); without it, it says so and measures Agora only. The
# issue's reference on this machine: Slurm 22.05, 64 cpus, 2,000 tasks:
# 38.4 s as an array, 42.7 s as 2,000 sbatch calls.
#
# Usage: scripts/bench/throughput.sh [--calls] [--rounds R] [--tasks N] [--slots S] AGORA...
#   e.g. scripts/bench/throughput.sh /tmp/agora-old target/release/agora
# The data dir is on /dev/shm when it exists (set BENCH_DIR to choose).
set -euo pipefail
calls=0 rounds=3 tasks=2000 slots=64
bins=()
while [ $# -gt 0 ]; do
    case "$1" in
        --calls) calls=1 ;;
        --rounds) rounds="$2"; shift ;;
        --tasks) tasks="$2"; shift ;;
        --slots) slots="$2"; shift ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) bins+=("$1") ;;
    esac
    shift
done
[ ${#bins[@]} -gt 0 ] || { echo "throughput.sh: give at least one agora binary (see --help)" >&2; exit 2; }
for b in "${bins[@]}"; do
    [ -x "$b" ] || { echo "throughput.sh: $b is not an executable agora binary" >&2; exit 2; }
done
for t in python3 bc awk; do
    command -v "$t" >/dev/null || { echo "throughput.sh: needs $t (apt-get install -y $t)" >&2; exit 2; }
done
base="${BENCH_DIR:-}"
[ -n "$base" ] || { [ -d /dev/shm ] && base=/dev/shm || base="${TMPDIR:-/tmp}"; }
work="$(mktemp -d "$base/agora-throughput-XXXXXX")"
agent_pid=""
cleanup() {
    if [ -n "$agent_pid" ]; then kill "$agent_pid" 2>/dev/null || true; wait "$agent_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

slurm=0
if command -v sbatch >/dev/null && command -v squeue >/dev/null && pgrep -x slurmctld >/dev/null; then
    slurm=1
else
    echo "throughput.sh: no running Slurm (sbatch, squeue and slurmctld): measuring Agora only"
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# tree_ticks PID: CPU clock ticks of PID and of everything it and its live
# children have reaped (utime, stime, cutime, cstime of each): supervisors
# are reaped by the agent or by its spawner, tasks by their supervisors.
tree_ticks() {
    local pid="$1" sum=0 c
    sum=$(awk '{print $14+$15+$16+$17}' "/proc/$pid/stat")
    for c in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
        sum=$((sum + $(awk '{print $14+$15+$16+$17}' "/proc/$c/stat" 2>/dev/null || echo 0)))
    done
    echo "$sum"
}

# one_round BIN: prints "SECONDS AGENT_CPU_SECONDS TREE_CPU_SECONDS".
one_round() {
    local bin="$1" dir="$work/node" port t0 t1 c0 c1 tr0 tr1 tick
    rm -rf "$dir" && mkdir -p "$dir"
    port="$(free_port)"
    (umask 077 && "$bin" keygen >"$work/key")
    "$bin" agent --data-dir "$dir" --listen "127.0.0.1:$port" --p2p-listen "127.0.0.1:$(free_port)" \
        --seeds "127.0.0.1:$port" --cluster-key-file "$work/key" --cpus "$slots" --mem $((slots * 1024)) \
        >"$dir/agent.log" 2>&1 &
    agent_pid=$!
    for _ in $(seq 1 300); do [ -S "$dir/agora.sock" ] && break; sleep 0.1; done
    [ -S "$dir/agora.sock" ] || { echo "throughput.sh: the agent did not start; its log:" >&2; tail "$dir/agent.log" >&2; exit 1; }
    tick=$(getconf CLK_TCK)
    c0=$(awk '{print $14+$15}' "/proc/$agent_pid/stat")
    tr0=$(tree_ticks "$agent_pid")
    t0=$(date +%s.%N)
    if [ "$calls" = 1 ]; then
        seq 1 "$tasks" | xargs -P 16 -I{} "$bin" --socket "$dir/agora.sock" --timeout 120 \
            run --cpus 1 --mem 8 --wait -- true >/dev/null 2>"$work/run.err" \
            || { echo "throughput.sh: a run failed:" >&2; tail "$work/run.err" >&2; exit 1; }
    else
        "$bin" --socket "$dir/agora.sock" --timeout 120 run --count "$tasks" --cpus 1 --mem 8 --wait -- true \
            >/dev/null 2>"$work/run.err" || { echo "throughput.sh: the run failed:" >&2; cat "$work/run.err" >&2; exit 1; }
    fi
    t1=$(date +%s.%N)
    c1=$(awk '{print $14+$15}' "/proc/$agent_pid/stat")
    tr1=$(tree_ticks "$agent_pid")
    kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; agent_pid=""
    echo "$(echo "$t1 - $t0" | bc -l) $(echo "($c1 - $c0) / $tick" | bc -l) $(echo "($tr1 - $tr0) / $tick" | bc -l)"
}

slurm_round() {
    local t0 t1 job out
    t0=$(date +%s.%N)
    job=$(sbatch --parsable --array=1-"$tasks" --cpus-per-task=1 --output=/dev/null --wrap true)
    job="${job%%;*}"
    # Until no element of the array is queued, running or completing. A
    # failed squeue (slurmctld busy) is asked again, not taken as empty.
    while :; do
        if out=$(squeue -h -r -o %i 2>/dev/null); then
            grep -q "^${job}_" <<<"$out" || break
        fi
        sleep 0.2
    done
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

mode=$([ "$calls" = 1 ] && echo "$tasks separate runs (16 clients)" || echo "one run --count $tasks")
echo "throughput.sh: $tasks tasks \`true\` on $slots slots, $mode, $rounds rounds, data dir under $base"
for r in $(seq 1 "$rounds"); do
    line="round $r:"
    for i in "${!bins[@]}"; do
        read -r s c tr < <(one_round "${bins[$i]}")
        echo "$s" >>"$work/t$i"; echo "$c" >>"$work/c$i"; echo "$tr" >>"$work/tr$i"
        line+=$(printf '  [%d] %.2f s (cpu: agent %.2f s, tree %.2f s)' "$i" "$s" "$c" "$tr")
    done
    if [ "$slurm" = 1 ]; then
        s=$(slurm_round); echo "$s" >>"$work/slurm"
        line+=$(printf '  slurm %.2f s' "$s")
    fi
    echo "$line"
done
m0=$(median <"$work/t0")
for i in "${!bins[@]}"; do
    m=$(median <"$work/t$i"); c=$(median <"$work/c$i"); tr=$(median <"$work/tr$i")
    printf 'median [%d] %s: %.2f s, %.0f tasks/s, cpu: agent %.2f s, tree %.2f s, ratio to [0] %.3f\n' \
        "$i" "${bins[$i]}" "$m" "$(echo "$tasks / $m" | bc -l)" "$c" "$tr" "$(echo "$m / $m0" | bc -l)"
done
if [ "$slurm" = 1 ]; then
    printf 'median slurm array: %.2f s\n' "$(median <"$work/slurm")"
fi
