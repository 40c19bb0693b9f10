"""The comparison report: each reproduced table next to the published one, and
the paper's claims checked one by one (PASS / FAIL / N/A, with the numbers).

Inputs are files only: our ``tableN.csv`` and ``figure7.csv`` under a results
folder, the published ``paper/tableN.csv`` and the JSON of ``python -m harness
models --json``. A missing input makes the claims that need it N/A rather than
stopping the report, so the report can be built from a partial results folder.

Every table of ours carries the profile that produced it. Rows made at the
embedded profile (small widths, a short schedule, scikit-image photographs
standing in for the datasets) are labelled so: their numbers are never the
paper's, and their differences to the published values measure nothing.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd

from harness.tables import TABLE_KEYS, column_kind, read_table, row_key, value_columns

PASS, FAIL, NA = "PASS", "FAIL", "N/A"
TABLE_TITLES = {
    1: "Table 1: PSNR (dB) of every extractor x upsampler pair",
    2: "Table 2: PSNR (dB) on the benchmark sets",
    3: "Table 3: parameters (M) and GFLOPs of the extractors with LIIF",
    4: "Table 4: PSNR (dB) of the beta variants",
    5: "Table 5: TADT with and without L_beta: PSNR (dB) and GFLOPs",
}
PAPER_PARAMS_M = {"baseline": 9.17, "tadt": 9.18}  # Table 3, at the paper's widths
BETA_DIP = 0.01  # a dip of beta this small between neighbouring scales still counts as growing
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


@dataclass
class Inputs:
    ours: dict[int, pd.DataFrame | None]
    paper: dict[int, pd.DataFrame | None]
    beta: pd.DataFrame | None = None
    models: Any = None
    cfg: dict | None = None
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- loading

def _maybe_table(path: Path) -> pd.DataFrame | None:
    return read_table(path) if path.is_file() else None


def load_inputs(results: str | Path, paper: str | Path, models: str | Path | None = None,
                cfg: dict | None = None) -> Inputs:
    results, paper = Path(results), Path(paper)
    inp = Inputs(ours={n: _maybe_table(results / f"table{n}.csv") for n in range(1, 6)},
                 paper={n: _maybe_table(paper / f"table{n}.csv") for n in range(1, 6)}, cfg=cfg)
    beta = results / "figure7.csv"
    inp.beta = pd.read_csv(beta) if beta.is_file() else None
    if models is not None and Path(models).is_file():
        try:
            inp.models = json.loads(Path(models).read_text())
        except json.JSONDecodeError as exc:
            inp.notes.append(f"{models} is not valid JSON ({exc}); the parameter claim is N/A")
    return inp


# --------------------------------------------------------------------------- helpers

def _n(x: float, sign: bool = False) -> str:
    """Two decimals, as the paper prints; small numbers (embedded GFLOPs, params) keep 3 significant digits."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if x != 0 and abs(x) < 0.1:
        return f"{x:+.3g}" if sign else f"{x:.3g}"
    return f"{x:+.2f}" if sign else f"{x:.2f}"


def _listed(items: list[str]) -> str:
    if len(items) <= MAX_LISTED:
        return "; ".join(items)
    return "; ".join(items[:MAX_LISTED]) + f"; and {len(items) - MAX_LISTED} more"


def _row(df: pd.DataFrame, **match) -> pd.Series | None:
    sel = df
    for k, v in match.items():
        if k not in sel.columns:
            return None
        sel = sel[sel[k] == v]
    return None if sel.empty else sel.iloc[0]


def _compare_rows(df: pd.DataFrame | None, better: Mapping, worse: Mapping, columns: list[str],
                  what: str, higher_is_better: bool = True, unit: str = "dB") -> Check:
    """Is row ``better`` strictly better than row ``worse`` in every column (both present)?"""
    if df is None:
        return Check(NA, "table not available")
    a, b = _row(df, **better), _row(df, **worse)
    if a is None or b is None:
        return Check(NA, f"rows for {what} not in the table")
    fails, margins = [], []
    for c in columns:
        if c not in df.columns or pd.isna(a[c]) or pd.isna(b[c]):
            continue
        d = (a[c] - b[c]) if higher_is_better else (b[c] - a[c])
        margins.append((d, c))
        if not d > 0:
            fails.append(f"{c}: {_n(a[c])} vs {_n(b[c])}")
    if not margins:
        return Check(NA, f"no common cells for {what}")
    if fails:
        return Check(FAIL, f"{len(fails)}/{len(margins)} cells fail ({what}): " + _listed(fails))
    lo = min(margins)
    return Check(PASS, f"{len(margins)}/{len(margins)} cells ({what}); smallest margin "
                       f"{_n(lo[0], True)} {unit} at {lo[1]}")


def _merge_checks(checks: list[tuple[str, Check]]) -> Check:
    present = [(k, c) for k, c in checks if c.status != NA]
    if not present:
        return Check(NA, checks[0][1].evidence if checks else "no data")
    status = FAIL if any(c.status == FAIL for _, c in present) else PASS
    return Check(status, " | ".join(f"{k}: {c.status}, {c.evidence}" for k, c in present))


def _psnr_columns(df: pd.DataFrame | None) -> list[str]:
    return [] if df is None else [c for c in value_columns(df) if column_kind(c) == "psnr"]


def _gflops_columns(df: pd.DataFrame | None) -> list[str]:
    return [] if df is None else [c for c in value_columns(df) if column_kind(c) == "gflops"]


# --------------------------------------------------------------------------- claims

def tadt_above_baseline(df: pd.DataFrame | None) -> Check:
    """Tables 1/2: TADT's PSNR above the Baseline's, per upsampler and scale."""
    if df is None:
        return Check(NA, "table not available")
    ups = [u for u in dict.fromkeys(df["upsampler"]) if u != "none"]
    return _merge_checks([(u, _compare_rows(df, {"upsampler": u, "extractor": "tadt"},
                                            {"upsampler": u, "extractor": "baseline"},
                                            _psnr_columns(df), f"TADT > Baseline with {u}"))
                          for u in ups])


def tadt_flops_below_baseline(df: pd.DataFrame | None) -> Check:
    return _compare_rows(df, {"extractor": "tadt"}, {"extractor": "baseline"}, _gflops_columns(df),
                         "TADT GFLOPs < Baseline GFLOPs", higher_is_better=False, unit="GFLOPs")


def ours_cheaper_than_competitors(df: pd.DataFrame | None) -> Check:
    """Table 3: Baseline and TADT below the paper's competitors in parameters and GFLOPs."""
    if df is None:
        return Check(NA, "table not available")
    competitors = [e for e in ("rdn", "rcan", "swinir", "nlsa", "cat-r-2") if e in set(df["extractor"])]
    if not competitors:
        return Check(NA, "no competitor rows (RDN, RCAN, SwinIR, NLSA, CAT-R-2)")
    cols = ["params_m"] + _gflops_columns(df)
    checks = []
    for ours in ("baseline", "tadt"):
        for other in competitors:
            checks.append((f"{ours} vs {other}",
                           _compare_rows(df, {"extractor": ours}, {"extractor": other}, cols,
                                         f"{ours} < {other}", higher_is_better=False, unit="")))
    merged = _merge_checks(checks)
    if merged.status == PASS:
        return Check(PASS, f"Baseline and TADT below {', '.join(competitors)} in params and every "
                           f"GFLOPs column ({len(checks)} comparisons)")
    return Check(merged.status, _listed([f"{k}: {c.evidence}" for k, c in checks if c.status == FAIL]))


def lbeta_lowers_flops(df: pd.DataFrame | None) -> Check:
    return _compare_rows(df, {"run": "tadt-liif"}, {"run": "tadt-liif-nolbeta"}, _gflops_columns(df),
                         "GFLOPs with L_beta < without", higher_is_better=False, unit="GFLOPs")


def beta05_below_tarc(df: pd.DataFrame | None) -> Check:
    if df is None:
        return Check(NA, "table not available")
    cols = [c for c in _psnr_columns(df) if float(c.split("x")[-1]) > 2]
    return _compare_rows(df, {"run": "tadt-liif"}, {"run": "tadt-liif-beta0.5"}, cols,
                         "TARC > beta=0.5 above x2")


def beta025s_below_tarc_x2(df: pd.DataFrame | None) -> Check:
    return _compare_rows(df, {"run": "tadt-liif"}, {"run": "tadt-liif-beta0.25s"}, ["x2"],
                         "TARC > beta=0.25s at x2")


def beta_grows(beta: pd.DataFrame | None, run: str = "tadt-liif") -> Check:
    if beta is None:
        return Check(NA, "figure7.csv not available")
    d = beta[beta["run"] == run].sort_values("scale")
    if len(d) < 2:
        return Check(NA, f"no beta values for {run}")
    s, b = d["scale"].tolist(), d["beta"].tolist()
    values = ", ".join(f"x{x:g}: {y:.3f}" for x, y in zip(s, b))
    dips = [f"x{s[i]:g}->x{s[i + 1]:g}: {b[i]:.3f}->{b[i + 1]:.3f}"
            for i in range(len(b) - 1) if b[i + 1] < b[i] - BETA_DIP]
    if b[-1] > b[0] and not dips:
        return Check(PASS, f"beta grows ({values})")
    why = f"drops by more than {BETA_DIP}: " + _listed(dips) if dips else "beta at the largest scale is not above the smallest"
    return Check(FAIL, f"{why} ({values})")


def no_lbeta_higher_beta(beta: pd.DataFrame | None) -> Check:
    if beta is None:
        return Check(NA, "figure7.csv not available")
    w = beta[beta["run"] == "tadt-liif"].set_index("scale")["beta"]
    wo = beta[beta["run"] == "tadt-liif-nolbeta"].set_index("scale")["beta"]
    common = sorted(set(w.index) & set(wo.index))
    if not common:
        return Check(NA, "beta of tadt-liif and tadt-liif-nolbeta not both available")
    fails = [f"x{s:g}: {wo[s]:.3f} < {w[s]:.3f}" for s in common if wo[s] < w[s]]
    top = common[-1]
    ev = f"at x{top:g}: w/o {wo[top]:.3f}, w {w[top]:.3f}; mean w/o {wo[common].mean():.3f}, w {w[common].mean():.3f}"
    if fails:
        return Check(FAIL, "beta without L_beta below beta with it at " + _listed(fails) + f" ({ev})")
    return Check(PASS, f"beta without L_beta >= with it at all {len(common)} scales ({ev})")


def _param_count(models: Any, name: str) -> int | None:
    """Find ``name``'s parameter count in the JSON of ``models --json`` (tolerant of its layout)."""
    if isinstance(models, Mapping):
        for key in ("extractors", "models"):
            if key in models:
                found = _param_count(models[key], name)
                if found is not None:
                    return found
        if name in models:
            v = models[name]
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return int(v)
            if isinstance(v, Mapping):
                for k in ("params", "parameters", "param_count", "n_params"):
                    if isinstance(v.get(k), (int, float)):
                        return int(v[k])
    if isinstance(models, list):
        for item in models:
            if isinstance(item, Mapping) and item.get("name") == name and item.get("kind", "extractor") == "extractor":
                for k in ("params", "parameters", "param_count", "n_params"):
                    if isinstance(item.get(k), (int, float)):
                        return int(item[k])
    return None


def paper_params(models: Any) -> Check:
    if models is None:
        return Check(NA, "models.json not available")
    parts, fails = [], []
    for name, want in PAPER_PARAMS_M.items():
        n = _param_count(models, name)
        if n is None:
            return Check(NA, f"no parameter count for {name} in models.json")
        got = round(n / 1e6, 2)
        parts.append(f"{name} {n:,} = {got:.2f}M (paper {want:.2f}M)")
        if abs(got - want) > 1e-9:
            fails.append(name)
    return Check(FAIL if fails else PASS, "; ".join(parts))


def above_bicubic(df: pd.DataFrame | None) -> Check:
    if df is None:
        return Check(NA, "table not available")
    bic = _row(df, extractor="bicubic")
    if bic is None:
        return Check(NA, "no bicubic row")
    cols = _psnr_columns(df)
    fails, n = [], 0
    for _, r in df.iterrows():
        if r["extractor"] == "bicubic":
            continue
        for c in cols:
            if pd.isna(r[c]) or pd.isna(bic[c]):
                continue
            n += 1
            if not r[c] > bic[c]:
                fails.append(f"{r['extractor']}-{r['upsampler']} {c}: {_n(r[c])} vs {_n(bic[c])}")
    if fails:
        return Check(FAIL, f"{len(fails)}/{n} cells at or below bicubic: " + _listed(fails))
    return Check(PASS, f"all {n} cells above bicubic")


def check_claims(inp: Inputs) -> list[Claim]:
    o, p = inp.ours, inp.paper
    claims = [
        Claim(1, "TADT's PSNR is above the Baseline's for every upsampler and scale (DIV2K)",
              "Table 1", tadt_above_baseline(o[1]), tadt_above_baseline(p[1])),
        Claim(2, "TADT's PSNR is above the Baseline's for every upsampler, benchmark and scale",
              "Table 2", tadt_above_baseline(o[2]), tadt_above_baseline(p[2])),
        Claim(3, "TADT needs fewer GFLOPs than the Baseline at every scale",
              "Table 3", tadt_flops_below_baseline(o[3]), tadt_flops_below_baseline(p[3])),
        Claim(4, "Baseline and TADT need fewer parameters and GFLOPs than the other extractors of Table 3",
              "Table 3", ours_cheaper_than_competitors(o[3]), ours_cheaper_than_competitors(p[3])),
        Claim(5, "Baseline has 9.17M and TADT 9.18M parameters at the paper's widths",
              "models --json", paper_params(inp.models), Check(PASS, "Table 3: 9.17M, 9.18M")),
        Claim(6, "beta predicted by TARC grows with the scale",
              "Figure 7", beta_grows(inp.beta), None),
        Claim(7, "Without L_beta, beta is higher (saturates) at every scale",
              "Figure 7", no_lbeta_higher_beta(inp.beta), None),
        Claim(8, "L_beta lowers the GFLOPs at every scale",
              "Table 5", lbeta_lowers_flops(o[5]), lbeta_lowers_flops(p[5])),
        Claim(9, "A fixed beta = 0.5 gives lower PSNR than TARC above x2",
              "Table 4", beta05_below_tarc(o[4]), beta05_below_tarc(p[4])),
        Claim(10, "beta = 0.25s gives lower PSNR than TARC at x2",
              "Table 4", beta025s_below_tarc_x2(o[4]), beta025s_below_tarc_x2(p[4])),
        Claim(11, "Every trained pair is above bicubic at every scale (sanity check, not a paper claim)",
              "Tables 1, 2", _merge_checks([("Table 1", above_bicubic(o[1])),
                                            ("Table 2", above_bicubic(o[2]))]), None, kind="sanity"),
    ]
    return claims


# --------------------------------------------------------------------------- comparison

def _profile_of(df: pd.DataFrame | None) -> str:
    if df is None:
        return "missing"
    return ", ".join(sorted(set(df["profile"])))


def _dataset_of(df: pd.DataFrame | None) -> str:
    if df is None:
        return "—"
    return ", ".join(sorted(set(df["dataset"])))


def _row_order(n: int, ours: pd.DataFrame | None, paper: pd.DataFrame | None) -> list[str]:
    """The published order; a row only we have goes after the last row of its group (upsampler)."""
    order = [row_key(n, r) for _, r in paper.iterrows()] if paper is not None else []
    for _, r in (ours.iterrows() if ours is not None else []):
        k = row_key(n, r)
        if k in order:
            continue
        group = k.split("/")[0] + "/"
        same = [i for i, o in enumerate(order) if o.startswith(group)]
        order.insert(same[-1] + 1 if same else (0 if group == "none/" else len(order)), k)
    return order


def compare_table(n: int, ours: pd.DataFrame | None, paper: pd.DataFrame | None) -> str:
    """Markdown: one row per key, each cell ``ours / published (difference)``."""
    if ours is None and paper is None:
        return "_Neither our table nor the published one is available._\n"
    frames = [f for f in (ours, paper) if f is not None]
    keys = list(TABLE_KEYS[n])
    columns = list(dict.fromkeys(c for f in frames for c in value_columns(f)))
    order = _row_order(n, ours, paper)
    index_o = {row_key(n, r): r for _, r in ours.iterrows()} if ours is not None else {}
    index_p = {row_key(n, r): r for _, r in paper.iterrows()} if paper is not None else {}
    lines = ["| " + " | ".join(keys + columns) + " |", "|" + "---|" * (len(keys) + len(columns))]
    diffs = []
    for k in order:
        ro, rp = index_o.get(k), index_p.get(k)
        ref = ro if ro is not None else rp
        cells = [str(ref[c]) for c in keys]
        for c in columns:
            vo = ro[c] if ro is not None and c in ro.index else float("nan")
            vp = rp[c] if rp is not None and c in rp.index else float("nan")
            if pd.notna(vo) and pd.notna(vp):
                diffs.append((vo - vp, c, k))
                cells.append(f"{_n(vo)} / {_n(vp)} ({_n(vo - vp, True)})")
            elif pd.notna(vo):
                cells.append(f"{_n(vo)} / —")
            elif pd.notna(vp):
                cells.append(f"— / {_n(vp)}")
            else:
                cells.append("—")
        lines.append("| " + " | ".join(cells) + " |")
    out = "\n".join(lines) + "\n"
    if diffs:
        psnr = [d for d in diffs if column_kind(d[1]) == "psnr"]
        if psnr:
            mean = sum(d[0] for d in psnr) / len(psnr)
            worst = max(psnr, key=lambda d: abs(d[0]))
            out += (f"\nPSNR cells in both: {len(psnr)}; mean difference (ours - published) "
                    f"{mean:+.2f} dB; largest |difference| {abs(worst[0]):.2f} dB ({worst[2]}, {worst[1]}).\n")
    return out


def _scale_statement(inp: Inputs) -> list[str]:
    paper_scale, embedded, other, missing = [], [], [], []
    for n in range(1, 6):
        prof = _profile_of(inp.ours[n])
        (paper_scale if prof == "paper" else missing if prof == "missing"
         else embedded if prof == "embedded" else other).append(f"Table {n}")
    out = []
    out.append("- Produced at **paper scale** (paper profile: the real datasets, the paper's widths and "
               f"schedule): {', '.join(paper_scale) or 'none'}.")
    out.append("- Produced at **embedded scale** (small widths, a short schedule, scikit-image photographs "
               "standing in for DIV2K and the benchmarks; these numbers are **never the paper's**, and "
               f"their differences to the published values measure nothing): {', '.join(embedded) or 'none'}.")
    if other:
        out.append(f"- Produced with a custom profile: {', '.join(other)}.")
    if missing:
        out.append(f"- Not available in this results folder: {', '.join(missing)}.")
    return out


def render(inp: Inputs, claims: list[Claim]) -> str:
    lines = ["# TADT reproduction report", ""]
    if inp.cfg is not None:
        lines += [f"Configuration profile: **{inp.cfg['profile']}** (data source: "
                  f"{inp.cfg['data']['source']}).", ""]
    lines += ["## Which numbers are which", ""] + _scale_statement(inp) + [""]
    lines += inp.notes + ([""] if inp.notes else [])
    n_pass = sum(c.status == PASS for c in claims)
    n_fail = sum(c.status == FAIL for c in claims)
    n_na = sum(c.status == NA for c in claims)
    lines += ["## The paper's claims", "",
              f"{n_pass} PASS, {n_fail} FAIL, {n_na} N/A. \"Ours\" checks the claim on the reproduced "
              "numbers, \"published\" on the paper's own tables (a check of the transcription).", "",
              "| # | claim | source | ours | numbers (ours) | published |", "|---|---|---|---|---|---|"]
    for c in claims:
        pub = "—" if c.published is None else c.published.status
        lines.append(f"| {c.number} | {c.text} | {c.source} | **{c.status}** | "
                     f"{c.ours.evidence.replace('|', '/')} | {pub} |")
    lines.append("")
    for n in range(1, 6):
        o, p = inp.ours[n], inp.paper[n]
        lines += [f"## {TABLE_TITLES[n]}", "",
                  f"Reproduced: profile **{_profile_of(o)}**, dataset(s) {_dataset_of(o)}. "
                  f"Published: dataset(s) {_dataset_of(p)}. Cells: ours / published (ours - published).", ""]
        if _profile_of(o) == "embedded":
            lines += ["> Embedded scale: these numbers are not the paper's; the differences only show "
                      "the layout.", ""]
        lines += [compare_table(n, o, p)]
    return "\n".join(lines).rstrip() + "\n"


def build_report(results: str | Path, paper: str | Path, models: str | Path | None = None,
                 cfg: dict | None = None) -> tuple[str, list[Claim]]:
    inp = load_inputs(results, paper, models, cfg)
    claims = check_claims(inp)
    return render(inp, claims), claims
