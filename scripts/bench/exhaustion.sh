#!/usr/bin/env bash
# Resource exhaustion, measured (issue 12): one real agent on loopback, and
# a well-behaved client's latency before, during and after each attack:
#
#   sockets    1,000 idle framework-socket connections (handshake done)
#   slowloris  1,000 HTTP connections that send their head a byte at a time
#   submit     `agora run --count 100000` (tasks no node can place, so that
#              the agent holds 100,000 tasks without running 100,000 processes)
#   env10mb    submits with a 10 MB environment, over the socket (refused:
#              frame too large) and over HTTP (refused: body too large), in a loop
#
# The well-behaved clients, each sampled in turn every 50 ms:
#   socket  connect, handshake and `list_nodes` over the framework socket
#   http    GET /api/v1/cluster (a new connection each time)
#   cli     `agora nodes` (includes starting the process)
# and the agent's RSS (VmRSS, before / the largest sampled during / after).
# Prints one table; asserts nothing (benchmarks never assert on time).
#
# Usage: scripts/bench/exhaustion.sh [SECONDS_PER_PHASE]   (default 8)
#   AGORA=path/to/agora  the binary (default target/release/agora)
#   ATTACKS=submit,env10mb  only these, in this order (default sockets,slowloris,env10mb,submit:
#                        the submit last, as its 100,000 tasks stay in the agent)
set -euo pipefail
phase="${1:-8}"
agora="${AGORA:-target/release/agora}"
command -v python3 >/dev/null || { echo "exhaustion.sh: needs python3" >&2; exit 2; }
[ -x "$agora" ] || {
    echo "exhaustion.sh: no agora binary at $agora; build it (cargo build --release -p agora-node) or set AGORA=" >&2
    exit 2
}
[ -r /proc/self/status ] || { echo "exhaustion.sh: needs /proc (Linux) for the agent's RSS" >&2; exit 2; }
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt 4096 ]; then
    echo "exhaustion.sh: the open-files hard limit is $hard; the attacks need 4096" >&2
    exit 2
fi
ulimit -n 4096 2>/dev/null || ulimit -n "$hard"

work="$(mktemp -d -t agora-exhaustion-XXXXXX)"
agent_pid=""
cleanup() {
    if [ -n "$agent_pid" ]; then kill "$agent_pid" 2>/dev/null || true; wait "$agent_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
port="$(free_port)"
http_port="$(free_port)"
(umask 077 && "$agora" keygen >"$work/key" && echo "exhaustion-token" >"$work/token")
"$agora" agent --data-dir "$work/node" --listen "127.0.0.1:$port" --p2p-listen "127.0.0.1:$(free_port)" \
    --cluster-key-file "$work/key" --cpus 4 --mem 4096 --no-cgroups \
    --http "127.0.0.1:$http_port" --http-token-file "$work/token" \
    >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 1 300); do [ -S "$work/node/agora.sock" ] && break; sleep 0.1; done
[ -S "$work/node/agora.sock" ] || { echo "exhaustion.sh: the agent did not start; its log:" >&2; tail "$work/agent.log" >&2; exit 1; }

python3 - "$agora" "$work/node/agora.sock" "127.0.0.1:$http_port" "$agent_pid" "$phase" \
    "${ATTACKS:-sockets,slowloris,env10mb,submit}" <<'EOF'
import json, os, socket, statistics, struct, subprocess, sys, threading, time

agora, sock_path, http, pid, phase = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
host, port = http.split(":"); port = int(port)

def frame(b): return struct.pack(">I", len(b)) + b

def read_frame(s):
    head = b""
    while len(head) < 4:
        c = s.recv(4 - len(head))
        if not c: return None
        head += c
    n = struct.unpack(">I", head)[0]; data = b""
    while len(data) < n:
        c = s.recv(min(65536, n - len(data)))
        if not c: return None
        data += c
    return json.loads(data)

def json_client():
    s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect(sock_path)
    s.sendall(frame(b"agora/1 json"))
    first = read_frame(s)
    return s, first

def probe_socket():
    s, first = json_client()
    try:
        if not first or "welcome" not in first: raise RuntimeError(f"no welcome: {first}")
        s.sendall(frame(b'{"list_nodes":{"request_id":1}}'))
        if "nodes" not in (read_frame(s) or {}): raise RuntimeError("no nodes answer")
    finally:
        s.close()

def http_request(method, path, body=b"", headers=()):
    s = socket.create_connection((host, port), timeout=30)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n"
        for k, v in headers: head += f"{k}: {v}\r\n"
        if body: head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        s.sendall(head.encode() + b"\r\n")
        if body:
            try: s.sendall(body)
            except OSError: pass
        out = b""
        while True:
            c = s.recv(65536)
            if not c: break
            out += c
        return int(out.split(b" ", 2)[1]) if out else 0
    finally:
        s.close()

def probe_http():
    status = http_request("GET", "/api/v1/cluster")
    if status != 200: raise RuntimeError(f"HTTP {status}")

def probe_cli():
    r = subprocess.run([agora, "--socket", sock_path, "nodes"], capture_output=True)
    if r.returncode != 0: raise RuntimeError(r.stderr.decode().strip())

def rss_mib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"): return int(line.split()[1]) / 1024
    return 0.0

def measure(seconds):
    """Samples the three clients in turn for `seconds`; latencies in ms, failures, max RSS."""
    lat = {"socket": [], "http": [], "cli": []}; fails = {k: 0 for k in lat}; errors = {}
    probes = [("socket", probe_socket), ("http", probe_http), ("cli", probe_cli)]
    end = time.monotonic() + seconds; peak = rss_mib(); i = 0
    while time.monotonic() < end:
        name, fn = probes[i % 3]; i += 1
        t0 = time.perf_counter()
        try:
            fn(); lat[name].append((time.perf_counter() - t0) * 1000)
        except Exception as e:
            fails[name] += 1; errors.setdefault(name, str(e)[:120])
        peak = max(peak, rss_mib())
        time.sleep(0.05)
    return lat, fails, peak, errors

def q(xs, p):
    if not xs: return float("nan")
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]

rows = []
def phase_row(attack, name, result, note=""):
    lat, fails, rss, errors = result
    cells = []
    for k in ("socket", "http", "cli"):
        f = f" ({fails[k]} failed)" if fails[k] else ""
        cells.append(f"{q(lat[k], .5):7.1f} {q(lat[k], .99):7.1f}{f}")
    rows.append((attack, name, cells, rss, note))
    for k, e in errors.items(): print(f"  {attack}/{name}: {k} failed: {e}", file=sys.stderr)

# --- sockets: 1,000 idle framework connections --------------------------------
def attack_sockets():
    phase_row("sockets", "before", measure(phase))
    held = []
    for _ in range(1000):
        s, first = json_client()
        if not first or "welcome" not in first: raise SystemExit(f"attack connection refused: {first}")
        held.append(s)
    phase_row("sockets", "during", measure(phase), "1,000 held")
    for s in held: s.close()
    time.sleep(1)
    phase_row("sockets", "after", measure(phase))

# --- slowloris: 1,000 HTTP heads a byte at a time -----------------------------
def attack_slowloris():
    phase_row("slowloris", "before", measure(phase))
    conns = []; stop = threading.Event()
    def open_slow():
        s = socket.create_connection((host, port), timeout=30)
        s.sendall(f"GET /api/v1/cluster HTTP/1.1\r\nHost: {http}\r\nX-Slow: ".encode())
        return s
    for _ in range(1000): conns.append(open_slow())
    reopened = [0]
    def drip():
        # A byte per connection per second; a closed one is reopened, as an
        # attacker would.
        while not stop.is_set():
            for j, s in enumerate(conns):
                try: s.send(b"a")
                except OSError:
                    try: s.close()
                    except OSError: pass
                    try: conns[j] = open_slow(); reopened[0] += 1
                    except OSError: pass
            stop.wait(1.0)
    t = threading.Thread(target=drip, daemon=True); t.start()
    r = measure(max(phase, 15))   # past the 10 s header timeout
    stop.set(); t.join()
    phase_row("slowloris", "during", r, f"1,000 dripping; {reopened[0]} reopened after being cut")
    for s in conns: s.close()
    time.sleep(1)
    phase_row("slowloris", "after", measure(phase))

# --- submit: 100,000 tasks -----------------------------------------------------
def attack_submit():
    phase_row("submit", "before", measure(phase))
    t0 = time.monotonic()
    p = subprocess.Popen([agora, "--socket", sock_path, "--timeout", "60", "run", "--count", "100000",
                          "--constraint", "zone==nowhere", "--", "true"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    r = measure(phase)
    code = p.wait(); took = time.monotonic() - t0
    err = p.stderr.read().decode().strip().splitlines()
    note = f"run exit {code}, {took:.1f} s" + (f": {err[-1][:60]}" if code and err else "")
    phase_row("submit", "during", r, note)
    phase_row("submit", "after", measure(phase))

# --- env10mb: 10 MB environments, socket and HTTP ------------------------------
def attack_env():
    phase_row("env10mb", "before", measure(phase))
    stop = threading.Event(); answers = {}
    big = "x" * (10 << 20)
    task = {"name": "big", "command": {"argv": ["true"]}, "env": {"BIG": big},
            "resources": {"cpu_millis": 100, "mem_mib": 0, "disk_mib": 0, "gpus": 0, "ports": 0},
            "constraints": [], "priority": 0, "kill_grace_ms": 5000, "placement_timeout_ms": 0}
    submit = frame(json.dumps({"submit": {"request_id": 1, "tasks": [task]}}).encode())
    body = json.dumps({"name": "big", "command": ["true"], "cpus": 0.1, "env": {"BIG": big}}).encode()
    def flood():
        while not stop.is_set():
            try:
                s, _ = json_client()
                s.sendall(frame(b'{"register":{"name":"big","role":"","weight":1,"failover_timeout_ms":1000,"framework_id":null}}'))
                read_frame(s)
                try: s.sendall(submit)
                except OSError: pass
                a = read_frame(s); s.close()
                code = a["error"]["code"] if a and "error" in a else str(a)[:40]
                answers[f"socket {code}"] = answers.get(f"socket {code}", 0) + 1
            except Exception as e:
                answers[f"socket {type(e).__name__}"] = answers.get(f"socket {type(e).__name__}", 0) + 1
            try:
                st = http_request("POST", "/api/v1/tasks", body, [("Authorization", "Bearer exhaustion-token")])
                answers[f"http {st}"] = answers.get(f"http {st}", 0) + 1
            except Exception as e:
                answers[f"http {type(e).__name__}"] = answers.get(f"http {type(e).__name__}", 0) + 1
    t = threading.Thread(target=flood, daemon=True); t.start()
    r = measure(phase)
    stop.set(); t.join()
    phase_row("env10mb", "during", r, ", ".join(f"{k}: {v}" for k, v in sorted(answers.items())))
    phase_row("env10mb", "after", measure(phase))

attacks = {"sockets": attack_sockets, "slowloris": attack_slowloris,
           "submit": attack_submit, "env10mb": attack_env}
for name in sys.argv[6].split(","):
    if name not in attacks: raise SystemExit(f"exhaustion.sh: no attack {name!r}; pick from {', '.join(attacks)}")
    attacks[name]()

print(f"agent {agora}, {phase:g} s a phase; latency in ms (median p99) of each well-behaved client")
print(f"{'attack':<10} {'phase':<7} {'socket p50   p99':<17} {'http p50   p99':<17} {'cli p50    p99':<17} {'RSS MiB':>8}  note")
for attack, name, cells, rss, note in rows:
    print(f"{attack:<10} {name:<7} {cells[0]:<17} {cells[1]:<17} {cells[2]:<17} {rss:8.1f}  {note}")
EOF
