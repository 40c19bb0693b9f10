#!/usr/bin/env bash
# Runs the workflow through the SLURM profile (profiles/slurm) on a real,
# single-node SLURM cluster started on this machine, and checks it against a
# local run of the same targets. `make test-slurm` runs it; so can a user who
# wants to try the profile before going to a site:
#
#   bash tests/slurm_local_cluster.sh [TARGET ...]
#
# What it does, in order:
#   1. installs the project with the SLURM executor plugin into the project's
#      virtual environment when the pinned versions are missing
#      (pip install -e '.[slurm]'; $VENV, default .venv), and dry-runs the paper
#      profile through profiles/slurm (`snakemake -n --workflow-profile
#      profiles/slurm all --configfile config/paper.yaml`);
#   2. installs Debian's slurm-wlm and munge when they are missing (apt-get,
#      as root; they stay installed);
#   3. starts munged, slurmctld and slurmd from a temporary folder: its own
#      munge key and socket, a generated slurm.conf (one node on 127.0.0.1,
#      select/cons_tres, no accounting database, MinJobAge 600 so that squeue
#      still reports finished jobs, free ports), nothing under /etc;
#   4. runs the targets locally (--cores 1) and through
#      `snakemake --workflow-profile profiles/slurm` (--jobs 2), each in its own
#      working folder (-d) under the temporary folder, so the project's
#      results/ is not touched;
#   5. checks that every job of the SLURM run was submitted with sbatch and
#      COMPLETED in SLURM, and that every target is byte-equal to the local
#      run's;
#   6. cancels what is left of its jobs, stops the daemons it started (by PID)
#      and removes the temporary folder, also when interrupted or failing.
#
# Default targets: the bicubic floor and one short training + evaluation on
# the DIV2K stand-in, and the FLOPs of the EDSR-baseline extractor (embedded
# default, 4 jobs). Exit status: 0 passed, 1 failed, 77 cannot run here (no
# apt-get and SLURM missing, not root, ...), with the reason on stderr.
#
# Environment: VENV (the project's virtual environment, default .venv),
# KEEP=1 keeps the temporary folder (logs, both runs) for inspection,
# RUN_TIMEOUT (seconds, default 900) bounds each of the two runs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
case $VENV in /*) ;; *) VENV=$ROOT/$VENV ;; esac
SKIP=77
DEFAULT_TARGETS=(
    results/eval/bicubic/div2k-valid.csv
    results/flops/edsr-baseline/div2k-valid.csv
    results/eval/edsr-baseline-liif/div2k-valid.csv
)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${DEFAULT_TARGETS[@]}")

say() { printf '[slurm-test] %s\n' "$*"; }
skip() { printf '[slurm-test] SKIPPED: %s\n' "$*" >&2; exit "$SKIP"; }
fail() { printf '[slurm-test] FAILED: %s\n' "$*" >&2; exit 1; }

# ----------------------------------------------------------------- 1./2. install
SLURM_BINS=(munged slurmctld slurmd sbatch squeue sinfo scontrol)
missing_bins() {
    local b out=()
    for b in "${SLURM_BINS[@]}"; do command -v "$b" >/dev/null || out+=("$b"); done
    echo "${out[*]}"
}

install_slurm() {
    local missing
    missing=$(missing_bins)
    [ -z "$missing" ] && return 0
    command -v apt-get >/dev/null || skip "SLURM is not installed ($missing missing) and there is no apt-get to install it"
    [ "$(id -u)" -eq 0 ] || skip "SLURM is not installed ($missing missing); installing Debian's slurm-wlm and munge needs root"
    say "installing Debian's slurm-wlm and munge ($missing missing)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$WORK/apt.log" 2>&1 ||
        { tail -n 5 "$WORK/apt.log" >&2; skip "apt-get update failed (no package mirror reachable?)"; }
    apt-get install -y -qq slurm-wlm munge >>"$WORK/apt.log" 2>&1 ||
        { tail -n 10 "$WORK/apt.log" >&2; skip "apt-get install slurm-wlm munge failed"; }
    missing=$(missing_bins)
    [ -z "$missing" ] || fail "still missing after apt-get install: $missing"
}

plugin_installed() {  # the [slurm] extra of pyproject.toml, at the pinned versions
    "$VENV/bin/python" - "$ROOT/pyproject.toml" <<'PY'
import sys, tomllib
from importlib import metadata
from packaging.requirements import Requirement

with open(sys.argv[1], "rb") as f:
    extra = tomllib.load(f)["project"]["optional-dependencies"]["slurm"]
for req in map(Requirement, extra):
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        sys.exit(1)
    if not req.specifier.contains(version, prereleases=True):
        sys.exit(1)
PY
}

install_plugin() {
    if [ ! -e "$VENV" ]; then
        say "creating $VENV"
        python3 -m venv "$VENV"
    fi
    [ -x "$VENV/bin/python" ] || fail "$VENV/bin/python is not an executable Python"
    if ! plugin_installed 2>/dev/null; then
        say "installing the project with the SLURM executor plugin: pip install -e '.[slurm]'"
        "$VENV/bin/python" -m pip install -q -e "$ROOT[slurm]"
        plugin_installed || fail "the [slurm] extra is still not installed in $VENV"
    fi
}

dry_run_paper() {
    # The paper profile through profiles/slurm, planned only (no cluster needed).
    local n
    run_logged "$WORK/dry-run.log" "$VENV/bin/python" -m snakemake -s "$ROOT/Snakefile" -d "$WORK/dry-run" -n \
        --workflow-profile "$ROOT/profiles/slurm" all --configfile "$ROOT/config/paper.yaml" || {
        tail -n 30 "$WORK/dry-run.log" >&2
        fail "the dry run of the paper profile through profiles/slurm failed"
    }
    n=$(awk '$1 == "total" {print $2; exit}' "$WORK/dry-run.log")
    say "dry run of the paper profile through profiles/slurm: ${n:-?} jobs planned"
}

# ----------------------------------------------------------------- 3./6. cluster
WORK=""
PIDS=()

cleanup() {
    local rc=$? pid i
    trap - EXIT INT TERM
    set +e  # clean up as much as possible, whatever fails
    # A run still going (interrupted): TERM makes Snakemake cancel its SLURM jobs.
    if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
        kill -TERM "$CHILD" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$CHILD" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$CHILD" 2>/dev/null && kill -KILL -- "-$CHILD" 2>/dev/null  # timeout's process group
        wait "$CHILD" 2>/dev/null || true
    fi
    # Jobs still running (a failed or interrupted run) end before their slurmd does.
    if [ -n "${SLURM_CONF:-}" ] && scontrol ping >/dev/null 2>&1; then
        scancel --user "$(id -un)" 2>/dev/null || true
        for _ in $(seq 60); do
            [ -z "$(squeue -h -t RUNNING,COMPLETING,CONFIGURING -o %i 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
    # Stop in reverse start order: slurmd, slurmctld, munged.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "${KEEP:-0}" = 1 ]; then
            say "kept $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}

free_port() {
    "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...
    local secs=$1 what=$2
    shift 2
    for _ in $(seq $((secs * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    fail "$what did not come up within ${secs}s (logs in $WORK/log, KEEP=1 keeps them)"
}

start_cluster() {
    local node=tadt-local host cpus mem_mb ctld_port d_port
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    ctld_port=$(free_port)
    d_port=$(free_port)
    while [ "$d_port" = "$ctld_port" ]; do d_port=$(free_port); done
    mkdir -p "$WORK"/{munge,state,spool,log}
    chmod 711 "$WORK/munge"

    # munge: a fresh key and a private socket, so the system's munge (if any) is untouched.
    head -c 1024 /dev/urandom > "$WORK/munge/munge.key"
    chmod 400 "$WORK/munge/munge.key"
    munged --foreground --force --key-file="$WORK/munge/munge.key" \
        --socket="$WORK/munge/munge.socket" --pid-file="$WORK/munge/munged.pid" \
        --seed-file="$WORK/munge/munged.seed" --log-file="$WORK/log/munged.log" \
        >>"$WORK/log/munged.log" 2>&1 &
    PIDS+=($!)
    wait_for 20 munged test -S "$WORK/munge/munge.socket"

    cat > "$WORK/slurm.conf" <<EOF
# Generated by tests/slurm_local_cluster.sh: a single-node cluster on 127.0.0.1.
ClusterName=tadt-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$WORK/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# squeue must still report a job this long after it ended (profiles/slurm
# queries job states with squeue, there being no accounting database).
MinJobAge=600
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF=$WORK/slurm.conf
    # The client commands find this cluster through SLURM_CONF (a site has its
    # slurm.conf in /etc/slurm or serves it configless), but the slurm-jobstep
    # plugin (0.6.1) drops every SLURM_* variable from the environment of the
    # srun it starts inside each job. A srun first on PATH puts it back; PATH
    # reaches the jobs through sbatch --export=ALL.
    mkdir -p "$WORK/bin"
    printf '#!/bin/sh\nSLURM_CONF=%q exec %q "$@"\n' "$SLURM_CONF" "$(command -v srun)" > "$WORK/bin/srun"
    chmod +x "$WORK/bin/srun"
    export PATH=$WORK/bin:$PATH
    slurmctld -D -c -f "$SLURM_CONF" >>"$WORK/log/slurmctld.log" 2>&1 &
    PIDS+=($!)
    wait_for 30 slurmctld scontrol ping
    slurmd -D -f "$SLURM_CONF" -N "$node" >>"$WORK/log/slurmd.log" 2>&1 &
    PIDS+=($!)
    wait_for 60 "the node" node_idle
    say "cluster up: $(sinfo -h -o '%P %D %T %c CPUs %m MB' | head -1) (SLURM_CONF=$SLURM_CONF)"
}

node_idle() {
    [ "$(sinfo -h -o %T | head -1)" = idle ]
}

# ----------------------------------------------------------------- 4./5. runs and checks
SNAKEMAKE=("$VENV/bin/python" -m snakemake -s "$ROOT/Snakefile")
RUN_TIMEOUT=${RUN_TIMEOUT:-900}  # seconds each run may take before the test fails

CHILD=""
run_logged() {  # run_logged LOG COMMAND...: at most RUN_TIMEOUT seconds, output to LOG
    # In the background, so that INT/TERM reach this script's traps at once
    # (bash would wait for a foreground command first).
    local log=$1 rc=0
    shift
    timeout "$RUN_TIMEOUT" "$@" >"$log" 2>&1 &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}

run_local() {
    say "local run: snakemake --cores 1 ${TARGETS[*]}"
    run_logged "$WORK/local.log" "${SNAKEMAKE[@]}" -d "$WORK/local" --cores 1 "${TARGETS[@]}" \
        || { tail -n 40 "$WORK/local.log" >&2; fail "the local run failed"; }
}

run_slurm() {
    # --jobs 2: this cluster has the CPUs of one small machine. The shorter first
    # status check and the kept job logs only make the test faster and checkable.
    say "SLURM run: snakemake --workflow-profile profiles/slurm --jobs 2 ${TARGETS[*]}"
    run_logged "$WORK/slurm.log" "${SNAKEMAKE[@]}" -d "$WORK/slurm" --workflow-profile "$ROOT/profiles/slurm" \
        --jobs 2 --slurm-init-seconds-before-status-checks 10 --slurm-keep-successful-logs "${TARGETS[@]}" \
        || { tail -n 60 "$WORK/slurm.log" >&2; fail "the SLURM run failed"; }
}

check_sbatch() {
    # Every job Snakemake ran, except its local rules, must have been submitted
    # with sbatch, and SLURM must report it COMPLETED.
    local log=$WORK/slurm.log finished local_jobs ids id state n_ids
    finished=$(grep -c '^Finished jobid' "$log" || true)
    local_jobs=$(grep -c '^localrule ' "$log" || true)
    ids=$(sed -n 's/.*has been submitted with SLURM jobid \([0-9][0-9]*\) .*/\1/p' "$log" | sort -un)
    n_ids=$(printf '%s\n' "$ids" | grep -c . || true)
    [ "$finished" -gt 0 ] || fail "the SLURM run finished no job (is the target already there?)"
    [ "$n_ids" -eq $((finished - local_jobs)) ] ||
        fail "$n_ids SLURM job ids for $((finished - local_jobs)) non-local jobs (see $log)"
    for id in $ids; do
        state=$(squeue -h --states=all -j "$id" -o %T 2>/dev/null | head -1)
        [ "$state" = COMPLETED ] || fail "SLURM job $id is '${state:-unknown}', not COMPLETED"
        [ -n "$(find "$WORK/slurm/.snakemake/slurm_logs" -name "$id.log" 2>/dev/null)" ] ||
            fail "no SLURM log of job $id under .snakemake/slurm_logs"
    done
    say "all $n_ids jobs went through sbatch and COMPLETED in SLURM (job ids: $(echo $ids)); $local_jobs local rule(s)"
}

check_equal() {
    local t
    for t in "${TARGETS[@]}"; do
        [ -e "$WORK/slurm/$t" ] || fail "the SLURM run did not make $t"
        cmp -s "$WORK/local/$t" "$WORK/slurm/$t" || {
            diff "$WORK/local/$t" "$WORK/slurm/$t" | head -n 20 >&2
            fail "$t differs between the local and the SLURM run"
        }
    done
    say "every target is byte-equal to the local run's: ${TARGETS[*]}"
}

# ----------------------------------------------------------------- main
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tadt-slurm.XXXXXX")
trap cleanup EXIT
trap 'say "interrupted: stopping the cluster"; exit 130' INT
trap 'say "terminated: stopping the cluster"; exit 143' TERM
install_plugin
dry_run_paper
install_slurm
start_cluster
t0=$SECONDS
run_local
t1=$SECONDS
run_slurm
t2=$SECONDS
check_sbatch
check_equal
say "PASSED (local run $((t1 - t0)) s, SLURM run $((t2 - t1)) s, whole script $SECONDS s)"
