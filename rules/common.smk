# Helpers shared by the workflow's modules: the validated configuration, the
# jobs each table and figure needs, and the resources of each kind of job.
#
# The configuration is validated once, here, against config/schema.yaml
# (harness.config.load_config), so a wrong key, type or value stops the
# workflow before any job starts, with the key's name. Without --configfile
# the embedded default (config/default.yaml) is used; a config file that
# names its `profile` (config/paper.yaml) stands alone, a partial one (or
# --config key=value) is merged over the embedded default.

import json
import re
import sys
from pathlib import Path

import yaml

from harness.errors import HarnessError
from harness.config import checkpoint_path, load_config, pair_runs, run_names, run_spec
from harness.io import atomic_write_text
from snakemake.exceptions import WorkflowError


def _validated(raw):
    try:
        return load_config(dict(raw))
    except HarnessError as exc:
        # One line, the key's name first; Snakemake stops before building the DAG.
        raise WorkflowError(f"invalid configuration: {exc}") from None


CFG = _validated(config)
RESULTS = str(Path(CFG["results"]))
PROFILE = CFG["profile"]
EVAL = CFG["evaluation"]
ON_GPU = CFG["device"] != "cpu"

# The resolved configuration every verb reads (--config). Rewritten only when
# its content changes, so its modification time says when the config changed.
RESOLVED_CONFIG = f"{RESULTS}/config.yaml"


def _write_resolved_config(path, cfg):
    header = ("# Resolved configuration written by the Snakefile (validated, defaults filled).\n"
              "# Every verb of the workflow reads this file; edit config/*.yaml instead.\n")
    text = f"{header}{yaml.safe_dump(cfg, sort_keys=False)}"
    p = Path(path)
    if not p.is_file() or p.read_text() != text:
        atomic_write_text(p, text)


_write_resolved_config(RESOLVED_CONFIG, CFG)

# Verbs run with Snakemake's own interpreter, with the project on PYTHONPATH, so
# the workflow needs no PATH setup and works from any working directory (-d).
PROJECT = Path(workflow.basedir).resolve()
PY = f'PYTHONPATH="{PROJECT}${{PYTHONPATH:+:$PYTHONPATH}}" "{sys.executable}"'
HARNESS = f"{PY} -m harness"

# --------------------------------------------------------------------------- runs

PAIRS = pair_runs(CFG)
RUNS = run_names(CFG)
PAIR_EXTRACTORS = list(dict.fromkeys(r.rsplit("-", 1)[0] for r in PAIRS))
UPSAMPLERS = CFG.get("pairs", {}).get("upsamplers", ["metasr", "liif", "lte"])
# Extractors whose FLOPs follow from the input size alone (no trained weights).
STATIC_EXTRACTORS = [e for e in PAIR_EXTRACTORS if e != "tadt"]
# TADT runs whose FLOPs depend on the routing their trained TARC picks.
TADT_FLOPS_RUNS = [r for r in ("tadt-liif", "tadt-liif-nolbeta") if r in RUNS]
TABLE4_RUNS = [r for r in ("tadt-liif-beta0.5", "tadt-liif-beta0.25s", "tadt-liif") if r in RUNS]
TABLE5_RUNS = [r for r in ("tadt-liif", "tadt-liif-nolbeta") if r in RUNS]
FIGURE7_RUNS = TABLE5_RUNS


def spec(run):
    return run_spec(CFG, run)


def scales_arg(scales):
    """2,3,4 or 2,2.5,3: what the verbs take for --scales."""
    return ",".join(f"{float(s):g}" for s in sorted(set(float(s) for s in scales)))


def _add(needs, key, scales):
    needs.setdefault(key, set()).update(float(s) for s in scales)


def _eval_needs():
    """(run, dataset) -> scales, over every table; 'bicubic' is the floor row."""
    needs = {}
    t1, t2, t4, t5 = EVAL["table1"], EVAL["table2"], EVAL["table4"], EVAL["table5"]
    for run in PAIRS:
        _add(needs, (run, t1["dataset"]), t1["scales"])
        for ds in t2["datasets"]:
            _add(needs, (run, ds), t2["scales"])
    for run in TABLE4_RUNS:
        _add(needs, (run, t4["dataset"]), t4["scales"])
    for run in TABLE5_RUNS:
        _add(needs, (run, t5["dataset"]), t5["scales"])
    # Bicubic: the floor row of Tables 1 and 2, on each of their datasets.
    _add(needs, ("bicubic", t1["dataset"]), t1["scales"])
    for ds in t2["datasets"]:
        _add(needs, ("bicubic", ds), t2["scales"])
    return needs


def _flops_needs():
    """(extractor or tadt run, dataset) -> scales (Table 3, Table 5, Figure 2)."""
    needs = {}
    t3, t5, f2 = EVAL["table3"], EVAL["table5"], EVAL.get("figure2", {})
    for ext in STATIC_EXTRACTORS:
        _add(needs, (ext, t3["dataset"]), t3["scales"])
    if "tadt-liif" in RUNS:
        _add(needs, ("tadt-liif", t3["dataset"]), t3["scales"])
    for run in TABLE5_RUNS:
        _add(needs, (run, t5["dataset"]), t5["scales"])
    if f2.get("dataset") and f2.get("scales"):
        for name in ("swinir", "tadt-liif"):
            if name in STATIC_EXTRACTORS or name in RUNS:
                _add(needs, (name, f2["dataset"]), f2["scales"])
    return needs


EVAL_NEEDS = _eval_needs()
FLOPS_NEEDS = _flops_needs()


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
DATASET_RE = _alternation(DATASETS)
STATIC_RE = _alternation(STATIC_EXTRACTORS)
TADT_FLOPS_RE = _alternation(TADT_FLOPS_RUNS)


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
                     "baseline": 0.55, "tadt": 0.55}
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
    return 32000 if PROFILE == "paper" else 4000


EVAL_THREADS = int(CFG["train"].get("threads", 1))
EVAL_GPUS = 1 if ON_GPU and int(CFG["train"].get("gpus", 0)) > 0 else 0
EVAL_MEM = 32000 if PROFILE == "paper" else 4000
EVAL_RUNTIME = 600 if PROFILE == "paper" else 30
FLOPS_MEM = 16000 if PROFILE == "paper" else 2000
FLOPS_RUNTIME = 600 if PROFILE == "paper" else 30
SMALL = {"mem_mb": 2000, "runtime": 10}


# --------------------------------------------------------------------------- input functions
# (kept in this module so that the other modules hold nothing but rules)


def train_inputs(wildcards):
    inputs = {"config": ancient(RESOLVED_CONFIG)}
    init = spec(wildcards.run).init_from
    if init:
        inputs["init"] = ckpt(init)
    return inputs


def train_launcher(wildcards):
    g = gpus_for(wildcards.run)
    if g > 1:  # DDP: torchrun starts one process per GPU (single node)
        return f"{PY} -m torch.distributed.run --standalone --nproc_per_node {g} -m harness --"
    return HARNESS


def train_init_arg(wildcards):
    init = spec(wildcards.run).init_from
    return f"--init {ckpt(init)}" if init else ""


def train_spec_json(wildcards):
    # The resolved run spec as a param: a change to it (and only to it) retrains the run.
    return json.dumps(spec(wildcards.run).as_dict(), sort_keys=True)


def eval_scales(wildcards):
    key = (wildcards.run, wildcards.dataset)
    if key not in EVAL_NEEDS:
        raise WorkflowError(f"no table evaluates {wildcards.run} on {wildcards.dataset}")
    return scales_arg(EVAL_NEEDS[key])


def bicubic_scales(wildcards):
    return scales_arg(EVAL_NEEDS[("bicubic", wildcards.dataset)])


def flops_scales(name):
    def scales(wildcards):
        return scales_arg(FLOPS_NEEDS[(getattr(wildcards, name), wildcards.dataset)])

    return scales


def table_inputs(wildcards):
    n = int(wildcards.n)
    t = EVAL[f"table{n}"]
    with_bicubic = [*PAIRS, "bicubic"]
    evals, flops = [], {}
    if n == 1:
        evals = [eval_csv(r, t["dataset"]) for r in with_bicubic]
    elif n == 2:
        evals = [eval_csv(r, ds) for ds in t["datasets"] for r in with_bicubic]
    elif n == 3:
        names = [*STATIC_EXTRACTORS, *(["tadt-liif"] if "tadt-liif" in RUNS else [])]
        flops = {name: flops_csv(name, t["dataset"]) for name in names}
    elif n == 4:
        evals = [eval_csv(r, t["dataset"]) for r in TABLE4_RUNS]
    elif n == 5:
        evals = [eval_csv(r, t["dataset"]) for r in TABLE5_RUNS]
        flops = {r: flops_csv(r, t["dataset"]) for r in TABLE5_RUNS}
    return {"config": ancient(RESOLVED_CONFIG), "evals": evals, "flops": list(flops.values())}


def _named(paths):
    # The flops CSVs and checkpoints carry no name column: their folder or stem names them.
    return " ".join(f"{Path(p).parent.name if p.endswith('.csv') else Path(p).stem}={p}" for p in paths)


def table_args(wildcards, input):
    args = ""
    if input.evals:
        args = f"{args} --eval {' '.join(input.evals)}"
    if input.flops:
        args = f"{args} --flops {_named(input.flops)}"
    return args


def figure_inputs(wildcards):
    n = int(wildcards.n)
    inputs = {"config": ancient(RESOLVED_CONFIG)}
    if n == 1:
        ds = EVAL["table1"]["dataset"]
        inputs["table3"] = f"{RESULTS}/table3.csv"
        inputs["evals"] = [eval_csv(f"{e}-liif", ds) for e in PAIR_EXTRACTORS if f"{e}-liif" in RUNS]
    elif n == 2:
        ds = EVAL["figure2"]["dataset"]
        inputs["flops"] = [flops_csv(name, ds) for name in ("swinir", "tadt-liif")]
    elif n == 7:
        inputs["ckpts"] = [ckpt(r) for r in FIGURE7_RUNS]
    return inputs


def figure_args(wildcards, input):
    n = int(wildcards.n)
    if n == 1:
        return f" --table3 {input.table3} --eval {' '.join(input.evals)}"
    if n == 2:
        return f" --flops {_named(input.flops)}"
    return f" --checkpoint {_named(input.ckpts)}"


PAPER_DIR = Path(workflow.basedir) / "paper"
PAPER_CSVS = [str(PAPER_DIR / f"table{n}.csv") for n in range(1, 6)]
TABLES = [f"{RESULTS}/table{n}.csv" for n in range(1, 6)]
FIGURES = [f"{RESULTS}/figure{n}.png" for n in (1, 2, 7)]
