"""The released-weights tier end to end: random-weight files in the LIIF/LTE release
layout, at the paper's widths, in a folder named by run; a tiny data root in the
standard folder layouts; the Snakemake target of config/released.yaml (with a test
override: tiny images, few scales); then the tables' rows and columns, one cell
against a direct ``python -m harness evaluate`` of the same file, the report's lines,
and the bad folders (a file named for no run, a file that is not a release of its
run): one line each, exit 2 from the verbs, nothing written by the workflow.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from harness.checkpoint import save_checkpoint
from harness.cli import main
from harness.config import ROOT, load_config
from harness.errors import HarnessError
from upsamplers import create_model

pytestmark = pytest.mark.timeout(900)

RELEASED_CONFIG = ROOT / "config" / "released.yaml"
SNAKEFILE = ROOT / "Snakefile"
# The reference repositories' model specs (configs/train-div2k/train_edsr-baseline-{liif,lte}.yaml).
ENCODER = {"name": "edsr-baseline", "args": {"no_upsampling": True}}
RELEASE_ARGS = {
    "liif": {"encoder_spec": ENCODER,
             "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256] * 4}}},
    "lte": {"encoder_spec": ENCODER,
            "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256] * 3}},
            "hidden_dim": 256},
}
SETS = {"DIV2K_valid_HR": ["0801"], "benchmark/B100/HR": ["3096"], "benchmark/Urban100/HR": ["img001"]}


def release_file(path: Path, upsampler: str, seed: int, extractor_args: dict | None = None) -> Path:
    """A random-weight LIIF/LTE checkpoint in the layout the reference repositories save."""
    torch.manual_seed(seed)
    model = create_model(upsampler, "edsr-baseline", extractor_args or {}, {})
    args = RELEASE_ARGS[upsampler]
    if extractor_args:
        args = {**args, "encoder_spec": {"name": "edsr-baseline", "args": {**extractor_args, "no_upsampling": True}}}
    torch.save({"model": {"name": upsampler, "args": args, "sd": model.state_dict()},
                "optimizer": {"name": "adam", "args": {"lr": 1e-4}, "sd": {}}, "epoch": 1000}, path)
    return path


def data_root(root: Path) -> Path:
    """One 48 x 40 crop of a scikit-image photograph per set, in the standard layouts."""
    from skimage import data as skdata

    photos = [skdata.astronaut(), skdata.chelsea(), skdata.coffee()]
    for i, (folder, names) in enumerate(SETS.items()):
        (root / folder).mkdir(parents=True)
        img = np.ascontiguousarray(photos[i][100:148, 120:160, :3])
        Image.fromarray(img).save(root / folder / f"{names[0]}.png")
    return root


def override(tmp: Path, folder: Path) -> Path:
    """The test's change to config/released.yaml: its data, folder, CPU, few scales."""
    cfg = {"device": "cpu", "data": {"source": "folders", "root": str(tmp / "data"), "cache": str(tmp / "cache")},
           "released": {"folder": str(folder)}, "train": {"threads": 1, "gpus": 0},
           "experiments": {"tables": {"table1": {"scales": [2, 4]},
                                      "table2": {"datasets": ["b100", "urban100"], "scales": [2]}}}}
    path = folder.parent / "override.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}


def snakemake(workdir: Path, extra_config: Path, *targets, dry=False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(workdir), "--cores", "2",
           *(["-n"] if dry else []), *map(str, targets), "--configfile", str(RELEASED_CONFIG), str(extra_config)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env())


def verb(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *map(str, argv)], capture_output=True,
                          text=True, timeout=300, env=env(), cwd=ROOT)


@pytest.fixture(scope="module")
def tier(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("released")
    data_root(tmp / "data")
    folder = tmp / "released"
    folder.mkdir()
    release_file(folder / "edsr-baseline-liif.pth", "liif", seed=1)
    release_file(folder / "edsr-baseline-lte.pth", "lte", seed=2)
    (folder / "SHA256SUMS").write_text("not a checkpoint: ignored\n")
    extra = override(tmp, folder)
    proc = snakemake(tmp, extra, "all")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return {"tmp": tmp, "folder": folder, "config": extra, "results": tmp / "results" / "released",
            "log": proc.stdout + proc.stderr}


# --------------------------------------------------------------------------- the target

def test_all_is_the_two_tables_and_the_report_from_the_files_there(tier):
    res = tier["results"]
    assert sorted(p.name for p in res.iterdir() if p.is_file()) == \
        ["models.json", "report.md", "table1.csv", "table2.csv"]
    assert sorted(p.name for p in (res / "eval").iterdir()) == ["bicubic", "edsr-baseline-liif", "edsr-baseline-lte"]
    assert not (tier["tmp"] / "results" / "checkpoints").exists()  # nothing trained
    assert sorted(p.name for p in tier["folder"].iterdir()) == \
        ["SHA256SUMS", "edsr-baseline-liif.pth", "edsr-baseline-lte.pth"]  # the folder untouched


def test_table_rows_columns_and_labels(tier):
    t1 = pd.read_csv(tier["results"] / "table1.csv")
    assert list(t1.columns) == ["profile", "dataset", "upsampler", "extractor", "x2", "x4"]
    assert list(zip(t1["upsampler"], t1["extractor"])) == \
        [("none", "bicubic"), ("liif", "edsr-baseline"), ("lte", "edsr-baseline")]
    assert set(t1["profile"]) == {"released"} and set(t1["dataset"]) == {"div2k-valid"}
    t2 = pd.read_csv(tier["results"] / "table2.csv")
    assert list(t2.columns)[4:] == ["b100_x2", "urban100_x2"]
    assert list(t2["extractor"]) == ["bicubic", "edsr-baseline", "edsr-baseline"]
    assert set(t2["profile"]) == {"released"}
    assert t1[["x2", "x4"]].notna().all().all() and t2.iloc[:, 4:].notna().all().all()
    # random weights: far below bicubic, and the two files give different numbers
    assert (t1["x2"][1:] < t1["x2"][0]).all() and t1["x2"][1] != t1["x2"][2]


def test_a_cell_equals_a_direct_evaluation_of_the_same_file(tier, tmp_path):
    out = tmp_path / "direct.csv"
    proc = verb("evaluate", "--config", RELEASED_CONFIG, "--config", tier["config"], "--checkpoint",
                tier["folder"] / "edsr-baseline-lte.pth", "--dataset", "div2k-valid", "--scales", "4",
                "--out", out, "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    direct = pd.read_csv(out, dtype={"image": str})
    assert list(direct["run"]) == ["edsr-baseline-lte"] and list(direct["image"]) == ["0801"]
    t1 = pd.read_csv(tier["results"] / "table1.csv")
    cell = t1.loc[t1["upsampler"] == "lte", "x4"].item()
    assert cell == pytest.approx(round(direct["psnr"].mean(), 4), abs=1e-9)


def test_report_sets_the_released_rows_next_to_the_published_ones(tier):
    text = (tier["results"] / "report.md").read_text()
    lines = text.splitlines()
    assert "Configuration profile: **released** (data source: folders)." in lines
    assert any(line.startswith("- **Released weights** (profile released): Table 1, Table 2 hold the "
                               "reference repositories' own LIIF/LTE checkpoints") for line in lines)
    assert f"- Released runs without a file in {tier['folder']} (no rows): rdn-liif, rdn-lte, swinir-lte." in lines
    t1 = pd.read_csv(tier["results"] / "table1.csv")
    ours = t1.loc[t1["upsampler"] == "liif", "x2"].item()
    row = next(line for line in lines if line.startswith("| liif | edsr-baseline |"))
    assert row.split(" | ")[2] == f"{ours:.2f} / 34.67 ({ours - 34.67:+.2f})"  # paper/table1.csv
    assert "| liif | rdn | — / 34.99 |" in text  # a published row without a file: theirs only
    assert "## Table 3" not in text and "figure" not in text.lower()
    assert text.count('"ours" is the reference authors\' checkpoint') == 2


def test_replacing_a_file_reevaluates_only_its_run(tier):
    path = tier["folder"] / "edsr-baseline-liif.pth"
    path.write_bytes(path.read_bytes())  # the same file downloaded again: newer than every output
    proc = snakemake(tier["tmp"], tier["config"], "all", dry=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    stats = out.split("Job stats:", 1)[1].splitlines()[3:]
    jobs = {}
    for line in stats:
        if not line.split() or line.split()[0] == "total":
            break
        jobs[line.split()[0]] = int(line.split()[1])
    assert jobs == {"all": 1, "evaluate_released": 3, "report": 1, "table": 2}


# --------------------------------------------------------------------------- bad folders

def one_line_exit_2(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_a_file_named_for_no_released_run_stops_before_any_job(tier, tmp_path):
    folder = tmp_path / "released"
    folder.mkdir()
    release_file(folder / "edsr-baseline-liif.pth", "liif", seed=1)
    release_file(folder / "edsr-baseline-metasr.pth", "liif", seed=3)
    extra = override(tier["tmp"], folder)
    one_line_exit_2(verb("released", "--config", RELEASED_CONFIG, extra),
                    f"{folder / 'edsr-baseline-metasr.pth'} is named for no released run",
                    "runs: edsr-baseline-liif, rdn-liif, edsr-baseline-lte, rdn-lte, swinir-lte")
    proc = snakemake(tmp_path, extra, "all", dry=True)
    assert proc.returncode != 0
    assert f"released checkpoints: {folder / 'edsr-baseline-metasr.pth'} is named for no released run" \
        in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()  # nothing written


def test_a_file_that_is_not_a_release_of_its_run_fails_its_job_and_no_table_is_written(tier, tmp_path):
    folder = tmp_path / "released"
    folder.mkdir()
    torch.manual_seed(0)  # one of our own checkpoints, put where a released file belongs
    ours = create_model("liif", "edsr-baseline", {"n_resblocks": 1, "n_feats": 8}, {"hidden_list": [8]})
    save_checkpoint(folder / "edsr-baseline-liif.pth", ours,
                    {"upsampler": "liif", "extractor": "edsr-baseline",
                     "extractor_args": {"n_resblocks": 1, "n_feats": 8}, "upsampler_args": {"hidden_list": [8]}},
                    step=4)
    extra = override(tier["tmp"], folder)
    out = tmp_path / "x.csv"
    evaluate = ["evaluate", "--config", RELEASED_CONFIG, "--config", extra, "--dataset", "div2k-valid", "--scales", "2",
                "--out", out, "--released", "edsr-baseline-liif", "--checkpoint"]
    one_line_exit_2(verb(*evaluate, folder / "edsr-baseline-liif.pth"),
                    "is a checkpoint trained by this harness (tadt-harness/1), not a released LIIF/LTE file")
    assert not out.exists()

    proc = snakemake(tmp_path, extra, "results/released/table1.csv")
    assert proc.returncode != 0
    res = tmp_path / "results" / "released"
    assert not (res / "table1.csv").exists()
    assert not (res / "eval" / "edsr-baseline-liif" / "div2k-valid.csv").exists()
    log = (res / "logs" / "eval" / "edsr-baseline-liif" / "div2k-valid.log").read_text()
    assert log.startswith("error: ") and log.count("\n") == 1 and "trained by this harness" in log


@pytest.mark.parametrize("case, needle", [
    ("garbage", "cannot be read: truncated, corrupt or not a torch file"),
    ("other run", "is named for edsr-baseline-liif but holds lte on edsr-baseline"),
    ("other widths", "holds edsr-baseline-liif at other widths than this profile's: extractor n_feats 16 "
                     "(file) vs 64; extractor n_resblocks 2 (file) vs 16"),
])
def test_the_released_verb_refuses_each_file_that_is_not_the_release_of_its_run(tier, tmp_path, capsys,
                                                                                case, needle):
    folder = tmp_path / "released"
    folder.mkdir()
    path = folder / "edsr-baseline-liif.pth"
    if case == "garbage":
        path.write_bytes(b"<html>Google Drive: virus scan warning</html>")
    elif case == "other run":
        release_file(path, "lte", seed=2)
    else:
        release_file(path, "liif", seed=2, extractor_args={"n_resblocks": 2, "n_feats": 16})
    assert main(["released", "--config", str(RELEASED_CONFIG), str(override(tier["tmp"], folder))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err


def test_the_released_verb_lists_the_runs_with_and_without_files(tier, capsys):
    assert main(["released", "--config", str(RELEASED_CONFIG), str(tier["config"])]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"released checkpoints in {tier['folder']} (profile released):"
    assert [line.split()[0:2] for line in out[1:6]] == [
        ["edsr-baseline-liif", "ok:"], ["rdn-liif", "missing:"], ["edsr-baseline-lte", "ok:"],
        ["rdn-lte", "missing:"], ["swinir-lte", "missing:"]]
    assert out[6] == "2 of 5 released runs have a file; table1, table2 get their rows."


# --------------------------------------------------------------------------- configuration

def test_the_profile_keeps_only_its_tables_and_claims_and_trains_nothing():
    from harness import experiments as X
    from harness.config import checkpoint_path, run_names

    cfg = load_config(RELEASED_CONFIG)
    assert list(cfg["experiments"]["tables"]) == ["table1", "table2"] and cfg["experiments"]["figures"] == {}
    assert sorted(c["id"] for c in cfg["experiments"]["claims"]) == [1, 2, 11]
    assert run_names(cfg) == ["edsr-baseline-liif", "edsr-baseline-lte", "rdn-liif", "rdn-lte", "swinir-lte"]
    assert [r.run for r in X.table_rows(cfg, "table1")] == \
        ["bicubic", "edsr-baseline-liif", "rdn-liif", "edsr-baseline-lte", "rdn-lte", "swinir-lte"]
    assert X.flops_needs(cfg) == {}
    assert checkpoint_path(cfg, "rdn-lte") == Path("checkpoints/released/rdn-lte.pth")
    two = load_config(RELEASED_CONFIG, {"released": {"present": ["swinir-lte", "rdn-liif"]}})
    assert [r.run for r in X.table_rows(two, "table2")] == ["bicubic", "rdn-liif", "swinir-lte"]


@pytest.mark.parametrize("change, needle", [
    ({"released": {"runs": ["rcan-liif"]}}, "released/runs: 'rcan-liif' is not a pair of `pairs`"),
    ({"released": {"runs": ["baseline-liif"]}, "pairs": {"extractors": ["baseline"]}},
     "'baseline-liif' cannot be a LIIF/LTE release"),
    ({"released": {"tables": ["table3"]}}, "released/tables: table3 is not a PSNR table"),
    ({"profile": "paper"}, "the `released` section belongs to profile released"),
])
def test_released_sections_that_cannot_work_are_one_line(change, needle):
    with pytest.raises(HarnessError, match=needle):
        load_config(RELEASED_CONFIG, change)
