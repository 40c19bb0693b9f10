"""The paper's tables built from the per-image CSVs of ``evaluate`` and ``flops``.

Every table is a pandas DataFrame in the paper's layout, with two columns that
say where its numbers come from: ``profile`` (``embedded``/``paper``/``custom``,
``released`` for the reference repositories' checkpoints; ``published`` in
``paper/*.csv``) and ``dataset``. The published tables in
``paper/`` use exactly the same columns, so a row of ours and the paper's row
with the same key are the same cell.

What each table holds (its rows, datasets, scales and kinds of value) comes
from the experiment manifest (config/experiments.yaml, through
harness.experiments); the column names follow from it:

- ``xS`` (one dataset) or ``<set>_xS`` (several): mean PSNR in dB at scale S;
- ``params_m``: extractor parameters in millions at this profile's widths;
- ``gflops_xS`` (and ``psnr_xS`` beside it when a table holds both): the
  extractor's GFLOPs averaged over the images of the set.

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
from harness.scales import scale_label

META_COLUMNS = ("profile", "dataset", "upsampler", "extractor", "variant", "run")
EMPTY = "-"

#: The per-image CSV written by ``python -m harness evaluate`` (harness.evaluate.evaluate_rows):
#: ``active_branches``, ``beta`` and ``routing`` (TADT's bit string) are empty for static models.
EVAL_COLUMNS = ("run", "dataset", "scale", "image", "psnr", "active_branches", "beta", "routing")
_EVAL_READ = EVAL_COLUMNS[:5]  # what a table needs of it
FLOPS_COLUMNS = ("image", "scale", "gflops")


# --------------------------------------------------------------------------- names

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


def row_key(key: Sequence[str], row: Mapping) -> str:
    return "/".join(str(row[k]) for k in key)


# --------------------------------------------------------------------------- inputs

_NUMERIC_COLUMNS = ("scale", "psnr", "gflops")


def _read_checked_csv(path: str | Path, what: str, columns: Iterable[str]) -> pd.DataFrame:
    """Read a CSV the workflow wrote; one clear error if it is missing, unreadable (empty,
    binary, malformed), lacks a column, or holds a non-number in a numeric column."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{what} {path} does not exist")
    try:
        df = pd.read_csv(path, dtype={"routing": str})  # bit strings, not numbers
    except pd.errors.EmptyDataError:
        raise HarnessError(f"{what} {path} is empty (not even a header line)") from None
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{what} {path} is not a text CSV (byte 0x{exc.object[exc.start]:02x} "
                           f"at offset {exc.start} is not UTF-8)") from None
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise HarnessError(f"{what} {path} is not a readable CSV: {reason}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise HarnessError(f"{what} {path} lacks column(s) {', '.join(missing)}")
    for col in (c for c in columns if c in _NUMERIC_COLUMNS):
        bad = df[col].notna() & pd.to_numeric(df[col], errors="coerce").isna()
        if bad.any():
            row = int(bad.idxmax())
            raise HarnessError(f"{what} {path}: column {col} holds {df[col][row]!r} on data row "
                               f"{row + 1}, not a number")
    return df


def read_evals(paths: Iterable[str | Path]) -> pd.DataFrame:
    frames = [_read_checked_csv(p, "evaluation CSV", _EVAL_READ) for p in paths]
    if not frames:
        return pd.DataFrame(columns=list(_EVAL_READ))
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
        raise HarnessError(f"no PSNR for run {run} on {dataset} at {scale_label(scale)} "
                           "in the evaluation CSVs given")
    return float(sel["psnr"].astype(float).mean())


def mean_gflops(flops: pd.DataFrame, name: str, scale: float) -> float:
    sel = flops[(flops["name"] == name) & _close(flops["scale"], scale)]
    if sel.empty:
        raise HarnessError(f"no FLOPs for {name} at {scale_label(scale)} in the FLOPs CSVs given")
    return float(sel["gflops"].astype(float).mean())


def count_params(cfg: dict, extractor: str) -> int:
    """Parameters of ``extractor`` at this profile's widths (TARC included for TADT)."""
    import torch

    from extractors import create_extractor
    from harness.config import extractor_args
    from harness.registry import count_parameters

    with torch.device("meta"):  # shapes only: no memory, no random draws
        return count_parameters(create_extractor(extractor, **extractor_args(cfg, extractor)))


# --------------------------------------------------------------------------- builder

def value_columns_for(t: Mapping) -> list[tuple[str, str | None, float | None, str]]:
    """``(column, dataset, scale, kind)`` of a manifest table, in the paper's order."""
    per_scale = [k for k in t["values"] if k != "params"]
    several = len(t["datasets"]) > 1
    cols: list[tuple[str, str | None, float | None, str]] = []
    if "params" in t["values"]:
        cols.append(("params_m", None, None, "params"))
    for ds in t["datasets"]:
        for s in t["scales"]:
            for kind in per_scale:
                name = scale_label(s) if kind == "psnr" and len(per_scale) == 1 else f"{kind}_{scale_label(s)}"
                cols.append((f"{ds}_{name}" if several else name, ds, float(s), kind))
    return cols


def build_table(name: str, cfg: dict, evals: pd.DataFrame | None = None,
                flops: pd.DataFrame | None = None, params: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Our table ``name`` of the manifest, every cell from the CSVs given (or an error)."""
    from harness import experiments as X

    t = X.table(cfg, name)
    evals = evals if evals is not None else read_evals([])
    flops = flops if flops is not None else read_flops({})
    cols = value_columns_for(t)
    rows = []
    for r in X.table_rows(cfg, name):
        row = {"profile": cfg["profile"], "dataset": "+".join(t["datasets"]), **r.meta(t["key"])}
        for col, ds, s, kind in cols:
            if kind == "params":
                n = params[r.extractor] if params and r.extractor in params else count_params(cfg, r.extractor)
                row[col] = n / 1e6
            elif kind == "psnr":
                row[col] = mean_psnr(evals, r.run, ds, s)
            else:
                row[col] = mean_gflops(flops, X.flops_name(cfg, r.run), s)
        rows.append(row)
    if not rows:
        raise HarnessError(f"{name}: none of its rows is trained by this config")
    return pd.DataFrame(rows)


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
