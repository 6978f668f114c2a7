#!/usr/bin/env bash
# Sets up Slurm on this machine as the reference for scripts/bench/throughput.sh
# (issue 13): Debian's slurm-wlm and munge, one node (this host) declared with
# SLOTS cpus (default 64, as the issue's measurement; more than the machine
# has, accepted with SlurmdParameters=config_overrides), set up for
# throughput as Slurm's high-throughput guide suggests (the FIFO builtin
# scheduler, finished jobs purged after 2 s; with the default backfill
# scheduler a 2,000-task array took 202 s here, under load), the array and job-count
# limits a 2,000-task array needs, and munged, slurmctld and slurmd started
# in the background. Needs root and the Debian archive. Idempotent: run it again to
# restart the daemons; `scripts/bench/slurm_setup.sh --stop` stops them.
#
# Usage: sudo scripts/bench/slurm_setup.sh [--slots S] [--stop]
# Then:  scripts/bench/throughput.sh target/release/agora   (Slurm beside it)
set -euo pipefail
slots=64 stop=0
while [ $# -gt 0 ]; do
    case "$1" in
        --slots) slots="$2"; shift ;;
        --stop) stop=1 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "slurm_setup.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "slurm_setup.sh: run as root (it installs packages and starts daemons)" >&2; exit 2; }

stop_all() {
    for d in slurmd slurmctld munged; do pkill -x "$d" 2>/dev/null || true; done
    for _ in $(seq 50); do
        pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || pgrep -x munged >/dev/null || return 0
        sleep 0.1
    done
}
stop_all
[ "$stop" = 1 ] && { echo "slurm_setup.sh: Slurm stopped"; exit 0; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    echo "slurm_setup.sh: installing slurm-wlm and munge from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
fi

host=$(hostname -s)
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge /etc/slurm \
    /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key
cat >/etc/slurm/slurm.conf <<CONF
# Written by agora's scripts/bench/slurm_setup.sh: one node, $slots cpus.
ClusterName=agora-bench
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/builtin
MinJobAge=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MaxArraySize=100001
MaxJobCount=200000
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName=$host CPUs=$slots RealMemory=1000 State=UNKNOWN
PartitionName=bench Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

runuser -u munge -- /usr/sbin/munged --force
/usr/sbin/slurmctld
/usr/sbin/slurmd
for _ in $(seq 100); do
    if sinfo -h -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; then
        echo "slurm_setup.sh: Slurm runs: node $host, $slots cpus, partition bench (stop with --stop)"
        sinfo
        exit 0
    fi
    sleep 0.2
done
echo "slurm_setup.sh: Slurm did not become ready in 20 s; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
sinfo >&2 || true
exit 1
