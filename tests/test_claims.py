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
