"""The paper's claims, checked as data: each claim of the experiment manifest
(config/experiments.yaml, key claims) is one of three kinds of test on one or
more source frames, and comes out PASS, FAIL or N/A with the numbers behind it.

- ``compare``: every row matching ``better`` beats every row matching ``worse``
  that agrees with it on the ``per`` columns, in every selected column both have.
- ``trend``: along the selected columns of each row matching ``rows``, the
  values grow (a step down by at most ``dip`` still counts), last above first.
- ``values``: each row matching ``rows`` has its ``expected`` value in ``column``.

Sources are frames with a row per thing compared: our tables (``table1`` ...),
``figure7`` (one row per run, a column ``xS`` of beta per scale) and ``models``
(one row per extractor, ``params_m`` at the paper's widths).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import pandas as pd

from harness.errors import HarnessError
from harness.scales import scale_label
from harness.tables import column_kind, value_columns

PASS, FAIL, NA = "PASS", "FAIL", "N/A"
MAX_LISTED = 8


@dataclass
class Check:
    status: str
    evidence: str


@dataclass
class Claim:
    number: int
    text: str
    source: str
    ours: Check
    published: Check | None = None
    kind: str = "paper"  # "paper" claim or "sanity" check

    @property
    def status(self) -> str:
        return self.ours.status


# --------------------------------------------------------------------------- helpers

def fmt(x: float, sign: bool = False) -> str:
    """Two decimals, as the paper prints; small numbers (embedded GFLOPs, params) keep 3 significant digits."""
    if x is None or (isinstance(x, float) and pd.isna(x)):
        return "—"
    if x != 0 and abs(x) < 0.1:
        return f"{x:+.3g}" if sign else f"{x:.3g}"
    return f"{x:+.2f}" if sign else f"{x:.2f}"


def listed(items: list[str]) -> str:
    if len(items) <= MAX_LISTED:
        return "; ".join(items)
    return "; ".join(items[:MAX_LISTED]) + f"; and {len(items) - MAX_LISTED} more"


def _matches(row: pd.Series, filt: Mapping[str, Any]) -> bool:
    for col, want in filt.items():
        if col not in row.index:
            return False
        v = str(row[col])
        if isinstance(want, Mapping):
            if v == str(want["not"]):
                return False
        elif isinstance(want, list):
            if v not in [str(w) for w in want]:
                return False
        elif v != str(want):
            return False
    return True


def select(df: pd.DataFrame, filt: Mapping[str, Any]) -> pd.DataFrame:
    return df[[_matches(r, filt) for _, r in df.iterrows()]] if len(df) else df


def _scale_of(column: str) -> float | None:
    tail = column.rsplit("x", 1)[-1]
    try:
        return float(tail)
    except ValueError:
        return None


def _kind(column: str) -> str | None:
    try:
        return column_kind(column)
    except HarnessError:
        return None


def columns_of(df: pd.DataFrame, spec: Any) -> list[str]:
    """The manifest's ``columns``: kinds (psnr/gflops/params/all) or names, or {kind, above}."""
    if isinstance(spec, Mapping):
        wanted, above = [spec["kind"]], spec.get("above")
    else:
        wanted, above = (list(spec) if isinstance(spec, list) else [spec]), None
    cols = [c for c in value_columns(df) if "all" in wanted or c in wanted or _kind(c) in wanted]
    if above is not None:
        cols = [c for c in cols if (_scale_of(c) or 0) > float(above)]
    return cols


def _label(row: pd.Series) -> str:
    """A row's name in the evidence: its run, or extractor-upsampler (bicubic alone)."""
    if "run" in row.index and pd.notna(row["run"]) and str(row["run"]):
        return str(row["run"])
    ext, up = str(row.get("extractor", "")), str(row.get("upsampler", "none"))
    return ext if up in ("none", "nan", "") else f"{ext}-{up}"


# --------------------------------------------------------------------------- kinds

def check_compare(df: pd.DataFrame, c: Mapping) -> Check:
    better, worse = select(df, c["better"]), select(df, c["worse"])
    if better.empty or worse.empty:
        return Check(NA, "rows to compare are not in the table")
    cols = columns_of(df, c.get("columns", "all"))
    higher = c.get("direction", "higher") == "higher"
    margin, ties = float(c.get("margin", 0)), bool(c.get("ties", False))
    per = list(c.get("per", []))
    fails, margins = [], []
    for _, a in better.iterrows():
        for _, b in worse.iterrows():
            if any(str(a[p]) != str(b[p]) for p in per) or a.name == b.name:
                continue
            for col in cols:
                if pd.isna(a[col]) or pd.isna(b[col]):
                    continue
                d = (a[col] - b[col]) if higher else (b[col] - a[col])
                where = f"{_label(a)} vs {_label(b)} {col}"
                margins.append((d, where))
                if not (d > margin or (ties and d >= margin)):
                    fails.append(f"{where}: {fmt(a[col])} vs {fmt(b[col])}")
    if not margins:
        return Check(NA, "no common cells to compare")
    if fails:
        return Check(FAIL, f"{len(fails)}/{len(margins)} cells fail: " + listed(fails))
    lo = min(margins, key=lambda m: m[0])
    return Check(PASS, f"{len(margins)}/{len(margins)} cells hold; smallest margin {fmt(lo[0], True)} at {lo[1]}")


def check_trend(df: pd.DataFrame, c: Mapping) -> Check:
    rows = select(df, c["rows"])
    if rows.empty:
        return Check(NA, "no rows for the trend")
    cols = sorted(columns_of(df, c.get("columns", "all")), key=lambda col: _scale_of(col) or 0)
    dip = float(c.get("dip", 0))
    parts, fails = [], []
    for _, r in rows.iterrows():
        vals = [(col, r[col]) for col in cols if pd.notna(r[col])]
        if len(vals) < 2:
            continue
        parts.append(", ".join(f"{col}: {v:.3f}" for col, v in vals))
        dips = [f"{vals[i][0]}->{vals[i + 1][0]}: {vals[i][1]:.3f}->{vals[i + 1][1]:.3f}"
                for i in range(len(vals) - 1) if vals[i + 1][1] < vals[i][1] - dip]
        if dips:
            fails.append(f"drops by more than {dip:g}: " + listed(dips))
        elif not vals[-1][1] > vals[0][1]:
            fails.append("the value at the largest scale is not above the smallest")
    if not parts:
        return Check(NA, "fewer than two values")
    if fails:
        return Check(FAIL, "; ".join(fails) + f" ({'; '.join(parts)})")
    return Check(PASS, f"grows ({'; '.join(parts)})")


def check_values(df: pd.DataFrame, c: Mapping) -> Check:
    rows = select(df, c["rows"])
    col = c["column"]
    if rows.empty or col not in df.columns:
        return Check(NA, f"no {col} for the rows")
    parts, fails = [], []
    for _, r in rows.iterrows():
        name = str(r.get("extractor", r.name))
        want = c["expected"].get(name)
        if want is None or pd.isna(r[col]):
            continue
        got = round(float(r[col]), c["decimals"]) if c.get("decimals") is not None else float(r[col])
        parts.append(f"{name} {got:g} (expected {want:g})")
        if abs(got - want) > float(c.get("tolerance", 0)) + 1e-9:
            fails.append(name)
    if not parts:
        return Check(NA, "no expected value found")
    return Check(FAIL if fails else PASS, "; ".join(parts))


KINDS = {"compare": check_compare, "trend": check_trend, "values": check_values}


def check(frames: Mapping[str, pd.DataFrame | None], c: Mapping, sources: list[str]) -> Check:
    """One claim on the given frames; several sources are checked one by one and merged."""
    results = []
    for s in sources:
        df = frames.get(s)
        results.append((s, Check(NA, f"{s} not available") if df is None else KINDS[c["kind"]](df, c)))
    present = [(s, r) for s, r in results if r.status != NA]
    if not present:
        return results[0][1]
    if len(results) == 1:
        return results[0][1]
    status = FAIL if any(r.status == FAIL for _, r in present) else PASS
    return Check(status, " | ".join(f"{s}: {r.status}, {r.evidence}" for s, r in present))


# --------------------------------------------------------------------------- sources

def figure7_frame(data: pd.DataFrame | None) -> pd.DataFrame | None:
    """figure7.csv (run, scale, beta) as one row per run with a column per scale."""
    if data is None or data.empty:
        return None
    wide = data.pivot_table(index="run", columns="scale", values="beta", sort=False)
    wide.columns = [scale_label(s) for s in wide.columns]
    return wide.reset_index()


def models_frame(models: Any) -> pd.DataFrame | None:
    """The JSON of ``models --json`` as one row per extractor with ``params_m``."""
    if not isinstance(models, Mapping) or not isinstance(models.get("extractors"), Mapping):
        return None
    return pd.DataFrame([{"extractor": k, "params_m": v / 1e6} for k, v in models["extractors"].items()])


def source_label(c: Mapping) -> str:
    names = {"models": "models --json", "figure7": "Figure 7"}
    return ", ".join(names.get(s, s.replace("table", "Table ")) for s in c["sources"])


def check_claims(claims: list[Mapping], ours: Mapping[str, pd.DataFrame | None],
                 paper: Mapping[str, pd.DataFrame | None]) -> list[Claim]:
    out = []
    for c in claims:
        published = None
        if c.get("published"):
            srcs = [c["published_source"]] if c.get("published_source") else c["sources"]
            published = check(paper, c, srcs)
        out.append(Claim(c["id"], c["text"], source_label(c), check(ours, c, c["sources"]), published,
                         kind="sanity" if c.get("sanity") else "paper"))
    return out
