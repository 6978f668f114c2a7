#!/usr/bin/env bash
# install.sh: install one Agora agent as a systemd service on this machine.
#
# Copies the agora binary to /usr/local/bin, creates the `agora` system user,
# /etc/agora (config and cluster key) and /var/lib/agora (state), writes a
# config template if none exists, and installs scripts/agora.service. Run as
# root. Existing config and key files are never overwritten.
#
#   sudo scripts/install.sh --listen 10.0.0.7:7000 --seeds 10.0.0.5:7000,10.0.0.6:7000 \
#        --key-file ./cluster.key [--bin target/release/agora] [--start]
#
# The first machine of a new cluster makes the key: `agora keygen > cluster.key`;
# copy that file to every other machine (it is the cluster's secret).
set -euo pipefail

usage() {
    cat <<'EOF'
usage: install.sh --listen HOST:PORT --seeds HOST:PORT[,HOST:PORT...] [--key-file FILE]
                  [--bin PATH] [--start]

  --listen HOST:PORT   this node's gossip address (libp2p uses PORT+1; open both)
  --seeds LIST         addresses of some other nodes, comma-separated
  --key-file FILE      the cluster key to install (default: make a new one with agora keygen)
  --bin PATH           the agora binary (default: target/release/agora of this repo)
  --start              enable and start the service at the end
EOF
}

listen=""
seeds=""
key_file=""
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$repo/target/release/agora"
start=0
while [ $# -gt 0 ]; do
    case "$1" in
        --listen) listen="${2:?--listen needs HOST:PORT}"; shift 2 ;;
        --seeds) seeds="${2:?--seeds needs a list}"; shift 2 ;;
        --key-file) key_file="${2:?--key-file needs a path}"; shift 2 ;;
        --bin) bin="${2:?--bin needs a path}"; shift 2 ;;
        --start) start=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
if [ -z "$listen" ] || [ -z "$seeds" ]; then
    echo "install.sh: --listen and --seeds are required" >&2
    usage >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (it writes /usr/local/bin, /etc and systemd units)" >&2
    exit 1
fi
if [ ! -x "$bin" ]; then
    echo "install.sh: no agora binary at $bin; build it with 'cargo build --release -p agora-node' or pass --bin" >&2
    exit 1
fi
if [ -n "$key_file" ] && [ ! -r "$key_file" ]; then
    echo "install.sh: cannot read the key file $key_file" >&2
    exit 1
fi

install -m 0755 "$bin" /usr/local/bin/agora

if ! id agora >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/agora --shell /usr/sbin/nologin agora
fi
install -d -m 0750 -o agora -g agora /etc/agora /var/lib/agora

if [ ! -e /etc/agora/cluster.key ]; then
    if [ -n "$key_file" ]; then
        install -m 0600 -o agora -g agora "$key_file" /etc/agora/cluster.key
    else
        (umask 077 && /usr/local/bin/agora keygen >/etc/agora/cluster.key)
        chown agora:agora /etc/agora/cluster.key
        echo "made a new cluster key in /etc/agora/cluster.key: copy it to every other node" >&2
    fi
fi

if [ ! -e /etc/agora/agora.toml ]; then
    seeds_toml=""
    IFS=',' read -r -a seed_list <<<"$seeds"
    for s in "${seed_list[@]}"; do
        seeds_toml="${seeds_toml:+$seeds_toml, }\"$s\""
    done
    cat >/etc/agora/agora.toml <<EOF
# Agora agent configuration. Every key is also a flag of 'agora agent'
# (see 'agora agent --help'); a flag given on the command line wins.

# Gossip address (UDP); libp2p listens on PORT+1 (TCP).
listen = "$listen"
# Some other nodes to join through.
seeds = [$seeds_toml]
cluster_key_file = "/etc/agora/cluster.key"

# Override what the machine reports (cores, MiB):
# cpus = 8
# mem = 16384
# Operator labels, usable in task constraints (zone==eu-1, rack:unique):
# attr = ["zone=eu-1", "rack=12"]
EOF
    chown agora:agora /etc/agora/agora.toml
    chmod 0640 /etc/agora/agora.toml
fi

install -m 0644 "$repo/scripts/agora.service" /etc/systemd/system/agora.service
systemctl daemon-reload
if [ "$start" = 1 ]; then
    systemctl enable --now agora
    echo "agora is running: journalctl -u agora -f" >&2
else
    echo "installed; start with: systemctl enable --now agora" >&2
fi
echo "framework socket: /var/lib/agora/agora.sock (for user agora)" >&2
