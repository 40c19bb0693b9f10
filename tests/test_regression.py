"""CI's regression guard: a slice of the embedded workflow against the committed baseline.

``make check-regression`` runs the whole embedded workflow (~15 min on 2 cores)
and compares every cell of Tables 1-5 with tests/regression/embedded.csv. This
module reruns, inside the test suite, the cells that are cheap to remake and
that every part of the pipeline feeds: EDSR-baseline-LIIF is trained with the
embedded default exactly as the workflow's ``train`` rule does (same verb, same
config, one thread) and evaluated on the DIV2K stand-in at Table 1's scales,
and the static extractors' FLOPs are counted on the same images at Table 3's
scales. Each value is compared with the baseline's cell under the tolerances of
``python -m harness check-regression``, and a failure names every cell that
moved: 0.02 dB and 1% of GFLOPs on the machine the baseline records (where the
run is bit-reproducible), 1.0 dB on another one (training is chaotic in the
last bits across machines; see ``check-regression --help``). The static FLOPs
involve no training and keep 1% everywhere.

If this fails after an intended change (a new schedule, a protocol fix), rerun
the embedded workflow and rewrite the baseline with
``python -m harness check-regression --write-baseline``; say why in the commit.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.cli import main
from harness.commands.check_regression import (DEFAULT_TOL_DB, DEFAULT_TOL_GFLOPS_REL, compare,
                                               read_baseline, tolerances)
from harness.config import DEFAULT_CONFIG, ROOT, load_config
from harness.scales import scale_label
from harness.tables import mean_gflops, read_evals, read_flops

BASELINE = ROOT / "tests" / "regression" / "embedded.csv"
STATIC = ("edsr-baseline", "rdn", "rcan", "swinir", "baseline")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> tuple[Path, dict]:
    """The embedded default with its outputs (and data cache) under a temporary folder."""
    tmp = tmp_path_factory.mktemp("regression")
    raw = yaml.safe_load(Path(DEFAULT_CONFIG).read_text())
    raw["results"] = str(tmp / "results")
    raw["data"]["cache"] = str(tmp / "cache")
    path = tmp / "embedded.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, load_config(path)


def baseline_cells(table: int, rows: set[str], columns: set[str]) -> pd.DataFrame:
    base = read_baseline(BASELINE)
    sel = base[(base["table"] == table) & base["row"].isin(rows) & base["column"].isin(columns)]
    assert len(sel) == len(rows) * len(columns), "the committed baseline lacks cells this test needs"
    return sel


def assert_no_cell_moved(current: list[dict], baseline: pd.DataFrame, trained: bool) -> None:
    tol_db, tol_rel, note = DEFAULT_TOL_DB, DEFAULT_TOL_GFLOPS_REL, None
    if trained:
        tol_db, tol_rel, note = tolerances(BASELINE, tol_db, tol_rel)
    problems = compare(pd.DataFrame(current), baseline, tol_db, tol_rel)
    assert not problems, ("cells moved against tests/regression/embedded.csv:\n" + "\n".join(problems)
                          + (f"\n({note})" if note else ""))


def test_embedded_edsr_liif_psnr_matches_the_baseline(embedded, tmp_path):
    cfg_path, cfg = embedded
    table1 = cfg["experiments"]["tables"]["table1"]
    ckpt, log = tmp_path / "edsr-baseline-liif.pth", tmp_path / "train.csv"
    assert main(["train", "--config", str(cfg_path), "--run", "edsr-baseline-liif", "--out", str(ckpt),
                 "--log", str(log), "--threads", "1", "--progress", "none"]) == 0
    out = tmp_path / "eval.csv"
    assert main(["evaluate", "--config", str(cfg_path), "--checkpoint", str(ckpt),
                 "--dataset", table1["datasets"][0], "--scales", ",".join(str(s) for s in table1["scales"]),
                 "--out", str(out), "--progress", "none"]) == 0
    evals = read_evals([out])
    current = []
    for s in table1["scales"]:
        psnr = evals[evals["scale"] == float(s)]["psnr"].astype(float).mean()
        current.append({"table": 1, "row": "liif/edsr-baseline", "column": scale_label(s),
                        "value": round(float(psnr), 4)})
    baseline = baseline_cells(1, {"liif/edsr-baseline"}, {c["column"] for c in current})
    assert_no_cell_moved(current, baseline, trained=True)


def test_embedded_static_flops_match_the_baseline(embedded, tmp_path):
    cfg_path, cfg = embedded
    table3 = cfg["experiments"]["tables"]["table3"]
    scales = ",".join(str(s) for s in table3["scales"])
    named = {}
    for ext in STATIC:
        named[ext] = tmp_path / f"{ext}.csv"
        assert main(["flops", "--extractor", ext, "--dataset", table3["datasets"][0], "--scales", scales,
                     "--config", str(cfg_path), "--out", str(named[ext])]) == 0
    flops = read_flops(named)
    current = [{"table": 3, "row": f"liif/{ext}", "column": f"gflops_{scale_label(s)}",
                "value": round(mean_gflops(flops, ext, s), 4)}
               for ext in STATIC for s in table3["scales"]]
    baseline = baseline_cells(3, {f"liif/{e}" for e in STATIC}, {c["column"] for c in current})
    assert_no_cell_moved(current, baseline, trained=False)


def test_cross_machine_tolerance_applies_only_off_the_recorded_machine(tmp_path):
    from harness.commands.check_regression import OTHER_MACHINE_TOL_DB, machine_signature

    here = tmp_path / "here.csv"
    here.write_text(f"# machine: {machine_signature()}\ntable,row,column,value\n")
    assert tolerances(here, 0.02, 0.01) == (0.02, 0.01, None)
    there = tmp_path / "there.csv"
    there.write_text("# machine: torch 0.0; cpu NONE; elsewhere\ntable,row,column,value\n")
    db, rel, note = tolerances(there, 0.02, 0.01)
    assert (db, rel) == (OTHER_MACHINE_TOL_DB, 0.15) and "elsewhere" in note
    assert "machine:" in BASELINE.read_text().split("table,row,column,value")[0]
