"""The experiment manifest (config/experiments.yaml) as queries, and each job's config slice.

Everything that says which run feeds which table, figure or claim reads the
manifest through this module: the workflow's rules (rules/common.smk), the
table and figure builders and the report. Nothing here names a run.

``job_config(cfg, kind, ...)`` returns the slice of the resolved configuration
one job depends on. The workflow passes it to the job's verb on the command
line (``--config '{...}'``) and as a Snakemake param, so a job reads exactly the
settings it was scheduled with (no shared file a concurrent run could rewrite),
and changing a setting reruns exactly the jobs whose slice holds it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable

from harness.config import (WORKFLOW_TRAIN_KEYS, ablation_runs, extractor_args, pair_extractors,
                            pair_upsamplers, run_names, run_parts, run_spec)
from harness.errors import HarnessError

BICUBIC = "bicubic"  # the floor row of the PSNR tables: no training, no checkpoint


@dataclass(frozen=True)
class Row:
    """One row of a table: its key cells and the run (or extractor) behind it."""

    upsampler: str
    extractor: str | None
    run: str
    variant: str | None = None

    def meta(self, key: Iterable[str]) -> dict:
        out = {"upsampler": self.upsampler}
        for k in key:
            if k == "variant":
                out["variant"], out["run"] = self.variant, self.run
            elif k != "upsampler":
                out[k] = getattr(self, k)
        return out


# --------------------------------------------------------------------------- manifest

def tables(cfg: dict) -> dict[str, dict]:
    return cfg["experiments"]["tables"]


def table(cfg: dict, name: str) -> dict:
    try:
        return tables(cfg)[name]
    except KeyError:
        raise HarnessError(f"the manifest has no {name} (tables: {', '.join(tables(cfg))})") from None


def figure(cfg: dict, name: str) -> dict:
    figs = cfg["experiments"]["figures"]
    if name not in figs:
        raise HarnessError(f"the manifest has no {name} (figures: {', '.join(figs)})")
    return figs[name]


def is_routed(extractor: str) -> bool:
    """FLOPs that depend on trained weights (the TARC picks the branches): counted per run."""
    from extractors import EXTRACTORS

    return bool(getattr(EXTRACTORS.get(extractor), "scale_aware", False))


def flops_name(cfg: dict, name: str) -> str:
    """What a FLOPs CSV is named by: a static extractor by itself, a routed one by its run."""
    if name in pair_extractors(cfg) or name in _registry_extractors():
        return name
    ext = run_parts(cfg, name)[0]
    return name if is_routed(ext) else ext


def _registry_extractors() -> list[str]:
    from extractors import extractor_names

    return extractor_names()


def table_rows(cfg: dict, name: str) -> list[Row]:
    """The rows of our table, in the paper's order; rows whose run this config lacks are left out."""
    t = table(cfg, name)
    runs = set(run_names(cfg))
    rows: list[Row] = []
    if t.get("bicubic"):
        rows.append(Row("none", BICUBIC, BICUBIC))
    if t["rows"] == "pairs":  # upsampler-major, as the paper prints them
        rows += [Row(u, e, f"{e}-{u}") for u in pair_upsamplers(cfg) for e in pair_extractors(cfg)
                 if f"{e}-{u}" in runs]  # every pair, but at profile released those with a file
    elif t["rows"] == "extractors":
        up = t.get("upsampler")
        if not up:
            raise HarnessError(f"experiments/tables/{name}: rows 'extractors' needs an `upsampler`")
        rows += [Row(up, e, f"{e}-{up}") for e in pair_extractors(cfg) if f"{e}-{up}" in runs]
    else:
        for r in t["rows"]:
            if r["run"] in runs:
                ext, up = run_parts(cfg, r["run"])
                rows.append(Row(up, ext, r["run"], r["variant"]))
    return rows


def _add(needs: dict, key: tuple, scales: Iterable[float]) -> None:
    needs.setdefault(key, set()).update(float(s) for s in scales)


def _sorted(needs: dict) -> dict[tuple, list[float]]:
    return {k: sorted(v) for k, v in needs.items()}


def table_inputs(cfg: dict, name: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(evals, flops)``: the (run, dataset) evaluations and (name, dataset) FLOPs a table reads."""
    t = table(cfg, name)
    evals, flops = [], []
    for row in table_rows(cfg, name):
        for ds in t["datasets"]:
            if "psnr" in t["values"]:
                evals.append((row.run, ds))
            if "gflops" in t["values"] and row.run != BICUBIC:
                flops.append((flops_name(cfg, row.run), ds))
    return list(dict.fromkeys(evals)), list(dict.fromkeys(flops))


def figure_inputs(cfg: dict, name: str) -> dict[str, list]:
    """What a figure reads: ``evals`` (run, dataset), ``flops`` (name, dataset), ``tables``, ``runs``."""
    f = figure(cfg, name)
    if name == "figure1":
        src = table(cfg, f["psnr_table"])
        ds = src["datasets"][0]
        runs = [r.run for r in table_rows(cfg, f["table"])]
        return {"tables": [f["table"]], "evals": [(r, ds) for r in runs], "flops": [], "runs": []}
    if name == "figure2":
        return {"tables": [], "evals": [], "runs": [],
                "flops": [(flops_name(cfg, n), f["dataset"]) for n in f["names"]
                          if n in _registry_extractors() or n in run_names(cfg)]}
    return {"tables": [], "evals": [], "flops": [], "runs": [r for r in f["runs"] if r in run_names(cfg)]}


def eval_needs(cfg: dict) -> dict[tuple[str, str], list[float]]:
    """(run or ``bicubic``, dataset) -> the scales every table and figure needs evaluated."""
    needs: dict = {}
    for name, t in tables(cfg).items():
        for run, ds in table_inputs(cfg, name)[0]:
            _add(needs, (run, ds), t["scales"])
    f1 = cfg["experiments"]["figures"].get("figure1")
    if f1:
        for run, ds in figure_inputs(cfg, "figure1")["evals"]:
            _add(needs, (run, ds), f1["scales"])
    return _sorted(needs)


def flops_needs(cfg: dict) -> dict[tuple[str, str], list[float]]:
    """(extractor or routed run, dataset) -> the scales every table and figure needs counted."""
    needs: dict = {}
    for name, t in tables(cfg).items():
        for key in table_inputs(cfg, name)[1]:
            _add(needs, key, t["scales"])
    f2 = cfg["experiments"]["figures"].get("figure2")
    if f2:
        for key in figure_inputs(cfg, "figure2")["flops"]:
            _add(needs, key, f2["scales"])
    return _sorted(needs)


def claim_sources(cfg: dict) -> list[str]:
    return sorted({s for c in cfg["experiments"]["claims"] for s in c["sources"]})


# --------------------------------------------------------------------------- job slices

def _data(cfg: dict) -> dict:
    d = cfg["data"]
    out = {"source": d["source"], "cache": d["cache"]}
    if d["source"] == "folders":  # the root means nothing to the embedded sets
        out["root"] = d["root"]
    return out


def _train_slice(cfg: dict, run: str) -> dict:
    """What ``run_spec(slice, run)`` needs to give the same spec as the whole config."""
    spec = run_spec(cfg, run)
    exts = [spec.extractor] + (["baseline"] if spec.extractor == "tadt" else [])
    overrides = {k: v for k, v in cfg["train"].get("overrides", {}).items() if k in (spec.extractor, run)}
    tadt = {k: cfg["tadt"][k] for k in ("lambda", "alpha", "finetune")}
    tadt["ablations"] = [run[len("tadt-liif-"):]] if run in ablation_runs(cfg) else []
    return {"device": cfg["device"], "data": _data(cfg),
            "pairs": {"extractors": [spec.extractor], "upsamplers": [spec.upsampler]},
            "extractors": {e: cfg["extractors"].get(e) or {} for e in exts},
            "upsamplers": {spec.upsampler: cfg["upsamplers"].get(spec.upsampler) or {}},
            "train": {**{k: v for k, v in cfg["train"].items() if k not in WORKFLOW_TRAIN_KEYS},
                      "overrides": overrides}, "tadt": tadt}


def _table_slice(cfg: dict, name: str) -> dict:
    rows = table_rows(cfg, name)
    exts = {r.extractor for r in rows if r.extractor and r.run != BICUBIC}
    if "tadt" in exts:
        exts.add("baseline")
    out = {"profile": cfg["profile"], "pairs": cfg["pairs"],
           "tadt": {"ablations": cfg["tadt"].get("ablations", [])},
           "experiments": {"tables": {name: table(cfg, name)}}}
    if "released" in cfg:  # the rows: the released runs whose file is in the folder
        out["released"] = {"present": run_names(cfg)}
    if "params" in table(cfg, name)["values"]:
        out["extractors"] = {e: cfg["extractors"].get(e) or {} for e in sorted(exts)}
    return out


def job_config(cfg: dict, kind: str, *names: str) -> dict:
    """The settings one job depends on, as a config the verbs load (``job`` set).

    kinds: ``train RUN``, ``evaluate [RUN]`` (a checkpoint or bicubic; at profile released,
    RUN's widths for the check of its released file), ``flops EXTRACTOR``,
    ``flops-routed``, ``table NAME``, ``figure NAME``, ``report``, ``models``.
    """
    ev = cfg["evaluation"]
    base = {"job": kind, "profile": cfg["profile"]}
    if kind == "train":
        return {**base, **_train_slice(cfg, names[0])}
    if kind == "evaluate":  # names: the run, which only a released file's check needs
        out = {**base, "device": cfg["device"], "data": _data(cfg), "evaluation": dict(ev)}
        if names and "released" in cfg:
            ext, up = run_parts(cfg, names[0])
            out.update(released={"runs": [names[0]]}, extractors={ext: extractor_args(cfg, ext)},
                       upsamplers={up: cfg["upsamplers"].get(up) or {}})
        return out
    if kind == "flops":  # a static extractor: its widths and the image sizes
        ext = names[0]
        return {**base, "data": _data(cfg), "evaluation": {"max_images": ev["max_images"]},
                "extractors": {ext: extractor_args(cfg, ext)}}
    if kind == "flops-routed":  # a trained TADT: routed as its evaluation routes it
        return {**base, "device": cfg["device"], "data": _data(cfg), "evaluation": dict(ev)}
    if kind == "table":
        return {**base, **_table_slice(cfg, names[0])}
    if kind == "figure":
        name = names[0]
        out = {**base, "experiments": {"figures": {name: figure(cfg, name)}}}
        if name == "figure1":
            f = figure(cfg, name)
            out["experiments"]["tables"] = {k: table(cfg, k) for k in (f["table"], f["psnr_table"])}
            out["pairs"] = cfg["pairs"]
            out["tadt"] = {"ablations": cfg["tadt"].get("ablations", [])}
        return out
    if kind == "report":
        out = {**base, "data": {"source": cfg["data"]["source"]}, "experiments": cfg["experiments"]}
        if "released" in cfg:
            out["released"] = cfg["released"]
        return out
    if kind == "models":
        return base
    raise HarnessError(f"unknown job kind {kind!r}")


def job_config_text(cfg: dict, kind: str, *names: str) -> str:
    """``job_config`` as one line of JSON (keys sorted: equal slices are equal strings)."""
    return json.dumps(job_config(cfg, kind, *names), sort_keys=True, separators=(",", ":"))
