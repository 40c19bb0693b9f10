"""Every claim of the experiment manifest can fail.

For each claim in config/experiments.yaml: on numbers where it holds (the
published tables, a grown beta curve, the paper's parameter counts) it PASSes,
and after a change that breaks exactly what it states it FAILs, naming the
cells. A claim that cannot fail would be a check that checks nothing.
"""
from __future__ import annotations

import pandas as pd
import pytest

from harness import claims as C
from harness.config import ROOT, load_config
from harness.tables import read_table

CLAIMS = load_config()["experiments"]["claims"]


def holding_sources() -> dict[str, pd.DataFrame]:
    frames = {f"table{n}": read_table(ROOT / "paper" / f"table{n}.csv") for n in range(1, 6)}
    for name in ("table1", "table2"):  # a bicubic floor row below everything
        df = frames[name]
        floor = {c: (0.0 if c not in ("profile", "dataset", "upsampler", "extractor") else df[c].iloc[0])
                 for c in df.columns}
        floor.update(upsampler="none", extractor="bicubic")
        frames[name] = pd.concat([pd.DataFrame([floor]), df[df["upsampler"] != "none"]], ignore_index=True)
    beta = pd.DataFrame({"run": ["tadt-liif"] * 3 + ["tadt-liif-nolbeta"] * 3, "scale": [2.0, 4.0, 8.0] * 2,
                         "beta": [0.3, 0.5, 0.7, 0.9, 0.95, 0.99]})
    frames["figure7"] = C.figure7_frame(beta)
    frames["models"] = C.models_frame({"extractors": {"baseline": 9_170_000, "tadt": 9_180_000}})
    return frames


def broken(frames: dict[str, pd.DataFrame], claim: dict) -> dict[str, pd.DataFrame]:
    """The same numbers with what the claim states made false in each of its sources."""
    out = {k: v.copy() for k, v in frames.items()}
    for src in claim["sources"]:
        df = out[src]
        if claim["kind"] == "compare":
            rows = C.select(df, claim["better"]).index
            cols = C.columns_of(df, claim["columns"])
            df.loc[rows, cols] = -1e9 if claim.get("direction", "higher") == "higher" else 1e9
        elif claim["kind"] == "trend":
            rows = C.select(df, claim["rows"]).index
            cols = C.columns_of(df, claim["columns"])
            df.loc[rows, cols] = df.loc[rows, cols].to_numpy()[:, ::-1]
        else:
            rows = C.select(df, claim["rows"]).index
            df.loc[rows, claim["column"]] += 1.0
    return out


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: f"claim{c['id']}")
def test_every_claim_passes_on_holding_numbers_and_fails_when_broken(claim):
    frames = holding_sources()
    ok = C.check(frames, claim, claim["sources"])
    assert ok.status == "PASS", ok.evidence
    bad = C.check(broken(frames, claim), claim, claim["sources"])
    assert bad.status == "FAIL", bad.evidence
    if claim["kind"] != "trend":
        assert "fail" in bad.evidence or "expected" in bad.evidence


def test_claim5_published_check_reads_the_paper_table():
    """The paper's own Table 3 must say 9.17M / 9.18M: a transcription error fails it."""
    claim = next(c for c in CLAIMS if c["id"] == 5)
    t3 = read_table(ROOT / "paper" / "table3.csv")
    assert C.check({"table3": t3}, claim, [claim["published_source"]]).status == "PASS"
    t3.loc[t3["extractor"] == "tadt", "params_m"] = 9.28
    assert C.check({"table3": t3}, claim, [claim["published_source"]]).status == "FAIL"


def test_missing_rows_are_not_applicable_not_passing():
    claim = next(c for c in CLAIMS if c["id"] == 4)
    only_ours = read_table(ROOT / "paper" / "table3.csv")
    only_ours = only_ours[only_ours["extractor"].isin(["baseline", "tadt"])]
    assert C.check({"table3": only_ours}, claim, ["table3"]).status == "N/A"
    assert C.check({}, claim, ["table3"]).status == "N/A"


def test_ties_pass_only_where_the_claim_allows_them():
    df = pd.DataFrame({"run": ["a", "b"], "x2": [1.0, 1.0]})
    strict = {"kind": "compare", "better": {"run": "a"}, "worse": {"run": "b"}, "columns": "all"}
    assert C.check_compare(df, strict).status == "FAIL"
    assert C.check_compare(df, {**strict, "ties": True}).status == "PASS"
    assert C.check_compare(df, {**strict, "margin": -0.5}).status == "PASS"


# --------------------------------------------------------------------------- all eight extractors

ALL_EIGHT = ["embedded-all.yaml", "paper.yaml"]  # the shipped configs whose pairs hold NLSA and CAT-R-2
#: Extractors of Table 3 that claim 4 leaves out on purpose: the two it is about, and
#: EDSR-baseline (1.2M parameters: lighter than both; not in the paper's Table 3).
NOT_WORSE = {"baseline", "tadt", "edsr-baseline"}


def table3_of(cfg: dict) -> pd.DataFrame:
    """Our Table 3's rows for ``cfg`` (harness.experiments), with parameters and GFLOPs that
    make every extractor heavier than Baseline and TADT (heavier in the order of the pairs)."""
    from harness import experiments as X

    rows = []
    for i, r in enumerate(X.table_rows(cfg, "table3")):
        light = {"tadt": 1.0, "baseline": 2.0, "edsr-baseline": 0.5}.get(r.extractor)
        v = light if light is not None else 10.0 + i
        rows.append({"profile": cfg["profile"], "dataset": "div2k-valid", **r.meta(["upsampler", "extractor"]),
                     "params_m": v, "gflops_x2": 100 * v, "gflops_x3": 50 * v, "gflops_x4": 25 * v})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("config", ALL_EIGHT)
def test_claim4_compares_tadt_with_every_other_extractor_of_the_pairs(config):
    """Claim 4 ('the other extractors') lists every extractor a config puts into Table 3,
    NLSA and CAT-R-2 included, and each of them can make it fail."""
    cfg = load_config(ROOT / "config" / config)
    claim = next(c for c in cfg["experiments"]["claims"] if c["id"] == 4)
    t3 = table3_of(cfg)
    assert {"nlsa", "cat-r-2"} <= set(t3["extractor"])
    assert set(t3["extractor"]) - NOT_WORSE == set(claim["worse"]["extractor"])
    ok = C.check({"table3": t3}, claim, ["table3"])
    # 2 better rows x 5 worse rows (rdn, rcan, nlsa, swinir, cat-r-2) x 4 columns
    assert ok.status == "PASS" and ok.evidence.startswith("40/40 cells hold"), ok.evidence
    for other in ("nlsa", "cat-r-2"):
        lighter = t3.copy()
        lighter.loc[lighter["extractor"] == other, "params_m"] = 1.5  # between TADT (1.0) and Baseline (2.0)
        bad = C.check({"table3": lighter}, claim, ["table3"])
        assert bad.status == "FAIL", bad.evidence
        assert bad.evidence.startswith("1/40 cells fail: ")
        assert f"baseline-liif vs {other}-liif params_m: 2.00 vs 1.50" in bad.evidence


def test_claim4_without_nlsa_and_cat_compares_fewer_cells():
    """The embedded default trains neither: claim 4 checks the three it has (24 cells), not N/A."""
    cfg = load_config()
    claim = next(c for c in cfg["experiments"]["claims"] if c["id"] == 4)
    t3 = table3_of(cfg)
    assert not {"nlsa", "cat-r-2"} & set(t3["extractor"])
    ok = C.check({"table3": t3}, claim, ["table3"])
    assert ok.status == "PASS" and ok.evidence.startswith("24/24 cells hold"), ok.evidence
