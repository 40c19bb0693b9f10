"""The whole workflow, end to end, on the tiny .test/config.yaml, and what reruns when.

One real run (every table, figure and the report; a minute or two on 2 cores)
in a tmp working directory. While it runs, a dry run with another config
(``evaluation.max_images`` changed) is made beside it: nothing is written at
parse time, so it cannot change what the running workflow computes. Then dry
runs check that changing a setting reruns exactly the jobs whose config slice
holds it (Snakemake's params trigger), and the slices themselves are checked
job by job for the paper profile.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import pandas as pd
import pytest
import yaml

from harness import experiments as X
from harness.config import ROOT, load_config, run_names


# The run is a few minutes on a busy 2-core machine: more than the suite's per-test limit.
pytestmark = pytest.mark.timeout(1800)

TEST_CONFIG = ROOT / ".test" / "config.yaml"
SNAKEFILE = ROOT / "Snakefile"


def _cmd(workdir, *args):
    return [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(workdir), *map(str, args)]


def _env():
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


def dry(workdir, config, *extra) -> tuple[Counter, str]:
    proc = subprocess.run(_cmd(workdir, "-n", "all", "--nolock", "--configfile", config, *extra),
                          capture_output=True, text=True, timeout=300, env=_env())
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    counts = Counter()
    if "Job stats:" in out:
        for line in out.split("Job stats:", 1)[1].splitlines()[3:]:
            parts = line.split()
            if not parts or parts[0] == "total":
                break
            counts[parts[0]] = int(parts[1])
    return counts, out


def variant(workdir, name, **changes) -> str:
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        cfg[section][key] = value
    path = workdir / name
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    wd = tmp_path_factory.mktemp("e2e")
    config = wd / "config.yaml"
    config.write_text(TEST_CONFIG.read_text())
    other = variant(wd, "other.yaml", evaluation__max_images=2)
    run = subprocess.Popen(_cmd(wd, "--cores", "2", "all", "--configfile", config),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    # The race of issue 12: a dry run with another config while the first trainings run.
    deadline = time.time() + 300
    while not (wd / "results" / "logs" / "train").exists() and run.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    racing = run.poll() is None
    # asserts that it succeeds; a checkpoint the running job already wrote is marked incomplete
    dry(wd, other, "--ignore-incomplete")
    out, _ = run.communicate(timeout=1800)
    assert run.returncode == 0, out[-4000:]
    return {"wd": wd, "config": config, "racing": racing}


def test_every_output_and_the_concurrent_dry_run_changed_nothing(e2e):
    res = e2e["wd"] / "results"
    for name in ["table1", "table2", "table3", "table4", "table5", "figure1", "figure2", "figure7"]:
        assert (res / f"{name}.csv").stat().st_size > 0, name
    assert (res / "report.md").read_text().startswith("# TADT reproduction report")
    t1 = pd.read_csv(res / "table1.csv")
    assert list(t1["extractor"]) == ["bicubic", "edsr-baseline", "baseline", "tadt"]
    assert set(t1["profile"]) == {"custom"} and list(t1.columns[-2:]) == ["x2", "x4"]
    t4 = pd.read_csv(res / "table4.csv")
    assert list(t4["run"]) == ["tadt-liif"]  # the beta ablations are not in this config
    # max_images 1 at x2 and x4: the dry run beside it (max_images 2) left the run alone.
    assert e2e["racing"], "the run finished before the concurrent dry run could start"
    ev = pd.read_csv(res / "eval" / "tadt-liif" / "div2k-valid.csv", dtype={"routing": str})
    assert len(ev) == 2 and sorted(ev["scale"]) == [2.0, 4.0]
    assert ev["routing"].str.fullmatch("[01]+").all() if "routing" in ev else True


def test_nothing_to_do_with_the_same_config(e2e):
    counts, out = dry(e2e["wd"], e2e["config"])
    assert not counts and "Nothing to be done" in out


def test_max_images_reruns_evaluations_and_flops_and_what_reads_them_only(e2e):
    counts, out = dry(e2e["wd"], variant(e2e["wd"], "max2.yaml", evaluation__max_images=2))
    assert "train" not in counts and "models" not in counts
    n_eval = len([k for k in X.eval_needs(load_config(e2e["config"])) if k[0] != X.BICUBIC])
    assert counts["evaluate"] == n_eval and counts["evaluate_bicubic"] == 1
    assert counts["flops_static"] + counts["flops_routed"] == 4
    assert counts["table"] == 5 and counts["figure"] == 2  # figure7 reads checkpoints only
    reasons = out.split("params have changed since last execution:", 1)[1].splitlines()[1]
    assert sorted(r.strip() for r in reasons.split(",")) == \
        ["evaluate", "evaluate_bicubic", "flops_routed", "flops_static"]


def test_data_root_means_nothing_to_the_embedded_sets(e2e):
    counts, out = dry(e2e["wd"], variant(e2e["wd"], "root.yaml", data__root="elsewhere"))
    assert not counts and "Nothing to be done" in out


# --------------------------------------------------------------------------- slices, job by job

def _jobs(cfg):
    jobs = {("train", r): ("train", r) for r in run_names(cfg)}
    jobs.update({("evaluate", r, d): ("evaluate",) for r, d in X.eval_needs(cfg)})
    for name, d in X.flops_needs(cfg):
        jobs[("flops", name, d)] = ("flops-routed",) if name in run_names(cfg) else ("flops", name)
    jobs.update({("table", t): ("table", t) for t in X.tables(cfg)})
    jobs.update({("figure", f): ("figure", f) for f in cfg["experiments"]["figures"]})
    jobs[("report",)] = ("report",)
    return jobs


def _changed(before, after) -> set[str]:
    a, b = _jobs(before), _jobs(after)
    assert a.keys() == b.keys()
    return {"/".join(k) for k, job in a.items()
            if X.job_config_text(before, *job) != X.job_config_text(after, *job)}


def test_a_setting_is_in_exactly_the_slices_of_the_jobs_it_affects():
    paper = load_config(ROOT / "config" / "paper.yaml")
    moved = load_config(ROOT / "config" / "paper.yaml", {"data": {"root": "/elsewhere"}})
    changed = _changed(paper, moved)
    jobs = {"/".join(k) for k in _jobs(paper)}
    assert changed == {j for j in jobs if j.split("/")[0] in ("train", "evaluate", "flops")}

    wider = load_config(ROOT / "config" / "paper.yaml", {"extractors": {"rdn": {"G0": 32}}})
    assert _changed(paper, wider) == {"train/rdn-metasr", "train/rdn-liif", "train/rdn-lte",
                                      "flops/rdn/div2k-valid", "table/table3"}

    fewer = load_config(ROOT / "config" / "paper.yaml", {"evaluation": {"max_images": 5}})
    assert {j.split("/")[0] for j in _changed(paper, fewer)} == {"evaluate", "flops"}

    lr = load_config(ROOT / "config" / "paper.yaml", {"train": {"overrides": {"swinir-lte": {"lr": 1e-4}}}})
    assert _changed(paper, lr) == {"train/swinir-lte"}


def test_the_train_slice_gives_the_same_run_spec():
    from harness.config import run_spec

    for path in ("default.yaml", "paper.yaml", "embedded-long.yaml"):
        cfg = load_config(ROOT / "config" / path)
        for run in run_names(cfg):
            sliced = load_config(X.job_config_text(cfg, "train", run))
            assert run_spec(sliced, run).as_dict() == run_spec(cfg, run).as_dict(), (path, run)
