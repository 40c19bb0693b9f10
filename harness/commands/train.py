"""``python -m harness train``: train one run of the configuration."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import HarnessError

HELP = "train one run (resumable; multi-GPU through torchrun)"
DESCRIPTION = """\
Train one run of the configuration and write its checkpoint to --out.

Runs are {extractor}-{upsampler} (e.g. edsr-baseline-liif, tadt-lte) and the
TADT-LIIF ablations tadt-liif-beta0.5, tadt-liif-beta0.25s, tadt-liif-nolbeta.
A tadt run fine-tunes the Baseline of the same upsampler: --init names that
checkpoint (default: <results>/checkpoints/baseline-<upsampler>.pth).

Resumable: a checkpoint is written atomically to <out>.partial every
train.checkpoint_every steps; running the same command again continues from
it (weights, optimiser, scheduler, step and RNG states), ending bitwise
identical on CPU to an uninterrupted run. --out appears only when the run is
complete. A training step whose loss or weights are not finite stops the run
with one line; the last checkpoint on disk then is the last finite state.

Already done: if --out already holds this run, complete (same run spec and,
for tadt runs, the same init file), nothing is trained and a note says so;
--force trains it again (the old file stays until the new one is complete).
An --out written for another run spec is trained again and replaced. The
workflow (rules/train.smk) needs no --force: Snakemake deletes a job's outputs
before it runs the job.

Stopped by a batch system: on SIGTERM (SLURM's time limit or preemption, then
SIGKILL after the site's KillWait) the run finishes its current step, writes
the state of that step to <out>.partial, logs one line and exits with status
75; the same command (or the workflow's resubmission, train.max_resubmissions)
continues from it. Under torchrun every process stops after the same step.
--attempt N (the workflow passes Snakemake's attempt number) keeps a completed
run's state as <out>.partial too, a hard link to --out: a job that completes as
its time limit strikes is counted as failed and its --out deleted, and the next
attempt writes it again from there; attempt 1 trains afresh instead.

One trainer per run: while a run trains it holds an exclusive lock on
<out>.lock; a second 'train' of the same --out stops at once, naming the PID
and host of the first. The lock ends with its process, however it ends, so a
killed run can simply be started again.

Several GPUs: torchrun --standalone --nproc_per_node N -m harness -- train ...
runs DistributedDataParallel (the "--" is needed: without it torchrun takes
--run and --log for abbreviations of its own options). train.batch_size is the
GLOBAL batch, split evenly across the N processes (it must be divisible by N).
Only rank 0 writes the checkpoint and the log.

Example:
  python -m harness train --config config/default.yaml --run edsr-baseline-liif \\
      --out results/checkpoints/edsr-baseline-liif.pth \\
      --log results/logs/train/edsr-baseline-liif.csv
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", metavar="CFG.yaml",
                        help="configuration file(s); later ones override earlier ones "
                             "(default: config/default.yaml)")
    parser.add_argument("--run", required=True, help="run name, e.g. edsr-baseline-liif")
    parser.add_argument("--out", metavar="CKPT.pth",
                        help="final checkpoint (default: <results>/checkpoints/RUN.pth)")
    parser.add_argument("--init", metavar="CKPT.pth",
                        help="initial weights (tadt runs: the Baseline checkpoint to fine-tune)")
    parser.add_argument("--log", metavar="LOG.csv",
                        help="per-step CSV log (default: <results>/logs/train/RUN.csv)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"],
                        help="where to train (default: the config's 'device')")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch CPU threads (default: train.threads)")
    parser.add_argument("--force", action="store_true",
                        help="train even if --out already holds this run, complete")
    parser.add_argument("--attempt", type=int, metavar="N",
                        help="which submission of this workflow job this is (see above)")
    parser.add_argument("--progress", choices=["auto", "bar", "plain", "none"], default="auto",
                        help="tqdm bar (auto: when stderr is a terminal), plain lines every "
                             "train.log_every steps, or nothing")


def run(args: argparse.Namespace) -> int:
    from harness.training.preemption import PREEMPTED_EXIT, Preempted, exit_on_stop_signal

    exit_on_stop_signal()  # a SIGTERM before the run has started: exit 75 at once, nothing to save
    from harness.config import DEFAULT_CONFIG, checkpoint_path, load_config, results_dir, run_spec

    cfg = load_config(*(args.config or [DEFAULT_CONFIG]))
    spec = run_spec(cfg, args.run)
    if args.threads is not None and args.threads < 1:
        raise HarnessError("--threads must be at least 1")
    if args.attempt is not None and args.attempt < 1:
        raise HarnessError("--attempt must be at least 1")
    out = Path(args.out) if args.out else checkpoint_path(cfg, spec.name)
    log = Path(args.log) if args.log else results_dir(cfg) / "logs" / "train" / f"{spec.name}.csv"
    from harness.io import check_writable
    check_writable(out, "--out checkpoint")
    check_writable(log, "--log")

    from harness.training import train_run

    try:
        train_run(cfg, spec, out, init=args.init, log=log, device=args.device, threads=args.threads,
                  progress=args.progress, skip_complete=not args.force, attempt=args.attempt)
    except Preempted:  # the state is saved and the trainer has said so
        return PREEMPTED_EXIT
    return 0
