"""The paper's Tables 1-5 built from the per-image CSVs of ``evaluate`` and ``flops``.

Every table is a pandas DataFrame in the paper's layout, with two columns that
say where its numbers come from: ``profile`` (``embedded``/``paper``/``custom``;
``published`` in ``paper/*.csv``) and ``dataset``. The published tables in
``paper/`` use exactly the same columns, so a row of ours and the paper's row
with the same key (``TABLE_KEYS``) are the same cell.

Layouts (``xS`` = mean PSNR in dB over the images of the set at scale S):

- Table 1: ``upsampler, extractor, x2 ... x30`` on ``evaluation.table1.dataset``;
  a ``bicubic`` row (upsampler ``none``) and every extractor x upsampler pair.
- Table 2: ``upsampler, extractor, <set>_xS`` for each benchmark set.
- Table 3: ``upsampler (liif), extractor, params_m, gflops_xS``: extractor
  parameters (millions) at this profile's widths and GFLOPs of the extractor
  averaged over the images of the set.
- Table 4: ``upsampler, variant, run, xS`` for the beta variants.
- Table 5: ``upsampler, variant, run, psnr_xS, gflops_xS`` with and without L_beta.

Missing cells are errors here (a table of ours is complete or not written);
the published tables write ``-`` for cells the paper leaves empty.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd

from harness.errors import HarnessError
from harness.io import atomic_path

META_COLUMNS = ("profile", "dataset", "upsampler", "extractor", "variant", "run")
TABLE_KEYS = {1: ("upsampler", "extractor"), 2: ("upsampler", "extractor"),
              3: ("upsampler", "extractor"), 4: ("variant",), 5: ("variant",)}
EMPTY = "-"

# Table 4 and 5 rows: (variant label, run name), in the paper's order.
TABLE4_VARIANTS = (("beta=0.5", "tadt-liif-beta0.5"), ("beta=0.25s", "tadt-liif-beta0.25s"),
                   ("TARC", "tadt-liif"))
TABLE5_VARIANTS = (("TADT w L_beta", "tadt-liif"), ("TADT w/o L_beta", "tadt-liif-nolbeta"))

EVAL_COLUMNS = ("run", "dataset", "scale", "image", "psnr")
FLOPS_COLUMNS = ("image", "scale", "gflops")


# --------------------------------------------------------------------------- names

def scale_label(scale: float) -> str:
    """``2`` -> ``x2``, ``2.5`` -> ``x2.5`` (column names of every table)."""
    return f"x{float(scale):g}"


def value_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in META_COLUMNS]


def column_kind(column: str) -> str:
    """``psnr``, ``gflops`` or ``params`` for a value column of any table."""
    if column.startswith("gflops"):
        return "gflops"
    if column.startswith("params"):
        return "params"
    if re.search(r"(^|_)x\d", column):
        return "psnr"
    raise HarnessError(f"column {column!r} is neither PSNR, GFLOPs nor params")


def row_key(table: int, row: Mapping) -> str:
    return "/".join(str(row[k]) for k in TABLE_KEYS[table])


def _pairs(cfg: dict) -> list[tuple[str, str]]:
    from harness.config import pair_runs

    out = []
    for run in pair_runs(cfg):
        for up in cfg.get("pairs", {}).get("upsamplers", ["metasr", "liif", "lte"]):
            if run.endswith("-" + up):
                out.append((up, run[: -len(up) - 1]))
                break
    # Upsampler-major order, as in the paper (MetaSR block, LIIF block, LTE block).
    ups = list(dict.fromkeys(u for u, _ in out))
    return [(u, e) for u in ups for (uu, e) in out if uu == u]


# --------------------------------------------------------------------------- inputs

def _read_checked_csv(path: str | Path, what: str, columns: Iterable[str]) -> pd.DataFrame:
    """Read a CSV the workflow wrote; one clear error if it is missing or lacks a column."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{what} {path} does not exist")
    df = pd.read_csv(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise HarnessError(f"{what} {path} lacks column(s) {', '.join(missing)}")
    return df


def read_evals(paths: Iterable[str | Path]) -> pd.DataFrame:
    frames = [_read_checked_csv(p, "evaluation CSV", EVAL_COLUMNS) for p in paths]
    if not frames:
        return pd.DataFrame(columns=list(EVAL_COLUMNS))
    out = pd.concat(frames, ignore_index=True)
    out["run"] = out["run"].astype(str)
    out["dataset"] = out["dataset"].astype(str)
    out["scale"] = out["scale"].astype(float)
    return out


def read_flops(named: Mapping[str, str | Path]) -> pd.DataFrame:
    """``{name: csv}`` -> one frame with a ``name`` column (extractor or TADT run)."""
    frames = []
    for name, p in named.items():
        df = _read_checked_csv(p, f"FLOPs CSV ({name})", FLOPS_COLUMNS)
        df.insert(0, "name", name)
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["name", *FLOPS_COLUMNS])
    out = pd.concat(frames, ignore_index=True)
    out["image"] = out["image"].astype(str)
    out["scale"] = out["scale"].astype(float)
    return out


def parse_named(items: Sequence[str] | None, what: str) -> dict[str, str]:
    """``["swinir=path.csv", ...]`` -> ``{"swinir": "path.csv"}``."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise HarnessError(f"{what} must be given as NAME=PATH, got {item!r}")
        if name in out:
            raise HarnessError(f"{what} {name!r} is given twice")
        out[name] = path
    return out


def _close(a: pd.Series, s: float) -> pd.Series:
    return (a - float(s)).abs() < 1e-6


def mean_psnr(evals: pd.DataFrame, run: str, dataset: str, scale: float) -> float:
    sel = evals[(evals["run"] == run) & (evals["dataset"] == dataset) & _close(evals["scale"], scale)]
    if sel.empty:
        raise HarnessError(f"no PSNR for run {run} on {dataset} at x{float(scale):g} "
                           "in the evaluation CSVs given")
    return float(sel["psnr"].astype(float).mean())


def mean_gflops(flops: pd.DataFrame, name: str, scale: float) -> float:
    sel = flops[(flops["name"] == name) & _close(flops["scale"], scale)]
    if sel.empty:
        raise HarnessError(f"no FLOPs for {name} at x{float(scale):g} in the FLOPs CSVs given")
    return float(sel["gflops"].astype(float).mean())


def count_params(cfg: dict, extractor: str) -> int:
    """Parameters of ``extractor`` at this profile's widths (TARC included for TADT)."""
    from extractors import create_extractor
    from harness.config import extractor_args

    model = create_extractor(extractor, **extractor_args(cfg, extractor))
    return int(sum(p.numel() for p in model.parameters()))


# --------------------------------------------------------------------------- builders

def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def build_table1(cfg: dict, evals: pd.DataFrame) -> pd.DataFrame:
    t = cfg["evaluation"]["table1"]
    ds, scales = t["dataset"], t["scales"]
    rows = []
    for up, ext, run in [("none", "bicubic", "bicubic")] + [(u, e, f"{e}-{u}") for u, e in _pairs(cfg)]:
        row = {"profile": cfg["profile"], "dataset": ds, "upsampler": up, "extractor": ext}
        row.update({scale_label(s): mean_psnr(evals, run, ds, s) for s in scales})
        rows.append(row)
    return _frame(rows)


def build_table2(cfg: dict, evals: pd.DataFrame) -> pd.DataFrame:
    t = cfg["evaluation"]["table2"]
    rows = []
    for up, ext, run in [("none", "bicubic", "bicubic")] + [(u, e, f"{e}-{u}") for u, e in _pairs(cfg)]:
        row = {"profile": cfg["profile"], "dataset": "+".join(t["datasets"]),
               "upsampler": up, "extractor": ext}
        for ds in t["datasets"]:
            row.update({f"{ds}_{scale_label(s)}": mean_psnr(evals, run, ds, s) for s in t["scales"]})
        rows.append(row)
    return _frame(rows)


def build_table3(cfg: dict, flops: pd.DataFrame, params: Mapping[str, int] | None = None) -> pd.DataFrame:
    """``flops`` names: static extractors by extractor name, TADT by ``tadt-liif``."""
    t = cfg["evaluation"]["table3"]
    exts = list(dict.fromkeys(e for _, e in _pairs(cfg)))
    rows = []
    for ext in exts:
        name = "tadt-liif" if ext == "tadt" else ext
        n = params[ext] if params is not None and ext in params else count_params(cfg, ext)
        row = {"profile": cfg["profile"], "dataset": t["dataset"], "upsampler": "liif",
               "extractor": ext, "params_m": n / 1e6}
        row.update({f"gflops_{scale_label(s)}": mean_gflops(flops, name, s) for s in t["scales"]})
        rows.append(row)
    return _frame(rows)


def build_table4(cfg: dict, evals: pd.DataFrame) -> pd.DataFrame:
    t = cfg["evaluation"]["table4"]
    rows = []
    for variant, run in TABLE4_VARIANTS:
        row = {"profile": cfg["profile"], "dataset": t["dataset"], "upsampler": "liif",
               "variant": variant, "run": run}
        row.update({scale_label(s): mean_psnr(evals, run, t["dataset"], s) for s in t["scales"]})
        rows.append(row)
    return _frame(rows)


def build_table5(cfg: dict, evals: pd.DataFrame, flops: pd.DataFrame) -> pd.DataFrame:
    t = cfg["evaluation"]["table5"]
    rows = []
    for variant, run in TABLE5_VARIANTS:
        row = {"profile": cfg["profile"], "dataset": t["dataset"], "upsampler": "liif",
               "variant": variant, "run": run}
        for s in t["scales"]:
            row[f"psnr_{scale_label(s)}"] = mean_psnr(evals, run, t["dataset"], s)
            row[f"gflops_{scale_label(s)}"] = mean_gflops(flops, run, s)
        rows.append(row)
    return _frame(rows)


def build_table(n: int, cfg: dict, evals: pd.DataFrame | None = None,
                flops: pd.DataFrame | None = None, params: Mapping[str, int] | None = None) -> pd.DataFrame:
    evals = evals if evals is not None else read_evals([])
    flops = flops if flops is not None else read_flops({})
    if n == 1:
        return build_table1(cfg, evals)
    if n == 2:
        return build_table2(cfg, evals)
    if n == 3:
        return build_table3(cfg, flops, params)
    if n == 4:
        return build_table4(cfg, evals)
    if n == 5:
        return build_table5(cfg, evals, flops)
    raise HarnessError(f"there is no Table {n} (tables: 1-5)")


# --------------------------------------------------------------------------- CSV

_DECIMALS = {"psnr": 4, "gflops": 4, "params": 6}


def format_cell(column: str, value) -> str:
    if column in META_COLUMNS:
        return str(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return EMPTY
    return f"{float(value):.{_DECIMALS[column_kind(column)]}f}"


def to_csv_text(df: pd.DataFrame) -> str:
    """Fixed formatting (4 decimals for dB and GFLOPs, 6 for millions of parameters)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(df.columns))
    for _, row in df.iterrows():
        w.writerow([format_cell(c, row[c]) for c in df.columns])
    return buf.getvalue()


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(to_csv_text(df))


def read_table(path: str | Path) -> pd.DataFrame:
    """A table of ours or a published one: key columns as text, cells as floats (NaN for ``-``)."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"table {path} does not exist")
    df = pd.read_csv(path, dtype=str, keep_default_na=False, comment="#")
    for c in value_columns(df):
        df[c] = pd.to_numeric(df[c].replace({EMPTY: None, "": None}), errors="raise")
    return df
