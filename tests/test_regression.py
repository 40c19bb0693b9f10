"""CI's regression guard (harness/regression/; tests/regression/README.md).

The test suite runs the guard's exact layer (the committed tiny checkpoints of
every extractor x upsampler pair evaluated on crops of the embedded sets: PSNR
within 1e-4 dB, FLOPs, routings and parameters exactly) and its quick
statistical layer (20 training steps of EDSR-baseline-LIIF and of TADT-LIIF,
within 6x the spread measured under other instruction sets). ``make
check-regression`` adds the seed-averaged full training and the tables of a
full embedded run.

The ``test_planted_*`` tests prove that the guard bites: each plants one
regression through a monkeypatch or a temporary copy (never in the real code)
and requires the guard to fail with a message naming a moved cell. They run the
guard on the runs the plant touches (a selection of the full layer: a cell that
moves in the selection moves in the full layer too), to keep the suite fast.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from harness.config import ROOT
from harness.regression import cells as C
from harness.regression import check
from harness.regression import inference as I
from harness.regression import training as TR


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("guard")


@pytest.fixture(scope="module")
def inference_result(workdir):
    return check.inference(workdir / "inference")


@pytest.fixture(scope="module")
def quick_result(workdir):
    return check.training(["training-quick"], workdir / "training")


def moved(result, *words: str) -> list[str]:
    """The result's problem messages that name every one of ``words``."""
    return [p for p in result.problems if all(w in p for w in words)]


# --------------------------------------------------------------------------- the guard passes

def test_exact_layer_matches_the_committed_baseline(inference_result):
    assert not inference_result.problems, "\n".join(inference_result.problems)
    runs = {k[0] for k in inference_result.current}
    assert runs == {I.BICUBIC, *I.runs()}  # every pair of the embedded default, and bicubic
    quantities = {k[4] for k in inference_result.current}
    assert quantities == {"psnr", "flops", "routing", "params"}
    routings = {v for k, v in inference_result.current.items() if k[4] == "routing" and k[0] == "tadt-liif"}
    assert len(routings) > 1, "the regression TADT should route differently across scales"


def test_quick_training_layer_matches_its_measured_tolerance(quick_result):
    assert not quick_result.problems, "\n".join(quick_result.problems)
    assert len(quick_result.current) == 4
    assert set(quick_result.current) == set(quick_result.baseline)


def test_committed_checkpoints_are_the_configured_models_and_small():
    """Each checkpoint holds the model the embedded default (at the regression widths) builds,
    so a change of the default's architecture (a window, a block count) shows here by run."""
    from harness.checkpoint import load_checkpoint
    from harness.config import run_spec

    cfg = I.regression_config()
    total = 0
    for run in I.runs(cfg):
        path = I.checkpoint_of(run)
        assert path.is_file(), f"no checkpoint for {run}: python -m harness check-regression --write-checkpoints --runs {run}"
        spec = run_spec(cfg, run).model_spec
        stored = load_checkpoint(path)["model"]
        assert yaml.safe_dump(stored) == yaml.safe_dump(spec), f"{run}: checkpoint {stored} != config {spec}"
        total += path.stat().st_size
    assert total < 1_000_000, f"regression checkpoints take {total} bytes"


def test_training_baseline_tolerances_are_k_sigma_of_the_measured_spread():
    base = TR.read_baseline()
    assert {k.split(" ")[0] for k in base} == {"quick", "full"}
    for stat, row in base.items():
        assert row["spread"] > 0 and row["tolerance"] == pytest.approx(TR.K_SIGMA * row["spread"], rel=2e-3), stat


# --------------------------------------------------------------------------- comparing cells

def test_compare_names_moved_new_missing_and_failed_cells():
    base = {("a", "psnr"): 30.0, ("b", "psnr"): 31.0, ("c", "routing"): "1011", ("d", "psnr"): 1.0}
    now = {("a", "psnr"): 30.00005, ("b", "psnr"): 31.001, ("c", "routing"): "1001", ("e", "psnr"): 2.0}

    def rule(key):
        return C.Rule("abs", 1e-4)

    problems = C.compare(now, base, rule, lambda k: f"cell {k[0]}", errors={("f", "psnr"): "no file"})
    assert problems == [
        "cell b: old 31 new 31.001 delta +0.001 (tolerance 0.0001)",
        "cell c: old 1011 new 1001 (exact)",
        "cell d: in the baseline (1) but missing now",
        "cell e: new cell (2) not in the baseline",
        "cell f: could not be computed: no file",
    ]
    partial = C.compare(now, base, rule, lambda k: f"cell {k[0]}", selected=lambda k: k[0] != "d")
    assert not any("cell d" in p for p in partial)
    assert C.Rule("rel", 0.01).allows(100.0, 100.9) and not C.Rule("rel", 0.01).allows(100.0, 101.1)
    assert C.Rule("exact").allows(7, 7.0) and not C.Rule("exact").allows(7, 8)


def test_cells_round_trip_through_the_baseline_format(tmp_path):
    cells = {("tadt-liif", "div2k-valid", "2", "chelsea", "psnr"): 23.4049382,
             ("tadt-liif", "div2k-valid", "2", "chelsea", "routing"): "00110011",
             ("tadt-liif", "", "", "", "params"): 8170}
    path = tmp_path / "b.csv"
    C.write_cells(path, I.KEYS, cells, "a header\nmachine: here")
    assert C.header_lines(path) == ["a header", "machine: here"]
    assert C.read_cells(path, I.KEYS, I.parse) == cells


# --------------------------------------------------------------------------- planted regressions

SMALL = dict(datasets=("div2k-valid",), scales=(2.0, 12.0))


def test_planted_learning_rate(tmp_path, monkeypatch):
    """config/default.yaml's learning rate 4e-3 -> 3.9e-3 (a temporary copy)."""
    import harness.config

    raw = yaml.safe_load(harness.config.DEFAULT_CONFIG.read_text())
    assert raw["train"]["lr"] == 4.0e-3
    raw["train"]["lr"] = 3.9e-3
    copy = tmp_path / "default.yaml"
    copy.write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(harness.config, "DEFAULT_CONFIG", copy)
    result = check.training(["training-quick"], tmp_path / "training", quick_runs=["edsr-baseline-liif"])
    assert moved(result, "training quick edsr-baseline-liif loss mean steps 1-20", "old", "new"), result.problems


def test_planted_bicubic_kernel_coefficient(tmp_path, monkeypatch):
    """One coefficient of harness/bicubic.py's cubic kernel +1e-3 (1.5 |x|^3 -> 1.501 |x|^3)."""
    import numpy as np

    import harness.bicubic

    def cubic(x):
        ax = np.abs(x)
        near = (1.501 * ax ** 3 - 2.5 * ax ** 2 + 1.0) * (ax <= 1)
        far = (-0.5 * ax ** 3 + 2.5 * ax ** 2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
        return near + far

    monkeypatch.setattr(harness.bicubic, "cubic", cubic)
    result = check.inference(tmp_path, [I.BICUBIC, "edsr-baseline-liif"], **SMALL)
    assert moved(result, "inference bicubic psnr div2k-valid x2", "tolerance 0.0001"), result.problems


def test_planted_psnr_shave_off_by_one(workdir, monkeypatch):
    """The PSNR border shave one pixel wider (harness.metrics' shave_for)."""
    import harness.metrics

    shave_for = harness.metrics.shave_for
    monkeypatch.setattr(harness.metrics, "shave_for", lambda scale, y: shave_for(scale, y) + 1)
    result = check.inference(workdir / "inference", [I.BICUBIC, "rdn-lte"], **SMALL)
    assert moved(result, "inference bicubic psnr div2k-valid x2 chelsea", "tolerance"), result.problems
    assert moved(result, "inference rdn-lte psnr div2k-valid x12", "tolerance"), result.problems


def test_planted_liif_cell_decoding_off(workdir, monkeypatch):
    """LIIF built with ``cell_decode=False`` by default (upsamplers/liif.py)."""
    from upsamplers.liif import LIIF

    init = LIIF.__init__

    def without_cell(self, encoder, hidden_list=(256, 256, 256, 256), local_ensemble=True, feat_unfold=True,
                     cell_decode=False):
        init(self, encoder, hidden_list, local_ensemble, feat_unfold, cell_decode)

    monkeypatch.setattr(LIIF, "__init__", without_cell)
    result = check.inference(workdir / "inference", ["edsr-baseline-liif", "edsr-baseline-lte"], **SMALL)
    assert moved(result, "inference edsr-baseline-liif params: old 3555 new 3523"), result.problems
    assert moved(result, "inference edsr-baseline-liif psnr", "could not be computed", "does not fit"), result.problems
    assert not moved(result, "edsr-baseline-lte"), result.problems  # LTE is untouched


def test_planted_tadt_branch_window(workdir, monkeypatch):
    """One TADT branch's window 8 -> 4 (the third local window of every MSTB)."""
    from tadt.model import TADT

    init = TADT.__init__

    def narrower(self, *args, **kwargs):
        windows = list(kwargs.get("windows", (4, 8, 16)))
        assert windows[2] == 8, windows
        init(self, *args, **{**kwargs, "windows": [*windows[:2], 4]})

    monkeypatch.setattr(TADT, "__init__", narrower)
    result = check.inference(workdir / "inference", ["tadt-liif"], **SMALL)
    assert moved(result, "inference tadt-liif params: old"), result.problems
    assert moved(result, "inference tadt-liif psnr", "could not be computed"), result.problems


def test_planted_flops_handle_counts_zero(workdir, monkeypatch):
    """A FLOPs handle that counts an op as zero: layer norm (fvcore's 5 per element) -> 0."""
    from harness import flops

    monkeypatch.setitem(flops.HANDLES, "aten::layer_norm", lambda inputs, outputs: 0)
    result = check.inference(workdir / "inference", ["swinir-liif", "rdn-liif"], **SMALL)
    assert moved(result, "inference swinir-liif flops div2k-valid x2 chelsea: old", "(tolerance exact)"), \
        result.problems
    assert not moved(result, "rdn-liif"), result.problems  # no layer norm in RDN


def test_verb_passes_then_fails_naming_the_cell(workdir, monkeypatch, capsys):
    """``python -m harness check-regression`` on the exact layer (bicubic only): exit 0, then
    with the shave planted exit 1 and the moved cells on stderr."""
    import harness.metrics
    from harness.cli import main

    argv = ["check-regression", "--layers", "inference", "--runs", I.BICUBIC, "--workdir", str(workdir)]
    assert main(argv) == 0
    assert "no regression (inference): 18 cells; largest |delta|: psnr 0" in capsys.readouterr().out
    shave_for = harness.metrics.shave_for
    monkeypatch.setattr(harness.metrics, "shave_for", lambda scale, y: shave_for(scale, y) + 1)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "regression (inference): 18 cell(s) moved:" in err
    assert "  inference bicubic psnr urban100 x3.5 brick: old " in err
