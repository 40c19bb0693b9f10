"""Running the guard's layers, reporting them and rewriting their baselines.

``inference(workdir)``, ``training(layers, workdir)`` and ``tables(...)`` each return
a :class:`LayerResult`; its ``problems`` are the messages of every cell that moved
(empty: the layer passes). ``python -m harness check-regression`` and
tests/test_regression.py call these.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from harness.regression import cells as C
from harness.regression import inference as I
from harness.regression import tables as T
from harness.regression import training as TR


@dataclass
class LayerResult:
    layer: str
    current: dict
    baseline: dict
    rule: Callable
    name: Callable
    errors: dict = field(default_factory=dict)
    selected: Callable | None = None
    note: str = ""

    @property
    def problems(self) -> list[str]:
        return C.compare(self.current, self.baseline, self.rule, self.name, self.errors, self.selected)

    def largest_deltas(self, group: Callable) -> dict[str, float]:
        return C.max_deltas(self.current, self.baseline, group)


def machine() -> str:
    """What decides the last bits of a float computation here: torch build, CPU kernels, CPU model."""
    import os
    import platform

    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    isa = ", ".join(f"{k}={os.environ[k]}" for k in sorted(TR.ISA_SETTINGS["sse-machine"]) if k in os.environ)
    return (f"torch {torch.__version__}; cpu {torch.backends.cpu.get_cpu_capability()}"
            f"{'; ' + isa if isa else ''}; {model}")


# --------------------------------------------------------------------------- layers

def inference(workdir: Path, runs: Iterable[str] | None = None, datasets: Sequence[str] = I.DATASETS,
              scales: Sequence[float] = I.SCALES, baseline: Path | None = I.BASELINE, threads: int = 1
              ) -> LayerResult:
    """The exact layer on ``runs`` (default: bicubic and every pair of the embedded default)."""
    current, errors = I.inference_cells(Path(workdir), runs, datasets, scales, threads=threads)
    base = C.read_cells(baseline, I.KEYS, I.parse) if baseline else {}
    return LayerResult("inference", current, base, I.rule, I.name, errors,
                       I.selector(runs, datasets, scales))


def training(layers: Sequence[str], workdir: Path, threads: int = 1, baseline: Path | None = TR.BASELINE,
             log: Callable[[str], None] = print, quick_runs: Sequence[str] = (TR.QUICK_RUN, TR.TADT_RUN)
             ) -> LayerResult:
    """The statistical layer(s) among ``layers`` (``training-quick``, ``training-full``);
    ``quick_runs``: the quick statistics of these runs only (a partial check)."""
    values = TR.training_values(layers, Path(workdir), threads, log, quick_runs)
    base = TR.read_baseline(baseline) if baseline else {}
    prefixes = tuple(x.split("-")[1] + " " for x in layers if x in TR.LAYERS)

    def selected(key) -> bool:
        return not key[0].startswith("quick ") or key[0].split(" ")[1] in quick_runs
    return LayerResult("training", {(k,): v for k, v in values.items()},
                       {(k,): r["value"] for k, r in base.items() if k.startswith(prefixes)},
                       TR.rule_for(base), lambda key: f"training {key[0]}", selected=selected)


def tables(results, tables_: Sequence[int], baseline: Path | None = None, tol_db: float = T.TOL_TABLE_DB,
           band_db: float = T.BAND_DB, band_rel: float = T.BAND_GFLOPS_REL) -> LayerResult:
    """The embedded tables of ``results`` against ``embedded.csv``."""
    from harness.config import load_config

    cfg = load_config()
    current = T.flatten(results, tables_, cfg)
    base = C.read_cells(baseline or T.BASELINE, T.KEYS)
    chosen = {str(t) for t in tables_}
    return LayerResult("tables", current, base, T.rule_for(cfg, tol_db, band_db, band_rel), T.name,
                       selected=lambda key: key[0] in chosen)


# --------------------------------------------------------------------------- the verb

@dataclass
class Result:
    layers: list[LayerResult]

    def values(self) -> dict:
        out = {}
        for r in self.layers:
            if r.layer == "training":
                out["training"] = {k[0]: v for k, v in r.current.items()}
            else:
                out[r.layer] = {"/".join(k): v for k, v in r.current.items()}
        return out

    def report(self, out=None, err=None) -> int:
        out, err = out or sys.stdout, err or sys.stderr
        failed = 0
        for r in self.layers:
            problems = r.problems
            group = (lambda k: k[4]) if r.layer == "inference" else (lambda k: k[0])
            deltas = r.largest_deltas(group)
            spread = "; ".join(f"{g} {d:.3g}" for g, d in sorted(deltas.items()) if r.layer != "tables")
            if problems:
                failed += len(problems)
                print(f"regression ({r.layer}): {len(problems)} cell(s) moved:", file=err)
                for p in problems:
                    print(f"  {p}", file=err)
            else:
                print(f"no regression ({r.layer}): {len(r.current)} cells"
                      + (f"; largest |delta|: {spread}" if spread else ""), file=out)
        return 1 if failed else 0


def compute(layers: Sequence[str], work: Path, args, tables_: Sequence[int], runs=None) -> Result:
    """The chosen layers; with ``args.values_json`` set (measuring), no baseline is read."""
    measuring = bool(args.values_json)
    out = []
    if "inference" in layers:
        out.append(inference(work / "inference", runs, baseline=None if measuring else I.BASELINE,
                             threads=args.threads))
    training_layers = [x for x in layers if x in TR.LAYERS]
    if training_layers:
        out.append(training(training_layers, work / "training", args.threads,
                            baseline=None if measuring else TR.BASELINE))
    if "tables" in layers and not measuring:
        out.append(tables(args.results, tables_, args.baseline, args.tolerance_db, args.band_db,
                          args.band_gflops_rel))
    return Result(out)


def write_checkpoints(work: Path, runs=None) -> int:
    from harness.io import check_writable

    check_writable(I.CHECKPOINTS, "the regression checkpoints", directory=True)
    check_writable(I.BASELINE, "the inference baseline")
    I.write_checkpoints(work / "checkpoints", runs)
    return write_inference_baseline(work)


def write_inference_baseline(work: Path) -> int:
    from harness.errors import HarnessError

    margins: dict = {}
    current, errors = I.inference_cells(work / "inference", margins=margins)
    if errors:
        raise HarnessError("cannot write the inference baseline: " + "; ".join(errors.values()))
    if margins:
        key = min(margins, key=margins.get)
        print(f"smallest TARC routing margin: {margins[key]:.2e} ({' '.join(key)})")
        if margins[key] < I.ROUTING_MARGIN_MIN:
            raise HarnessError(f"the routing of {' '.join(key)} is {margins[key]:.1e} from flipping (below "
                               f"{I.ROUTING_MARGIN_MIN:g}): another CPU could route differently; retrain the "
                               "checkpoints with another train.seed in tests/regression/widths.yaml")
    C.write_cells(I.BASELINE, I.KEYS, current, I.HEADER.format(machine=machine()))
    print(f"inference baseline: {len(current)} cells -> {I.BASELINE}")
    return 0


def write_baselines(layers: Sequence[str], work: Path, args, tables_: Sequence[int]) -> int:
    from harness.io import check_writable

    for layer, path in (("inference", I.BASELINE), ("training-quick", TR.BASELINE), ("training-full", TR.BASELINE),
                        ("tables", Path(args.baseline or T.BASELINE))):
        if layer in layers:
            check_writable(path, f"the {layer} baseline" if layer != "tables" else "--baseline")
    if "inference" in layers:
        write_inference_baseline(work)
    if "training-quick" in layers:
        values = TR.quick_values(work / "quick", args.threads)
        print("training-quick: measuring the spread under other instruction sets ...")
        deviations = {name: dev["training"] for name, dev in
                      measure("training-quick", work / "spread", {"training": values}).items()}
        TR.write_baseline(values, TR.quick_spreads(deviations, values), machine=machine())
    if "training-full" in layers:
        per_seed = TR.full_seed_values(work / "full", range(2 * TR.FULL_SEEDS), args.threads,
                                       lambda s, v: print(f"  seed {s}: {v}"))
        values = TR.full_values({s: v for s, v in per_seed.items() if s < TR.FULL_SEEDS})
        TR.write_baseline(values, TR.full_spreads(per_seed), machine=machine())
    if "training-quick" in layers or "training-full" in layers:
        print(f"training baseline -> {TR.BASELINE}")
    if "tables" in layers:
        from harness.config import load_config

        current = T.flatten(args.results, tables_, load_config())
        path = Path(args.baseline or T.BASELINE)
        C.write_cells(path, T.KEYS, current, T.HEADER.format(machine=machine()))
        print(f"tables baseline: {len(current)} cells from tables {args.tables} -> {path}")
    return 0


# --------------------------------------------------------------------------- other machines on this one

def settings() -> list[tuple[str, dict, int]]:
    """``(name, environment, threads)``: each instruction-set setting, and 2 threads."""
    return [(name, env, 1) for name, env in TR.ISA_SETTINGS.items()] + [("2-threads", {}, 2)]


def values_under(name: str, env: dict, layers: str, work: Path, threads: int = 1, timeout: int = 7200) -> dict:
    """The guard's values (``--values-json``) computed in a fresh process under ``env``."""
    import json
    import os
    import subprocess

    from harness.config import ROOT
    from harness.errors import HarnessError

    out = Path(work) / f"values-{name}.json"
    argv = [sys.executable, "-m", "harness", "check-regression", "--layers", layers, "--threads", str(threads),
            "--values-json", str(out), "--workdir", str(Path(work) / name)]
    proc = subprocess.run(argv, env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise HarnessError(f"the guard under {name} ({env}) failed: {proc.stderr.strip()[-500:]}")
    return json.loads(out.read_text())


def measure(layers: str, work: Path, reference: dict, log: Callable[[str], None] = print) -> dict:
    """Per setting of :func:`settings`: each numeric value's deviation from ``reference``
    (``{layer: {cell: value}}``, as ``Result.values``); text cells that differ count as NaN."""
    out = {}
    for name, env, threads in settings():
        got = values_under(name, env, layers, work, threads)
        dev = {}
        for layer, ref in reference.items():
            dev[layer] = {}
            for cell, value in ref.items():
                new = got.get(layer, {}).get(cell)
                if isinstance(value, str) or isinstance(new, str) or new is None:
                    dev[layer][cell] = 0.0 if new == value else float("nan")
                else:
                    dev[layer][cell] = float(new) - float(value)
        out[name] = dev
        log(f"{name} ({', '.join(f'{k}={v}' for k, v in env.items()) or 'threads 2'}): "
            + "; ".join(summary(layer, d) for layer, d in dev.items()))
    return out


def summary(layer: str, deviations: dict) -> str:
    """Largest |deviation| per kind of cell (the quantity for inference, the statistic for training)."""
    import math

    groups: dict[str, float] = {}
    for cell, d in deviations.items():
        g = cell.rsplit("/", 1)[-1] if layer == "inference" else cell
        groups[g] = max(groups.get(g, 0.0), abs(d)) if not math.isnan(d) else float("nan")
    return f"{layer}: " + ", ".join(f"{g} {v:.2g}" for g, v in sorted(groups.items()))
