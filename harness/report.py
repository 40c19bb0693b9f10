"""The comparison report: each reproduced table next to the published one, and
the paper's claims checked one by one (PASS / FAIL / N/A, with the numbers).

Inputs are files only: our tables and figure CSVs under a results folder (the
names of the experiment manifest, config/experiments.yaml), the published
``paper/<table>.csv`` and the JSON of ``python -m harness models --json``. The
claims are the manifest's, checked by harness.claims. A missing input makes the
claims that need it N/A rather than stopping the report, so the report can be
built from a partial results folder.

Where a published table leaves cells empty for a reason the manifest gives
(``published_empty``, e.g. Table 1's out-of-memory NLSA x2), the report says so
under the table, with the measured evaluation memory of those extractors at
those scales from the CSV of measured memory (``benchmarks/eval_memory.csv``,
written by ``benchmarks/bench_eval_memory.py --csv``): a measured fact about
the code, kept with the benchmark that measures it rather than in the
experiment manifest, which says what to run, not what the machine did.

Every table of ours carries the profile that produced it. Rows made at the
embedded profile (small widths, a short schedule, scikit-image photographs
standing in for the datasets) are labelled so: their numbers are never the
paper's, and their differences to the published values measure nothing. Rows
of the released profile (harness.released) are labelled as the reference
repositories' checkpoints evaluated here, never as runs this harness trained.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness import claims as C
from harness.claims import FAIL, NA, PASS, Claim, fmt as _n
from harness.config import ROOT, pair_extractors
from harness.tables import column_kind, read_table, row_key, value_columns, value_columns_for

#: The CSV of measured evaluation memory the report cites, and its columns (written by
#: ``benchmarks/bench_eval_memory.py --csv``): sizes as WxH, peak_rss_mib for CPU rows,
#: gpu_peak_mib (allocated beyond the model) for GPU rows.
MEMORY_CSV = ROOT / "benchmarks" / "eval_memory.csv"
MEMORY_COLUMNS = ("extractor", "upsampler", "scale", "hr", "lr", "tile", "overlap", "device", "threads",
                  "seconds", "peak_rss_mib", "gpu_peak_mib", "note")


@dataclass
class Inputs:
    cfg: dict
    ours: dict[str, pd.DataFrame | None]
    paper: dict[str, pd.DataFrame | None]
    figures: dict[str, pd.DataFrame | None] = field(default_factory=dict)
    models: Any = None
    notes: list[str] = field(default_factory=list)
    memory: pd.DataFrame | None = None  # measured evaluation memory (MEMORY_CSV's layout)
    memory_source: str = ""

    @property
    def tables(self) -> dict[str, dict]:
        return self.cfg["experiments"]["tables"]

    def sources(self, paper: bool = False) -> dict[str, pd.DataFrame | None]:
        """The claims' source frames (see harness.claims)."""
        out = dict(self.paper if paper else self.ours)
        if not paper:
            out["figure7"] = C.figure7_frame(self.figures.get("figure7"))
            out["models"] = C.models_frame(self.models)
        return out


# --------------------------------------------------------------------------- loading

def _maybe_table(path: Path) -> pd.DataFrame | None:
    return read_table(path) if path.is_file() else None


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def load_memory(path: str | Path) -> tuple[pd.DataFrame | None, str | None]:
    """The CSV of measured evaluation memory, or (None, why not) when it is absent or malformed."""
    path = Path(path)
    if not path.is_file():
        return None, f"{_display(path)} does not exist: no measured memory is cited"
    df = pd.read_csv(path, comment="#")
    missing = [c for c in MEMORY_COLUMNS if c not in df.columns]
    if missing:
        return None, f"{_display(path)} lacks the column(s) {', '.join(missing)}: no measured memory is cited"
    return df, None


def load_inputs(results: str | Path, paper: str | Path, models: str | Path | None, cfg: dict,
                memory: str | Path | None = MEMORY_CSV) -> Inputs:
    """Every input of the report; ``memory`` is the CSV of measured evaluation memory (None: none)."""
    results, paper = Path(results), Path(paper)
    names = list(cfg["experiments"]["tables"])
    inp = Inputs(cfg=cfg, ours={n: _maybe_table(results / f"{n}.csv") for n in names},
                 paper={n: _maybe_table(paper / f"{n}.csv") for n in names})
    for name in cfg["experiments"].get("figures", {}):
        path = results / f"{name}.csv"
        inp.figures[name] = pd.read_csv(path) if path.is_file() else None
    if models is not None and Path(models).is_file():
        try:
            inp.models = json.loads(Path(models).read_text())
        except json.JSONDecodeError as exc:
            inp.notes.append(f"{models} is not valid JSON ({exc}); the parameter claim is N/A")
    if memory is not None:
        inp.memory, why = load_memory(memory)
        inp.memory_source = _display(Path(memory))
        if why:
            inp.notes.append(why)
    return inp


def check_claims(inp: Inputs) -> list[Claim]:
    return C.check_claims(inp.cfg["experiments"]["claims"], inp.sources(), inp.sources(paper=True))


# --------------------------------------------------------------------------- comparison

def _profile_of(df: pd.DataFrame | None) -> str:
    if df is None:
        return "missing"
    return ", ".join(sorted(set(df["profile"])))


def _dataset_of(df: pd.DataFrame | None) -> str:
    if df is None:
        return "—"
    return ", ".join(sorted(set(df["dataset"])))


def _row_order(key: list[str], ours: pd.DataFrame | None, paper: pd.DataFrame | None) -> list[str]:
    """The published order; a row only we have goes after the last row of its group (upsampler)."""
    order = [row_key(key, r) for _, r in paper.iterrows()] if paper is not None else []
    for _, r in (ours.iterrows() if ours is not None else []):
        k = row_key(key, r)
        if k in order:
            continue
        group = k.split("/")[0] + "/"
        same = [i for i, o in enumerate(order) if o.startswith(group)]
        order.insert(same[-1] + 1 if same else (0 if group == "none/" else len(order)), k)
    return order


def compare_table(key: list[str], ours: pd.DataFrame | None, paper: pd.DataFrame | None) -> str:
    """Markdown: one row per key, each cell ``ours / published (difference)``."""
    if ours is None and paper is None:
        return "_Neither our table nor the published one is available._\n"
    frames = [f for f in (ours, paper) if f is not None]
    keys = list(key)
    columns = list(dict.fromkeys(c for f in frames for c in value_columns(f)))
    order = _row_order(keys, ours, paper)
    index_o = {row_key(keys, r): r for _, r in ours.iterrows()} if ours is not None else {}
    index_p = {row_key(keys, r): r for _, r in paper.iterrows()} if paper is not None else {}
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


def empty_published_cells(paper: pd.DataFrame | None) -> dict[tuple[str, str], list[str]]:
    """``(extractor, column) -> [upsampler, ...]`` of the cells a published table leaves empty."""
    out: dict[tuple[str, str], list[str]] = {}
    if paper is None or "extractor" not in paper.columns:
        return out
    for _, r in paper.iterrows():
        for c in value_columns(paper):
            if pd.isna(r[c]):
                out.setdefault((str(r["extractor"]), c), []).append(str(r.get("upsampler", "")))
    return out


def _memory_text(m: pd.Series) -> str:
    """One measured row of the memory CSV in words."""
    tiles = "untiled" if int(m["tile"]) == 0 else f"LR tiles {int(m['tile'])} + {int(m['overlap'])} overlap"
    threads = f"{int(m['threads'])} CPU thread{'s' if int(m['threads']) != 1 else ''}"
    if str(m["device"]) == "cpu":
        peak = f"{m['peak_rss_mib']:.0f} MiB peak resident memory on the CPU"
    else:
        peak = f"{m['gpu_peak_mib']:.0f} MiB of GPU memory ({m['device']}) allocated beyond the model"
    note = f"; {m['note']}" if isinstance(m["note"], str) and m["note"].strip() else ""
    return (f"{peak} for one {m['hr']} output ({str(m['upsampler']).upper()}, {tiles}, {threads}, "
            f"{m['seconds']:.{0 if m['seconds'] >= 10 else 1}f} s{note})")


def empty_cells_note(inp: Inputs, name: str) -> list[str]:
    """Under a table whose published cells are empty for the reason ``published_empty`` gives:
    which cells, the measured evaluation memory of those extractors at those scales, and
    which of the cells our table fills."""
    spec, paper, ours = inp.tables[name], inp.paper[name], inp.ours[name]
    reason = spec.get("published_empty")
    empty = empty_published_cells(paper)
    if not reason or not empty:
        return []
    scale_of = {col: s for col, _, s, _ in value_columns_for(spec)}
    cells = "; ".join(f"{ext} {c} ({', '.join(ups)})" for (ext, c), ups in empty.items())
    lines = [f"**Cells the paper leaves empty** (\"-\": {reason}): {cells}."]
    measured = []
    for ext, c in dict.fromkeys(empty):
        s = scale_of.get(c)
        rows = [] if inp.memory is None or s is None else [
            m for _, m in inp.memory.iterrows() if str(m["extractor"]) == ext and abs(float(m["scale"]) - s) < 1e-9]
        if rows:  # the largest image first
            rows.sort(key=lambda m: -math.prod(int(v) for v in str(m["hr"]).split("x")))
            measured.append(f"{ext} {c}: " + "; ".join(_memory_text(m) for m in rows))
        else:
            measured.append(f"{ext} {c}: not measured (no row in {inp.memory_source or 'the memory CSV'})")
    lines.append("This harness evaluates every cell in bounded memory (queries decoded in chunks; "
                 "`evaluation.tile` bounds the extractor's share). Measured at the paper's widths with random "
                 f"weights (`benchmarks/bench_eval_memory.py`, {inp.memory_source or 'no memory CSV'}): "
                 + "; ".join(measured) + ".")
    absent = sorted({ext for ext, _ in empty} - set(pair_extractors(inp.cfg)))
    tail = (f" ({', '.join(absent)} not among this configuration's extractors, `pairs.extractors`)"
            if absent else "")
    if ours is None:
        lines.append(f"Our table is not in this results folder{tail}.")
    else:
        filled = total = 0
        for (ext, c), ups in empty.items():
            for up in ups:
                total += 1
                hit = ours[(ours["extractor"] == ext) & (ours["upsampler"] == up)] if c in ours.columns else ours[:0]
                filled += int(len(hit) > 0 and hit[c].notna().any())
        lines.append(f"Our table fills {filled} of these {total} cells{tail}.")
    return ["> " + " ".join(lines), ""]


def _scale_statement(inp: Inputs) -> list[str]:
    paper_scale, embedded, released, other, missing = [], [], [], [], []
    for name, df in inp.ours.items():
        prof = _profile_of(df)
        (paper_scale if prof == "paper" else missing if prof == "missing" else released
         if prof == "released" else embedded if prof == "embedded" else other).append(name.replace("table", "Table "))
    out = []
    if released:
        out += _released_statement(inp, released)
    if paper_scale or not released:
        out.append("- Produced at **paper scale** (paper profile: the real datasets, the paper's widths and "
                   f"schedule): {', '.join(paper_scale) or 'none'}.")
    if embedded or not released:
        out.append("- Produced at **embedded scale** (small widths, a short schedule, scikit-image photographs "
                   "standing in for DIV2K and the benchmarks; these numbers are **never the paper's**, and "
                   f"their differences to the published values measure nothing): {', '.join(embedded) or 'none'}.")
    if other:
        out.append(f"- Produced with a custom profile: {', '.join(other)}.")
    if missing:
        out.append(f"- Not available in this results folder: {', '.join(missing)}.")
    return out


def _released_statement(inp: Inputs, tables: list[str]) -> list[str]:
    """Profile released: what its rows are, and the released runs that had no file."""
    section = inp.cfg.get("released") or {}
    runs = section.get("runs", [])
    present = section.get("present", runs)
    out = ["- **Released weights** (profile released): " + ", ".join(tables) + " hold the reference "
           "repositories' own LIIF/LTE checkpoints, evaluated here with this harness's protocol on the "
           "paper's datasets; **nothing in them was trained by this harness** (the bicubic row is "
           "computed here). Their differences to the published rows check the protocol and the "
           "transcription, not a reproduction of the training."]
    missing = [r for r in runs if r not in present]
    if missing:
        out.append(f"- Released runs without a file in {section.get('folder', 'the folder')} (no rows): "
                   f"{', '.join(missing)}.")
    return out


def render(inp: Inputs, claims: list[Claim]) -> str:
    lines = ["# TADT reproduction report", ""]
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
    for name, spec in inp.tables.items():
        o, p = inp.ours[name], inp.paper[name]
        lines += [f"## {spec.get('title', name)}", "",
                  f"Reproduced: profile **{_profile_of(o)}**, dataset(s) {_dataset_of(o)}. "
                  f"Published: dataset(s) {_dataset_of(p)}. Cells: ours / published (ours - published).", ""]
        if _profile_of(o) == "embedded":
            lines += ["> Embedded scale: these numbers are not the paper's; the differences only show "
                      "the layout.", ""]
        elif _profile_of(o) == "released":
            lines += ["> Released weights: \"ours\" is the reference authors' checkpoint of each row "
                      "evaluated here, not a run this harness trained.", ""]
        lines += [compare_table(spec["key"], o, p)] + empty_cells_note(inp, name)
    return "\n".join(lines).rstrip() + "\n"


def build_report(results: str | Path, paper: str | Path, models: str | Path | None,
                 cfg: dict, memory: str | Path | None = MEMORY_CSV) -> tuple[str, list[Claim]]:
    inp = load_inputs(results, paper, models, cfg, memory)
    claims = check_claims(inp)
    return render(inp, claims), claims
