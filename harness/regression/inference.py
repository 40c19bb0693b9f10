"""The exact layer: committed tiny checkpoints, evaluated and counted.

For every extractor x upsampler pair of the embedded default (``pair_runs``: new
extractors join through the config) a tiny trained checkpoint is committed under
``tests/regression/checkpoints/`` (the embedded default's architecture at the
widths of ``tests/regression/widths.yaml``, trained briefly by
:func:`write_checkpoints`). Nothing here trains: each checkpoint is loaded with
``harness.checkpoint.load_model`` and run through the evaluation code
(``harness.evaluate.evaluate_rows``: pairs, protocol, bicubic, metric, chunked
decoding, TADT's routing) on centre crops of the embedded evaluation images,
and its extractor is counted by ``harness.flops`` along the routing evaluation
took. The cells (:data:`KEYS`), per image and scale:

- ``psnr`` of each run and of bicubic: within :data:`TOL_PSNR_DB` (float
  summation order differs between CPU kernels; see tests/regression/README.md);
- ``flops`` of the extractor (routed ones along their TARC routing) and
  ``routing`` (the bits the TARC chose): exact;
- ``params`` of each model (per run, built fresh from the checkpoint's spec): exact.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import harness.config as _config
from harness.config import ROOT, load_config, pair_runs, run_spec
from harness.regression.cells import Key, Rule, as_number

REGRESSION_DIR = ROOT / "tests" / "regression"
WIDTHS = REGRESSION_DIR / "widths.yaml"
CHECKPOINTS = REGRESSION_DIR / "checkpoints"
BASELINE = REGRESSION_DIR / "inference.csv"
KEYS = ("run", "dataset", "scale", "image", "quantity")
BICUBIC = "bicubic"

#: One RGB-metric set and one Y-metric set; a MATLAB scale, an on-the-fly one, one beyond training.
DATASETS = ("div2k-valid", "urban100")
SCALES = (2.0, 3.5, 12.0)
#: Centre crop (HR pixels) of each embedded image: x2 and x12 divide it.
CROP = 120
#: PSNR tolerance (dB); the measured cross-CPU deltas are in tests/regression/README.md.
TOL_PSNR_DB = 1e-4
#: A TARC decision closer than this to flipping (:func:`routing_margin`) could flip on another
#: CPU (float deviations there are ~1e-7); the baseline refuses such a checkpoint.
ROUTING_MARGIN_MIN = 1e-5
#: The short schedule of the regression checkpoints: this fraction of each run's embedded steps.
SCHEDULE_FRACTION = 0.5

HEADER = """\
Exact layer of the regression guard (harness/regression/inference.py), written by
  python -m harness check-regression --write-baseline --layers inference
from the committed checkpoints tests/regression/checkpoints/*.pth (bicubic: no checkpoint),
evaluated on centre crops of the embedded sets. One row per cell: psnr per image (within
1e-4 dB), flops of the extractor along the routing evaluation took, routing (TADT's bits)
and params (exact). Regenerate only for an intended change (tests/regression/README.md).
machine: {machine}
"""


def regression_config() -> dict:
    """The embedded default with the regression widths (``tests/regression/widths.yaml``) over it."""
    return load_config(_config.DEFAULT_CONFIG, WIDTHS)


def runs(cfg: dict | None = None) -> list[str]:
    return pair_runs(cfg or regression_config())


def checkpoint_of(run: str) -> Path:
    return CHECKPOINTS / f"{run}.pth"


def rule(key: Key) -> Rule:
    return Rule("abs", TOL_PSNR_DB) if key[4] == "psnr" else Rule("exact")


def parse(key: Key, text: str):
    return text if key[4] == "routing" else as_number(key, text)


def name(key: Key) -> str:
    run, dataset, scale, image, quantity = key
    where = " ".join(p for p in (dataset, f"x{scale}" if scale else "", image) if p)
    return f"inference {run} {quantity}" + (f" {where}" if where else "")


# --------------------------------------------------------------------------- data

def prepare_data(workdir: Path, datasets: Sequence[str] = DATASETS) -> dict:
    """Centre crops (:data:`CROP`) of the embedded evaluation images as a folder layout under
    ``workdir``; returns its ``data:`` configuration (LR images are made into ``workdir/cache``)."""
    from harness.data import DATASETS as LAYOUTS
    from harness.data import EMBEDDED_SETS, build_embedded, read_image, write_png

    embedded = build_embedded(workdir / "cache")
    root = workdir / "crops"
    for ds in datasets:
        folder = LAYOUTS[ds].hr
        for img in EMBEDDED_SETS[ds]:
            out = root / folder / f"{img}.png"
            if out.is_file():
                continue
            hr = read_image(embedded / folder / f"{img}.png")
            top, left = (hr.shape[0] - CROP) // 2, (hr.shape[1] - CROP) // 2
            write_png(out, hr[top:top + CROP, left:left + CROP])
    return {"source": "folders", "root": str(root), "cache": str(workdir / "cache")}


# --------------------------------------------------------------------------- cells

def routing_margin(info, mode: str = "topk") -> float:
    """How far a TARC decision (``RoutingInfo`` with ``p``) is from flipping. Top-k (TADT's
    default ``eval_routing``): the distance of ``sum p`` to its rounding boundary, or the gap
    between the k-th and (k+1)-th largest ``p``, whichever is smaller; threshold: min ``|p - 0.5|``."""
    p = sorted((float(v) for v in info.p[0]), reverse=True)
    if mode != "topk":
        return min(abs(v - 0.5) for v in p)
    total = sum(p)
    k = round(total)
    gaps = [abs(abs(total - k) - 0.5)]
    if 0 < k < len(p):
        gaps.append(p[k - 1] - p[k])
    return min(gaps)


def _flops_cells(model, run: str, dataset: str, scale: float, pairs, cells: dict, memo: dict,
                 margins: dict) -> None:
    """``flops`` of the extractor on each LR image at ``scale``, routed extractors along the
    routing evaluation takes (as the ``flops`` verb counts them); TARC margins into ``margins``."""
    import torch

    from harness import flops as F
    from harness.evaluate import evaluation_routing
    from harness.scales import format_scale

    enc = model.encoder
    routed = F.is_routed(enc)
    for img, lr in pairs:
        h, w = int(lr.shape[-2]), int(lr.shape[-1])
        key = (run, dataset, format_scale(scale), img)
        info = evaluation_routing(enc, lr, scale) if routed else None
        if info is not None and info.p is not None:
            margins[key] = routing_margin(info, getattr(enc, "eval_routing", "topk"))
        memo_key = (h, w, scale if routed else None, None if info is None else tuple(info.r[0].tolist()))
        if memo_key not in memo:
            with torch.no_grad():
                memo[memo_key] = F.count_extractor(enc, h, w, scale=scale, routing=info)
        cells[(*key, "flops")] = int(memo[memo_key].flops)


def run_cells(run: str, data_cfg: dict, datasets: Sequence[str] = DATASETS,
              scales: Sequence[float] = SCALES, margins: dict | None = None) -> tuple[dict, dict]:
    """``(cells, errors)`` of one committed checkpoint (or of ``bicubic``); the routing margins
    of a TADT go into ``margins``."""
    from harness.data import eval_pairs
    from harness.errors import HarnessError
    from harness.evaluate import evaluate_rows

    cells: dict[Key, object] = {}
    model = None
    if run != BICUBIC:
        from harness.checkpoint import load_checkpoint, load_model
        from harness.registry import count_parameters
        from upsamplers import create_model

        path = checkpoint_of(run)
        if not path.is_file():
            return {}, {(run, "", "", "", "checkpoint"): (
                f"no committed checkpoint {path.relative_to(ROOT)}; make it with "
                f"`python -m harness check-regression --write-checkpoints --runs {run}`")}
        try:
            spec = load_checkpoint(path)["model"]
            fresh = create_model(spec["upsampler"], spec["extractor"], extractor_args=spec["extractor_args"],
                                 upsampler_args=spec["upsampler_args"])
            cells[(run, "", "", "", "params")] = count_parameters(fresh)
            model, _ = load_model(path)
        except HarnessError as exc:
            return cells, {(run, "", "", "", "psnr"): str(exc)}
    memo: dict = {}
    for ds in datasets:
        for row in evaluate_rows(model, data_cfg, ds, scales, run):
            key = (run, ds, row["scale"], row["image"])
            cells[(*key, "psnr")] = round(float(row["psnr"]), 7)
            if row.get("routing"):
                cells[(*key, "routing")] = str(row["routing"])
        if model is not None:
            for s in scales:
                pairs = ((img, lr) for img, lr, _ in eval_pairs(data_cfg, ds, s))
                _flops_cells(model, run, ds, s, pairs, cells, memo, {} if margins is None else margins)
    return cells, {}


def inference_cells(workdir: Path, selection: Iterable[str] | None = None,
                    datasets: Sequence[str] = DATASETS, scales: Sequence[float] = SCALES,
                    on_run: Callable[[str], None] | None = None, threads: int = 1,
                    margins: dict | None = None) -> tuple[dict, dict]:
    """``(cells, errors)`` of bicubic and every run (or the ``selection``) on the regression data;
    ``margins`` (if given) receives each TARC decision's :func:`routing_margin`."""
    import torch

    cells, errors = {}, {}
    margins = {} if margins is None else margins
    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)  # 1: what the workflow's evaluation jobs use (train.threads)
        data_cfg = prepare_data(Path(workdir), datasets)
        for run in [BICUBIC, *runs()] if selection is None else list(selection):
            c, e = run_cells(run, data_cfg, datasets, scales, margins)
            cells.update(c)
            errors.update(e)
            if on_run is not None:
                on_run(run)
    finally:
        torch.set_num_threads(threads_before)
    return cells, errors


def selector(selection: Iterable[str] | None, datasets: Sequence[str], scales: Sequence[float]
             ) -> Callable[[Key], bool]:
    """Which baseline cells a partial check (some runs, datasets or scales) is expected to make."""
    from harness.scales import format_scale

    chosen = None if selection is None else set(selection)
    sc = {format_scale(s) for s in scales}

    def selected(key: Key) -> bool:
        run, ds, scale, _, _ = key
        return (chosen is None or run in chosen) and (not ds or ds in datasets) and (not scale or scale in sc)
    return selected


# --------------------------------------------------------------------------- writing

def short_schedule(train: dict) -> dict:
    """``train`` with :data:`SCHEDULE_FRACTION` of its steps (milestones scaled alike)."""
    f = SCHEDULE_FRACTION
    iterations = max(1, round(int(train["iterations"]) * f))
    return {**train, "iterations": iterations,
            "milestones": [max(1, round(int(m) * f)) for m in train["milestones"]],
            "checkpoint_every": iterations, "log_every": max(1, iterations // 5)}


def write_checkpoints(workdir: Path, selection: Iterable[str] | None = None,
                      log: Callable[[str], None] = print) -> list[Path]:
    """Train the regression checkpoints (all runs, or ``selection``) and commit-ready copies.

    Each run is trained by ``harness.training.train_run`` with its embedded spec at the
    regression widths and :func:`short_schedule`, one thread; TADT runs start from the
    committed Baseline checkpoint of their upsampler. The copy under ``CHECKPOINTS``
    holds the weights in float16 (loaded into float32 models: the committed values are
    the reference) and no optimiser state.
    """
    import torch

    from harness.checkpoint import load_model, save_checkpoint
    from harness.training import train_run

    cfg = regression_config()
    cfg["data"]["cache"] = str(Path(workdir) / "cache")
    wanted = runs(cfg) if selection is None else list(selection)
    written = []
    for run in wanted:
        spec = run_spec(cfg, run)
        spec.train = short_schedule(spec.train)
        init = checkpoint_of(spec.init_from) if spec.init_from else None
        tmp = Path(workdir) / f"{run}.pth"
        summary = train_run(cfg, spec, tmp, init=init, log=Path(workdir) / f"{run}.csv", threads=1,
                            progress="none")
        model, meta = load_model(tmp)
        path = save_checkpoint(checkpoint_of(run), model.to(torch.float16), meta["spec"], meta["step"],
                               run={"name": run, "train": spec.train, "init": spec.init_from or ""})
        log(f"{run}: {spec.train['iterations']} steps, final loss {summary['last'].get('loss', '?')} -> "
            f"{path.relative_to(ROOT)} ({path.stat().st_size // 1024} KiB)")
        written.append(path)
    return written
