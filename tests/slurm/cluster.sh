#!/usr/bin/env bash
# A private single-node Slurm cluster (slurmctld, slurmd, slurmdbd on MariaDB, munge) for the
# cluster test: everything under PREFIX, daemons stopped by their pid files.
#   tests/slurm/cluster.sh start PREFIX   # prints PREFIX/bin: put it first on PATH
#   tests/slurm/cluster.sh stop PREFIX
# Needs root and Debian's slurmctld slurmd slurm-client slurmdbd munge mariadb-server.
set -euo pipefail
cmd=$1
P=$(realpath -m "$2")
NODE=$(hostname -s)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() {  # wait_for SECONDS COMMAND...
    local end=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || { echo "timed out waiting for: $*" >&2; return 1; }
        sleep 0.2
    done
}

stop() {
    if [ -x "$P/bin/squeue" ]; then "$P/bin/scancel" --full --user=root >/dev/null 2>&1 || true; fi
    for d in slurmd slurmctld slurmdbd mariadbd munged; do
        if [ -f "$P/run/$d.pid" ]; then
            kill "$(cat "$P/run/$d.pid")" 2>/dev/null || true
        fi
    done
    sleep 1
    for d in slurmd slurmctld slurmdbd mariadbd munged; do
        if [ -f "$P/run/$d.pid" ]; then kill -9 "$(cat "$P/run/$d.pid")" 2>/dev/null || true; rm -f "$P/run/$d.pid"; fi
    done
    pkill -9 -f "slurmstepd.*$P" 2>/dev/null || true  # outlives slurmd and ignores SIGTERM
}

start() {
    mkdir -p "$P"/{etc,bin,run,log,state,spool,db}
    # munge with its own key and socket
    mungekey --create --keyfile="$P/etc/munge.key" --force
    chmod 600 "$P/etc/munge.key"
    munged --socket="$P/run/munge.sock" --key-file="$P/etc/munge.key" --pid-file="$P/run/munged.pid" \
        --log-file="$P/log/munged.log" --seed-file="$P/run/munge.seed" --force
    # MariaDB for slurmdbd (sacct needs accounting), on a private socket and port
    local db_port ctld_port d_port dbd_port
    db_port=$(free_port); ctld_port=$(free_port); d_port=$(free_port); dbd_port=$(free_port)
    mariadb-install-db --datadir="$P/db" --user=root --auth-root-authentication-method=normal >"$P/log/db-install.log" 2>&1
    mariadbd --datadir="$P/db" --socket="$P/run/db.sock" --port="$db_port" --bind-address=127.0.0.1 \
        --pid-file="$P/run/mariadbd.pid" --user=root --skip-grant-tables --log-error="$P/log/mariadb.log" &
    wait_for 30 mariadb-admin --socket="$P/run/db.sock" ping
    local cpus mem
    cpus=$(nproc)
    mem=$(( $(free -m | awk '/^Mem:/ {print $2}') - 512 ))
    cat >"$P/etc/slurm.conf" <<CONF
ClusterName=astroflow
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$P/run/munge.sock
CredType=cred/munge
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$dbd_port
AccountingStoragePass=$P/run/munge.sock
JobAcctGatherType=jobacct_gather/none
AccountingStoreFlags=job_comment
StateSaveLocation=$P/state
SlurmdSpoolDir=$P/spool
SlurmctldPidFile=$P/run/slurmctld.pid
SlurmdPidFile=$P/run/slurmd.pid
SlurmctldLogFile=$P/log/slurmctld.log
SlurmdLogFile=$P/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
MinJobAge=300
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    cat >"$P/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$P/run/munge.sock
DbdHost=localhost
DbdPort=$dbd_port
SlurmUser=root
PidFile=$P/run/slurmdbd.pid
LogFile=$P/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=root
StorageLoc=slurm_acct_db
CONF
    chmod 600 "$P/etc/slurmdbd.conf"
    # every Slurm command through a wrapper naming the config (the jobstep plugin drops SLURM_CONF)
    for c in srun sbatch squeue sacct scancel sinfo sacctmgr scontrol; do
        printf '#!/bin/sh\nSLURM_CONF=%s exec /usr/bin/%s "$@"\n' "$P/etc/slurm.conf" "$c" >"$P/bin/$c"
        chmod +x "$P/bin/$c"
    done
    export SLURM_CONF="$P/etc/slurm.conf"
    slurmdbd
    wait_for 30 "$P/bin/sacctmgr" -i list cluster
    "$P/bin/sacctmgr" -i add cluster astroflow >/dev/null 2>&1 || true
    slurmctld -c
    slurmd
    wait_for 30 sh -c "'$P/bin/sinfo' -h -o %t | grep -qx idle"
    echo "$P/bin"
}

case $cmd in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop PREFIX" >&2; exit 2 ;;
esac
