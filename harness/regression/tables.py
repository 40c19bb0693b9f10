"""The tables layer: every cell of a full embedded run's Tables 1-5 against ``embedded.csv``.

Cells that no training feeds are checked exactly: the bicubic rows' PSNR (within
:data:`TOL_TABLE_DB`: the inference layer's tolerance plus the tables' rounding to
4 decimals), parameter counts and the GFLOPs of static extractors (equal to the
printed digit). Cells of trained models (PSNR, and the GFLOPs of routed
extractors, whose TARC was trained) are chaotic across machines: a single seed
moves by up to 2.24 dB between two CPUs (issue 13), so they are held only to a
sanity band (:data:`BAND_DB`, :data:`BAND_GFLOPS_REL`) that catches a broken
pipeline (a wrong checkpoint, dataset or metric), not drift. Drift of training is
the statistical layer's job (:mod:`harness.regression.training`), drift of
everything downstream of it the exact layer's (:mod:`harness.regression.inference`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from harness.regression.cells import Key, Rule
from harness.regression.inference import REGRESSION_DIR, TOL_PSNR_DB

BASELINE = REGRESSION_DIR / "embedded.csv"
KEYS = ("table", "row", "column")
TABLE_QUANTUM = 1e-4  # the tables print dB and GFLOPs with 4 decimals
TOL_TABLE_DB = TOL_PSNR_DB + TABLE_QUANTUM
BAND_DB = 5.0
BAND_GFLOPS_REL = 0.5

HEADER = """\
Regression baseline of the embedded workflow (config/default.yaml): every cell of
results/table1-5.csv (table, row = the table's key, column, value), written by
  python -m harness check-regression --write-baseline --layers tables
from a full embedded run (snakemake --cores all all). Checked by `make check-regression`:
cells no training feeds (bicubic PSNR, parameters, static GFLOPs) exactly, trained
cells within a sanity band; see harness/regression/tables.py and tests/regression/README.md.
Regenerate only for an intended change, and say why in the commit message.
machine: {machine}
"""


def name(key: Key) -> str:
    return f"table{key[0]} row {key[1]} column {key[2]}"


def _rows_by_key(cfg: dict) -> dict[tuple[str, str], object]:
    """``(table number, row key) -> harness.experiments.Row``."""
    from harness import experiments as X
    from harness.tables import row_key

    out = {}
    for tname, spec in cfg["experiments"]["tables"].items():
        for row in X.table_rows(cfg, tname):
            out[(tname.removeprefix("table"), row_key(spec["key"], row.meta(spec["key"])))] = row
    return out


def trained(key: Key, rows: dict) -> bool:
    """Whether a cell depends on trained weights (see the module docstring)."""
    from harness import experiments as X
    from harness.tables import column_kind

    table, row_key, column = key
    kind = column_kind(column)
    row = rows.get((str(table), row_key))
    if kind == "params":
        return False
    if row is None:  # a row the manifest no longer has: treat as trained (band only)
        return True
    if row.run == X.BICUBIC:
        return False
    return not (kind == "gflops" and row.extractor and not X.is_routed(row.extractor))


def rule_for(cfg: dict, tol_db: float = TOL_TABLE_DB, band_db: float = BAND_DB,
             band_rel: float = BAND_GFLOPS_REL):
    from harness.tables import column_kind

    rows = _rows_by_key(cfg)

    def rule(key: Key) -> Rule:
        kind = column_kind(key[2])
        if trained(key, rows):
            return Rule("abs", band_db) if kind == "psnr" else Rule("rel", band_rel)
        return Rule("abs", tol_db) if kind == "psnr" else Rule("exact")
    return rule


def flatten(results, tables: Sequence[int], cfg: dict) -> dict[Key, float]:
    """Every value cell of the tables as ``{(table, row, column): value}``."""
    import pandas as pd

    from harness.errors import HarnessError
    from harness.tables import read_table, row_key, value_columns

    specs = cfg["experiments"]["tables"]
    cells = {}
    for n in tables:
        path = Path(results) / f"table{n}.csv"
        if not path.is_file():
            raise HarnessError(f"{path} does not exist: run the embedded workflow first "
                               "(snakemake --cores all all)")
        df = read_table(path)
        profiles = set(df["profile"])
        if profiles != {"embedded"}:
            raise HarnessError(f"{path} was made with profile {', '.join(sorted(profiles))}; the "
                               "regression baseline is for the embedded default")
        for _, r in df.iterrows():
            for c in value_columns(df):
                if pd.notna(r[c]):
                    cells[(str(n), row_key(specs[f"table{n}"]["key"], r), c)] = float(r[c])
    return cells
