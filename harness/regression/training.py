"""The statistical layer: what must retrain, against tolerances derived from measured spreads.

Training at the embedded default's high learning rate is chaotic: another CPU
kernel (instruction set, thread count, BLAS build) changes the last bits of the
first steps, and a few hundred steps amplify that to tenths of a dB. So the
statistics compared here are ones whose spread is measured:

- ``quick`` (run by the test suite): the mean training loss over the first
  :data:`QUICK_STEPS` steps of EDSR-baseline-LIIF with the embedded default (the
  workflow's ``train`` job: same verb, same config slice, seed 0, one thread), and
  the mean loss (Eq. 5), L1 and ``beta`` of :data:`QUICK_STEPS` fine-tuning steps of
  the regression TADT-LIIF from the committed Baseline-LIIF checkpoint. Over so few
  steps the trajectories of different CPU kernels have not yet diverged (their
  spread is measured under other instruction sets, :data:`ISA_SETTINGS`), while any
  change of data, loss, optimiser or learning rate moves them at once.
- ``full`` (``make check-regression``): the PSNR of EDSR-baseline-LIIF trained with
  the whole embedded schedule, averaged over :data:`FULL_SEEDS` seeds; its spread is
  the seed-to-seed spread (which bounds what another machine can do to one seed).

Each statistic's baseline row holds its value, its measured ``spread`` (standard
deviation of the compared quantity) and ``tolerance`` = :data:`K_SIGMA` x spread.
"""
from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path
from typing import Callable, Iterable, Sequence

from harness.regression.cells import Rule
from harness.regression.inference import REGRESSION_DIR, checkpoint_of, regression_config

BASELINE = REGRESSION_DIR / "training.csv"
QUICK_STEPS = 20
QUICK_RUN = "edsr-baseline-liif"
TADT_RUN, TADT_INIT = "tadt-liif", "baseline-liif"
FULL_RUN = "edsr-baseline-liif"
FULL_SEEDS = 5
FULL_SCALES = (2.0, 4.0, 12.0)
K_SIGMA = 6.0
LAYERS = ("training-quick", "training-full")

#: Other machines on this one: what each setting tells PyTorch, oneDNN and MKL to use
#: (``check-regression --measure-spread`` runs the guard under each, and with 2 threads).
ISA_SETTINGS = {
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
    "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "onednn-avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "mkl-avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "avx2-machine": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "sse-machine": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}


# --------------------------------------------------------------------------- training runs

def _train(cfg: dict, run: str, workdir: Path, steps: int | None, seed: int, init: Path | None = None,
           threads: int = 1) -> tuple[Path, list[dict]]:
    """Train ``run`` as the workflow's ``train`` job does (the verb, the job's config slice),
    with ``steps`` steps (None: the run's own schedule) and ``seed``; returns (checkpoint, log rows)."""
    from harness.cli import main
    from harness.errors import HarnessError
    from harness.experiments import job_config

    job = job_config(cfg, "train", run)
    job["data"] = {**job["data"], "cache": str(workdir / "cache")}
    job["train"] = {**job["train"], "seed": seed, "log_every": 1}
    if steps is not None:
        over = dict(job["train"].get("overrides") or {})
        over[run] = {**over.get(run, {}), "iterations": steps}
        job["train"]["overrides"] = over
    tag = f"{run}-seed{seed}-{steps or 'all'}"
    ckpt, log = workdir / f"{tag}.pth", workdir / f"{tag}.csv"
    argv = ["train", "--config", json.dumps(job), "--run", run, "--out", str(ckpt), "--log", str(log),
            "--threads", str(threads), "--progress", "none"]
    if init is not None:
        argv += ["--init", str(init)]
    if main(argv) != 0:
        raise HarnessError(f"training {run} (seed {seed}) for the regression check failed")
    with log.open(newline="") as fh:
        return ckpt, list(csv.DictReader(fh))


def _mean(rows: Sequence[dict], column: str) -> float:
    return math.fsum(float(r[column]) for r in rows) / len(rows)


def quick_values(workdir: Path, threads: int = 1, runs: Sequence[str] = (QUICK_RUN, TADT_RUN)
                 ) -> dict[str, float]:
    """The quick statistics (see the module docstring) of ``runs`` (both by default)."""
    from harness.config import load_config

    workdir = Path(workdir)
    out = {}
    if QUICK_RUN in runs:
        _, rows = _train(load_config(), QUICK_RUN, workdir, QUICK_STEPS, 0, threads=threads)
        out[f"quick {QUICK_RUN} loss mean steps 1-{QUICK_STEPS}"] = _mean(rows, "l1")
    if TADT_RUN in runs:
        _, rows = _train(regression_config(), TADT_RUN, workdir, QUICK_STEPS, 0, init=checkpoint_of(TADT_INIT),
                         threads=threads)
        for column in ("loss", "l1", "beta_mean"):
            out[f"quick {TADT_RUN} (regression widths) {column} mean steps 1-{QUICK_STEPS}"] = _mean(rows, column)
    return out


def full_seed_values(workdir: Path, seeds: Iterable[int], threads: int = 1,
                     on_seed: Callable[[int, dict], None] | None = None) -> dict[int, dict[str, float]]:
    """Per seed: PSNR of :data:`FULL_RUN` trained with the embedded schedule, on Table 1's
    first dataset at :data:`FULL_SCALES` (the ``evaluate`` verb with the workflow's slice)."""
    from harness.cli import main
    from harness.config import load_config
    from harness.errors import HarnessError
    from harness.experiments import job_config
    from harness.scales import format_scale
    from harness.tables import mean_psnr, read_evals

    workdir = Path(workdir)
    cfg = load_config()
    dataset = cfg["experiments"]["tables"]["table1"]["datasets"][0]
    job = job_config(cfg, "evaluate")
    job["data"] = {**job["data"], "cache": str(workdir / "cache")}
    out = {}
    for seed in seeds:
        ckpt, _ = _train(cfg, FULL_RUN, workdir, None, seed, threads=threads)
        csv_path = workdir / f"{FULL_RUN}-seed{seed}-eval.csv"
        if main(["evaluate", "--config", json.dumps(job), "--checkpoint", str(ckpt), "--dataset", dataset,
                 "--scales", ",".join(format_scale(s) for s in FULL_SCALES), "--run", FULL_RUN,
                 "--out", str(csv_path), "--progress", "none"]) != 0:
            raise HarnessError(f"evaluating {FULL_RUN} (seed {seed}) for the regression check failed")
        evals = read_evals([csv_path])
        out[seed] = {format_scale(s): mean_psnr(evals, FULL_RUN, dataset, s) for s in FULL_SCALES}
        if on_seed is not None:
            on_seed(seed, out[seed])
    return out


def full_name(scale: str) -> str:
    return f"full {FULL_RUN} psnr x{scale} mean over seeds 0-{FULL_SEEDS - 1}"


def full_values(per_seed: dict[int, dict[str, float]]) -> dict[str, float]:
    scales = next(iter(per_seed.values()))
    return {full_name(s): math.fsum(v[s] for v in per_seed.values()) / len(per_seed) for s in scales}


def training_values(layers: Sequence[str], workdir: Path, threads: int = 1, log: Callable[[str], None] = print,
                    quick_runs: Sequence[str] = (QUICK_RUN, TADT_RUN)) -> dict[str, float]:
    out = {}
    if "training-quick" in layers:
        out.update(quick_values(Path(workdir) / "quick", threads, quick_runs))
    if "training-full" in layers:
        per_seed = full_seed_values(Path(workdir) / "full", range(FULL_SEEDS), threads,
                                    lambda s, v: log(f"  seed {s}: " + ", ".join(f"x{k} {p:.4f} dB" for k, p in v.items())))
        out.update(full_values(per_seed))
    return out


# --------------------------------------------------------------------------- baseline

def read_baseline(path: Path = BASELINE) -> dict[str, dict]:
    """``{statistic: {"value", "spread", "tolerance"}}`` of the training baseline."""
    from harness.errors import HarnessError

    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"training baseline {path} does not exist (see tests/regression/README.md)")
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    out = {}
    for r in csv.DictReader(lines):
        try:
            out[r["statistic"]] = {k: float(r[k]) for k in ("value", "spread", "tolerance")}
        except (KeyError, TypeError, ValueError):
            raise HarnessError(f"training baseline {path}: malformed row {r}") from None
    return out


def rule_for(baseline: dict[str, dict]) -> Callable[[tuple], Rule]:
    return lambda key: Rule("abs", baseline[key[0]]["tolerance"]) if key[0] in baseline else Rule("exact")


def log_resolution(value: float) -> float:
    """Half a unit of the 6th significant digit: the training log's rounding of one value."""
    return 0.5 * 10 ** (math.floor(math.log10(abs(value))) - 5) if value else 1e-12


HEADER = """\
Statistical layer of the regression guard (harness/regression/training.py), written by
  python -m harness check-regression --write-baseline --layers training-quick (training-full)
value: the statistic on the machine below; spread: the measured standard deviation of the
compared quantity ({quick_how}; {full_how}); tolerance = {k:g} x spread.
See tests/regression/README.md. Regenerate only for an intended change to training.
machine: {machine}
"""


def write_baseline(values: dict[str, float], spreads: dict[str, float], path: Path = BASELINE,
                   machine: str = "") -> None:
    """Write (or update: rows of other statistics are kept) the training baseline."""
    from harness.io import atomic_path

    rows = read_baseline(path) if Path(path).is_file() else {}
    for stat, value in values.items():
        rows[stat] = {"value": value, "spread": float(f"{spreads[stat]:.3g}")}  # the spread as written
    for row in rows.values():
        row["tolerance"] = K_SIGMA * row["spread"]
    header = HEADER.format(k=K_SIGMA, machine=machine,
                           quick_how="quick: RMS deviation over the instruction-set settings "
                                     f"{', '.join(ISA_SETTINGS)} and 2 threads, at least the rounding of "
                                     "one logged value",
                           full_how=f"full: seed standard deviation x sqrt(2/{FULL_SEEDS}), the spread "
                                    f"of the difference of two {FULL_SEEDS}-seed means")
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="") as fh:
            for line in header.strip().splitlines():
                fh.write(f"# {line}".rstrip() + "\n")
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["statistic", "value", "spread", "tolerance"])
            for stat in sorted(rows):
                r = rows[stat]
                w.writerow([stat, f"{r['value']:.9g}", f"{r['spread']:.3g}", f"{r['tolerance']:.4g}"])


# --------------------------------------------------------------------------- spreads

def quick_spreads(deviations: dict[str, dict[str, float]], reference: dict[str, float]) -> dict[str, float]:
    """RMS over settings of each quick statistic's deviation from ``reference``
    (``deviations``: setting -> statistic -> value - reference); at least the rounding of one
    logged value (:func:`log_resolution`), below which no deviation can be measured."""
    out = {}
    for k, ref in reference.items():
        devs = [d[k] for d in deviations.values()]
        rms = math.sqrt(math.fsum(d * d for d in devs) / len(devs))
        out[k] = max(rms, log_resolution(ref))
    return out


def full_spreads(per_seed: dict[int, dict[str, float]]) -> dict[str, float]:
    """Seed standard deviation x sqrt(2 / FULL_SEEDS) of each scale's PSNR."""
    scales = next(iter(per_seed.values()))
    return {full_name(s): statistics.stdev([v[s] for v in per_seed.values()]) * math.sqrt(2 / FULL_SEEDS)
            for s in scales}
