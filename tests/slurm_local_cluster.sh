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
#   6. the time-limit chain, in the background from step 4 on: one training
#      that needs about CHAIN_SECONDS (default 180) of this machine's time, its
#      length measured first, runs through the profile with a 1-minute
#      wall-time limit (--set-resources train:runtime=1) while the same training
#      runs locally; SLURM stops each job at the limit with SIGTERM, the
#      trainer saves its state and exits 75, the job ends as TIMEOUT and
#      Snakemake resubmits it (train.max_resubmissions) until the run is
#      done. Checks: more than one
#      job, each but the last TIMEOUT with the 1-minute limit, the last
#      COMPLETED, the run resumed from the saved step, its CSV log whole, and
#      the final checkpoint the same training state as the local run's, bit for
#      bit (harness.training.resume.state_differences);
#   7. cancels what is left of its jobs, stops the daemons it started (by PID)
#      and removes the temporary folder, also when interrupted or failing.
#
# Default targets: the bicubic floor and one short training + evaluation on
# the DIV2K stand-in, and the FLOPs of the EDSR-baseline extractor (embedded
# default, 4 jobs). Exit status: 0 passed, 1 failed, 77 cannot run here (no
# apt-get and SLURM missing, not root, ...), with the reason on stderr.
#
# Environment: VENV (the project's virtual environment, default .venv),
# KEEP=1 keeps the temporary folder (logs, both runs) for inspection,
# RUN_TIMEOUT (seconds, default 900) bounds each run of steps 4 and 5,
# CHAIN_TIMEOUT (default 2400) those of step 6, CHAIN=0 skips step 6,
# CHAIN_SECONDS (default 180) sets the length of its training.
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
    # Runs still going (interrupted): TERM makes Snakemake cancel its SLURM jobs.
    for pid in "${CHILDREN[@]}"; do
        kill -0 "$pid" 2>/dev/null || continue
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null  # timeout's process group
        wait "$pid" 2>/dev/null || true
    done
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
# squeue must still report a job this long after it ended: profiles/slurm
# queries job states with squeue, there being no accounting database, and the
# time-limit chain's checks read the states of its first jobs at the end.
MinJobAge=1800
# At a job's time limit SLURM sends SIGTERM to its processes and SIGKILL
# KillWait seconds later: the trainer saves its state in between (the
# defaults, written out because the time-limit chain depends on them; slurmctld
# checks the limits about every 30 s, so a job with a 1-minute limit is stopped
# after 60-90 s; OverTimeLimit would add minutes of grace on top).
KillWait=30
OverTimeLimit=0
# One CPU more than the machine has: the time-limit chain's job runs alongside
# the two of the other SLURM run instead of waiting for one of them to end
# (config_overrides: slurmd takes the node's size from here, not the hardware).
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$host CPUs=$((cpus + 1)) RealMemory=$mem_mb State=UNKNOWN
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

CHILDREN=()  # the runs in flight (timeout's PIDs), for the clean-up
start_logged() {  # start_logged LOG COMMAND...: in the background, at most RUN_TIMEOUT s; sets STARTED
    local log=$1
    shift
    timeout "$RUN_TIMEOUT" "$@" >"$log" 2>&1 &
    STARTED=$!
    CHILDREN+=("$STARTED")
}

run_logged() {  # run_logged LOG COMMAND...: at most RUN_TIMEOUT seconds, output to LOG
    # In the background, so that INT/TERM reach this script's traps at once
    # (bash would wait for a foreground command first).
    local rc=0
    start_logged "$@"
    wait "$STARTED" || rc=$?
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

# ----------------------------------------------------------------- 6. the time-limit chain
CHAIN=${CHAIN:-1}
CHAIN_SECONDS=${CHAIN_SECONDS:-180}   # training time the chain's run needs here
CHAIN_TIMEOUT=${CHAIN_TIMEOUT:-2400}  # seconds the chain's runs may take (it waits for SLURM a lot)
CHAIN_RUN=edsr-baseline-liif
CHAIN_TARGET=results/checkpoints/$CHAIN_RUN.pth
PREEMPTED_EXIT=75                     # harness.training.preemption.PREEMPTED_EXIT
HARNESS_PY=(env "PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python")

chain_config() {  # chain_config FILE ITERATIONS LOG_EVERY: .test/config.yaml, longer
    "${HARNESS_PY[@]}" - "$ROOT/.test/config.yaml" "$@" <<'PY'
import sys

import yaml

src, dst, iterations, log_every = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open(src) as fh:
    cfg = yaml.safe_load(fh)
# No periodic checkpoint: a partial file can only come from a SIGTERM. A quiet
# machine needs 3-5 jobs; each job's start (two Snakemakes and the trainer, each
# importing torch) takes 10-45 s of its minute, so a busy one needs up to 10-15.
cfg["train"].update(iterations=iterations, milestones=[iterations // 2], log_every=log_every,
                    checkpoint_every=10**9, max_resubmissions=20)
with open(dst, "w") as fh:
    yaml.safe_dump(cfg, fh)
PY
}

chain_setup() {
    # How many steps take CHAIN_SECONDS here: a 300-step run, timed by its own log.
    local dir=$WORK/chain-calibration per_step
    mkdir -p "$dir"
    chain_config "$dir/config.yaml" 300 50
    cd "$dir"  # the configuration's results/ and cache are relative
    run_logged "$dir/train.log" "${HARNESS_PY[@]}" -m harness train --config config.yaml \
        --run "$CHAIN_RUN" --out ck.pth --log log.csv --threads 1 --progress none ||
        { tail -n 20 "$dir/train.log" >&2; fail "the calibration training failed"; }
    cd "$ROOT"
    per_step=$(awk -F, 'NR == 2 {s0 = $9; k0 = $1} END {printf "%.6f", ($9 - s0) / ($1 - k0)}' "$dir/log.csv")
    CHAIN_STEPS=$(awk -v s="$CHAIN_SECONDS" -v p="$per_step" 'BEGIN {print int(s / p / 100 + 1) * 100}')
    chain_config "$WORK/chain.yaml" "$CHAIN_STEPS" $((CHAIN_STEPS / 50))
    say "time-limit chain: $CHAIN_RUN for $CHAIN_STEPS steps (${per_step} s/step here: about ${CHAIN_SECONDS} s)"
}

chain_start() {
    # The SLURM run with a 1-minute limit and the same training locally, both in
    # the background (alongside the runs of steps 4 and 5: they mostly wait).
    say "time-limit chain: snakemake --workflow-profile profiles/slurm --set-resources train:runtime=1 $CHAIN_TARGET (and the same locally), in the background"
    RUN_TIMEOUT=$CHAIN_TIMEOUT start_logged "$WORK/chain-local.log" "${SNAKEMAKE[@]}" -d "$WORK/chain-local" --cores 1 "$CHAIN_TARGET" \
        --configfile "$WORK/chain.yaml"
    CHAIN_LOCAL_PID=$STARTED
    RUN_TIMEOUT=$CHAIN_TIMEOUT start_logged "$WORK/chain-slurm.log" "${SNAKEMAKE[@]}" -d "$WORK/chain-slurm" --workflow-profile "$ROOT/profiles/slurm" \
        --jobs 1 --set-resources train:runtime=1 --slurm-init-seconds-before-status-checks 10 \
        --slurm-keep-successful-logs "$CHAIN_TARGET" --configfile "$WORK/chain.yaml"
    CHAIN_SLURM_PID=$STARTED
}

chain_wait() {
    wait "$CHAIN_SLURM_PID" || { tail -n 60 "$WORK/chain-slurm.log" >&2; fail "the time-limit chain's SLURM run failed"; }
    wait "$CHAIN_LOCAL_PID" || { tail -n 40 "$WORK/chain-local.log" >&2; fail "the time-limit chain's local run failed"; }
}

check_chain() {
    local log=$WORK/chain-slurm.log txt=$WORK/chain-slurm/results/logs/train/$CHAIN_RUN.log
    local ids id n last state limit timeouts resumed saved rows every=$((CHAIN_STEPS / 50))
    ids=$(sed -n 's/.*has been submitted with SLURM jobid \([0-9][0-9]*\) .*/\1/p' "$log")
    n=$(printf '%s\n' "$ids" | grep -c . || true)
    [ "$n" -ge 2 ] || fail "the chain's training took $n SLURM job(s): it fitted in one (raise CHAIN_SECONDS)"
    last=$(printf '%s\n' "$ids" | tail -n 1)
    timeouts=$(grep -c "SLURM status is: 'TIMEOUT'" "$log" || true)
    [ "$timeouts" -eq $((n - 1)) ] || fail "$timeouts of the chain's $n jobs reported TIMEOUT, not $((n - 1)) (see $log)"
    [ "$(grep -c '^Trying to restart job' "$log" || true)" -eq $((n - 1)) ] ||
        fail "Snakemake did not resubmit each stopped job (see $log)"
    resumed=$(sed -n "s/.*resuming from .*\.partial at step \([0-9]*\)\/$CHAIN_STEPS.*/\1/p" "$txt" | tail -n 1)
    [ -n "$resumed" ] && [ "$resumed" -gt 0 ] || fail "the last job did not resume from a saved step (see $txt)"
    # Each stopped job's trainer saved its state and exited 75, unless SIGTERM came
    # before it started (nothing to save) or as its run completed (the next job
    # then found the kept final state); the first must be there at least once.
    saved=$(grep -l "exit status $PREEMPTED_EXIT" $(for id in $ids; do
        find "$WORK/chain-slurm/.snakemake/slurm_logs" -name "$id.log"; done) | wc -l)
    for id in $ids; do
        state=$(squeue -h --states=all -j "$id" -o %T 2>/dev/null | head -1)
        limit=$(squeue -h --states=all -j "$id" -o %l 2>/dev/null | head -1)
        [ "$limit" = 1:00 ] || fail "SLURM job $id has the time limit '${limit:-unknown}', not 1:00"
        if [ "$id" = "$last" ]; then
            [ "$state" = COMPLETED ] || fail "the chain's last job $id is '${state:-unknown}', not COMPLETED"
        else
            [ "$state" = TIMEOUT ] || fail "the chain's job $id is '${state:-unknown}', not TIMEOUT"
        fi
    done
    [ "$saved" -ge 1 ] || fail "no trainer of the chain exited with status $PREEMPTED_EXIT on SIGTERM (see the SLURM logs)"
    rows=$(awk -F, 'NR > 1 {print $1}' "$WORK/chain-slurm/results/logs/train/$CHAIN_RUN.csv" | tr '\n' ' ')
    [ "$rows" = "$(seq "$every" "$every" "$CHAIN_STEPS" | tr '\n' ' ')" ] ||
        fail "the chain's CSV log does not hold every row once (steps: $rows)"
    "${HARNESS_PY[@]}" - "$WORK/chain-local/$CHAIN_TARGET" "$WORK/chain-slurm/$CHAIN_TARGET" <<'PY' ||
import sys

from harness.checkpoint import load_checkpoint
from harness.training.resume import state_differences

local, slurm = (load_checkpoint(p) for p in sys.argv[1:3])
diff = state_differences(local, slurm)
if diff:
    sys.exit(f"{len(diff)} differences, e.g. {', '.join(diff[:5])}")
PY
        fail "the chain's final checkpoint is not the local run's training state"
    say "time-limit chain: $n SLURM jobs of 1 minute ($(echo $ids)): $((n - 1)) stopped at the limit (TIMEOUT) and resubmitted, $saved of them with the trainer's state saved on SIGTERM (exit $PREEMPTED_EXIT); the last resumed at step $resumed/$CHAIN_STEPS and COMPLETED; final checkpoint bit-identical to the local run's (weights, optimiser, scheduler, RNG)"
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
if [ "$CHAIN" != 0 ]; then
    chain_setup
    tc=$SECONDS
    chain_start
fi
t0=$SECONDS
run_local
t1=$SECONDS
run_slurm
t2=$SECONDS
check_sbatch
check_equal
chain_note="time-limit chain skipped (CHAIN=0)"
if [ "$CHAIN" != 0 ]; then
    chain_wait
    chain_note="time-limit chain $((SECONDS - tc)) s (alongside them)"
    check_chain
fi
say "PASSED (local run $((t1 - t0)) s, SLURM run $((t2 - t1)) s, $chain_note, whole script $SECONDS s)"
