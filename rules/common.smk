# Helpers shared by the workflow's modules: the validated configuration, the
# jobs each table and figure needs (from the experiment manifest,
# config/experiments.yaml, through harness.experiments), and the resources of
# each kind of job.
#
# The configuration is validated once, here, against config/schema.yaml
# (harness.config.load_config), so a wrong key, type or value stops the
# workflow before any job starts, with the key's name. Without --configfile
# the embedded default (config/default.yaml) is used; a config file that
# names its `profile` (config/paper.yaml) stands alone, a partial one (or
# --config key=value) is merged over the embedded default.
#
# Parsing this file writes nothing. Each job gets the slice of the configuration
# it depends on (harness.experiments.job_config) as a param, passed to its verb
# on the command line: a job reads exactly the settings it was scheduled with,
# and changing a setting reruns exactly the jobs whose slice holds it
# (Snakemake's params rerun trigger).

import re
import sys
from pathlib import Path

from harness import experiments as X
from harness.config import checkpoint_path, load_config, run_names, run_spec
from harness.errors import HarnessError
from harness.scales import format_scale
from snakemake.exceptions import WorkflowError


def _validated(raw):
    try:
        return load_config(dict(raw))
    except HarnessError as exc:
        # One line, the key's name first; Snakemake stops before building the DAG.
        raise WorkflowError(f"invalid configuration: {exc}") from None


def _released(cfg):
    """Profile released: the runs whose <run>.pth is in the folder (names only; harness.released)."""
    from harness.released import with_present

    try:
        return with_present(cfg)
    except HarnessError as exc:
        raise WorkflowError(f"released checkpoints: {exc}") from None


CFG = _validated(config)
RELEASED = CFG["profile"] == "released"
if RELEASED:
    CFG = _released(CFG)
RESULTS = str(Path(CFG["results"]))
PROFILE = CFG["profile"]
PAPER_SCALE = PROFILE in ("paper", "released")
ON_GPU = CFG["device"] != "cpu"

# Verbs run with Snakemake's own interpreter, with the project on PYTHONPATH, so
# the workflow needs no PATH setup and works from any working directory (-d).
PROJECT = Path(workflow.basedir).resolve()
PY = f'PYTHONPATH="{PROJECT}${{PYTHONPATH:+:$PYTHONPATH}}" "{sys.executable}"'
HARNESS = f"{PY} -m harness"

# --------------------------------------------------------------------------- runs

RUNS = run_names(CFG)
EVAL_NEEDS = X.eval_needs(CFG)     # (run or bicubic, dataset) -> scales
FLOPS_NEEDS = X.flops_needs(CFG)   # (extractor or routed run, dataset) -> scales
TABLE_NAMES = list(CFG["experiments"]["tables"])
FIGURE_NAMES = list(CFG["experiments"]["figures"])
STATIC_EXTRACTORS = sorted({n for n, _ in FLOPS_NEEDS if n not in RUNS})
ROUTED_RUNS = sorted({n for n, _ in FLOPS_NEEDS if n in RUNS})


def format_scales(scales):
    """2,3,4 or 2,2.5,3: what the verbs take for --scales."""
    return ",".join(format_scale(s) for s in scales)


def spec(run):
    return run_spec(CFG, run)


def job_config(kind, *names):
    """A param: the config slice of one job (see the header)."""
    return X.job_config_text(CFG, kind, *names)


def eval_csv(run, dataset):
    return f"{RESULTS}/eval/{run}/{dataset}.csv"


def flops_csv(name, dataset):
    return f"{RESULTS}/flops/{name}/{dataset}.csv"


def ckpt(run):
    return str(checkpoint_path(CFG, run))


def _alternation(names):
    return "|".join(re.escape(n) for n in sorted(set(names), key=len, reverse=True)) or "(?!)"


DATASETS = sorted({ds for _, ds in EVAL_NEEDS} | {ds for _, ds in FLOPS_NEEDS})
RUN_RE = _alternation(RUNS)
# The runs this workflow trains (and evaluates from results/checkpoints/), and those whose
# released file it evaluates (profile released): never both.
TRAINED_RE = _alternation([] if RELEASED else RUNS)
RELEASED_RE = _alternation(RUNS if RELEASED else [])
DATASET_RE = _alternation(DATASETS)
STATIC_RE = _alternation(STATIC_EXTRACTORS)
ROUTED_RE = _alternation(ROUTED_RUNS)
TABLE_RE = _alternation(TABLE_NAMES)
FIGURE_RE = _alternation(FIGURE_NAMES)


# --------------------------------------------------------------------------- resources
# Scheduling estimates a cluster needs up front. Threads and GPUs come from the
# config (train.threads, train.gpus, per-run overrides, device); memory and
# wall time (runtime, minutes) are estimates from the profile and the schedule.
# A job that needs no GPU has no `gpu` resource at all (None drops it), so no
# `--gpus=0` reaches sbatch. Site specifics (account, partition, a longer wall
# time) belong in a profile's set-resources (profiles/slurm/config.yaml),
# which wins over these.

# Seconds per iteration (batch 16) on one GPU at the paper's widths, from the
# published training times for 1M iterations: EDSR-LTE ~21 GPU-hours, RDN-LTE
# ~82 h x 2 GPUs, SwinIR-LTE ~75 h x 4 GPUs at batch 32; RCAN taken like RDN and
# the Baseline/TADT backbone like SwinIR.
_GPU_SEC_PER_ITER = {"edsr-baseline": 0.08, "rdn": 0.3, "rcan": 0.3, "swinir": 0.55,
                     "baseline": 0.55, "tadt": 0.55,
                     # not published: scaled by Table 3's FLOPs at x3, NLSA 1.93x RDN's
                     # (0.58, rounded up), CAT-R-2 1.03x SwinIR's
                     "nlsa": 0.6, "cat-r-2": 0.57}
_CPU_SEC_PER_ITER = 3.0  # embedded widths on one or two cores, generous


def gpus_for(run):
    return int(spec(run).train.get("gpus", 0)) if ON_GPU else 0


def threads_for(run):
    return int(spec(run).train.get("threads", 1))


def train_runtime(run):
    """Wall-time estimate in minutes (x1.5 margin, at least 30 min)."""
    s = spec(run)
    iters = int(s.train["iterations"])
    g = gpus_for(run)
    batch = int(s.train.get("batch_size", 16)) / 16
    per_iter = _GPU_SEC_PER_ITER.get(s.extractor, 0.55) * batch / g if g else _CPU_SEC_PER_ITER
    sec = iters * per_iter
    return max(30, int(1.5 * sec / 60) + 1)


def train_mem(run):
    return 32000 if PAPER_SCALE else 4000


EVAL_THREADS = int(CFG["train"].get("threads", 1))
EVAL_GPUS = 1 if ON_GPU and int(CFG["train"].get("gpus", 0)) > 0 else 0
EVAL_MEM = 32000 if PAPER_SCALE else 4000
EVAL_RUNTIME = 600 if PAPER_SCALE else 30
FLOPS_MEM = 16000 if PAPER_SCALE else 2000
FLOPS_RUNTIME = 600 if PAPER_SCALE else 30
SMALL = {"mem_mb": 2000, "runtime": 10}


# --------------------------------------------------------------------------- input functions
# (kept in this module so that the other modules hold nothing but rules)


def train_inputs(wildcards):
    init = spec(wildcards.run).init_from
    return {"init": ckpt(init)} if init else {}


def train_launcher(wildcards):
    g = gpus_for(wildcards.run)
    if g > 1:  # DDP: torchrun starts one process per GPU (single node)
        return f"{PY} -m torch.distributed.run --standalone --nproc_per_node {g} -m harness --"
    return HARNESS


def train_init_arg(wildcards, input):
    return f"--init {input.init}" if "init" in input.keys() else ""


def _scales(key):
    if key not in EVAL_NEEDS:
        raise WorkflowError(f"no table or figure evaluates {key[0]} on {key[1]}")
    return format_scales(EVAL_NEEDS[key])


def eval_scales(wildcards):
    return _scales((wildcards.run, wildcards.dataset))


def bicubic_scales(wildcards):
    return _scales((X.BICUBIC, wildcards.dataset))


def flops_scales(name):
    def scales(wildcards):
        return format_scales(FLOPS_NEEDS[(getattr(wildcards, name), wildcards.dataset)])

    return scales


def _named(pairs):
    """NAME=PATH arguments (the flops CSVs and checkpoints carry no name column)."""
    return " ".join(f"{name}={path}" for name, path in pairs)


def table_inputs(wildcards):
    evals, flops = X.table_inputs(CFG, wildcards.name)
    return {"evals": [eval_csv(r, ds) for r, ds in evals],
            "flops": [flops_csv(n, ds) for n, ds in flops]}


def _verb_args(evals=(), flops=(), runs=(), tables=()):
    """The input options of the table and figure verbs, as the manifest names them."""
    parts = [f"--{name} {RESULTS}/{name}.csv" for name in tables]
    if evals:
        parts.append(f"--eval {' '.join(eval_csv(r, ds) for r, ds in evals)}")
    if flops:
        parts.append(f"--flops {_named((n, flops_csv(n, ds)) for n, ds in flops)}")
    if runs:
        parts.append(f"--checkpoint {_named((r, ckpt(r)) for r in runs)}")
    return "".join(f" {p}" for p in parts)


def table_args(wildcards):
    evals, flops = X.table_inputs(CFG, wildcards.name)
    return _verb_args(evals, flops)


def figure_inputs(wildcards):
    need = X.figure_inputs(CFG, wildcards.name)
    return {"tables": [f"{RESULTS}/{t}.csv" for t in need["tables"]],
            "evals": [eval_csv(r, ds) for r, ds in need["evals"]],
            "flops": [flops_csv(n, ds) for n, ds in need["flops"]],
            "ckpts": [ckpt(r) for r in need["runs"]]}


def figure_args(wildcards):
    need = X.figure_inputs(CFG, wildcards.name)
    return _verb_args(need["evals"], need["flops"], need["runs"], need["tables"])


PAPER_DIR = Path(workflow.basedir) / "paper"
PAPER_CSVS = [str(PAPER_DIR / f"{name}.csv") for name in TABLE_NAMES]
# The measured evaluation memory the report cites (benchmarks/bench_eval_memory.py --csv).
MEMORY_CSV = str(Path(workflow.basedir) / "benchmarks" / "eval_memory.csv")
TABLES = [f"{RESULTS}/{name}.csv" for name in TABLE_NAMES]
FIGURES = [f"{RESULTS}/{name}.png" for name in FIGURE_NAMES]
