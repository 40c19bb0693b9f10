"""The Snakemake workflow: what a target schedules, config validation, lint.

Dry runs only (``snakemake -n``), each in a fresh tmp working directory, so the
verbs are never called and nothing is written into the repository. The job
counts expected for the paper profile are computed here from the YAML itself,
independently of rules/common.smk.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from harness.errors import HarnessError
from harness.config import ROOT, load_config

SNAKEFILE = ROOT / "Snakefile"
PAPER = ROOT / "config" / "paper.yaml"
EXTRACTORS = ["edsr-baseline", "rdn", "rcan", "nlsa", "swinir", "cat-r-2", "baseline", "tadt"]
UPSAMPLERS = ["metasr", "liif", "lte"]


def snakemake(workdir: Path, *args, timeout=180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(workdir),
                           "--nolock", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def dry_run(workdir: Path, *targets, configfile=None) -> tuple[Counter, list[dict]]:
    """Job counts per rule, and each job's rule/output/wildcards, of ``snakemake -n``."""
    args = ["-n", *targets]
    if configfile:
        args += ["--configfile", configfile]
    proc = snakemake(workdir, *args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    counts = Counter()
    stats = out.split("Job stats:", 1)[1].splitlines()
    for line in stats[3:]:
        parts = line.split()
        if not parts or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    jobs = []
    for block in re.split(r"\n(?=rule \S+:)", out)[1:]:
        name = re.match(r"rule (\S+):", block).group(1)
        fields = dict(re.findall(r"^\s+(output|wildcards): (.*)$", block, flags=re.M))
        jobs.append({"rule": name, **fields})
    assert sum(counts.values()) == len(jobs)
    return counts, jobs


def expected_paper_jobs(raw: dict) -> Counter:
    """What `all` must schedule for a config, from the manifest's table definitions (read as YAML)."""
    man = yaml.safe_load((ROOT / "config" / "experiments.yaml").read_text())
    tb, fg = man["tables"], man["figures"]
    pairs = [f"{e}-{u}" for e in EXTRACTORS for u in UPSAMPLERS]
    ablations = [f"tadt-liif-{a}" for a in raw["tadt"]["ablations"]]
    t1, t2, t3, t4, t5, f2 = (tb["table1"], tb["table2"], tb["table3"], tb["table4"], tb["table5"],
                              fg["figure2"])
    evaluate = {(p, d) for p in pairs for d in t1["datasets"] + t2["datasets"]}
    evaluate |= {(r["run"], d) for r in t4["rows"] for d in t4["datasets"]}
    evaluate |= {(r["run"], d) for r in t5["rows"] for d in t5["datasets"]}
    bicubic = {*t1["datasets"], *t2["datasets"]}
    static = {(e, d) for e in EXTRACTORS if e != "tadt" for d in t3["datasets"]}
    static |= {("swinir", f2["dataset"])}
    routed = {("tadt-liif", d) for d in t3["datasets"]} | {("tadt-liif", f2["dataset"])}
    routed |= {(r["run"], d) for r in t5["rows"] for d in t5["datasets"]}
    return Counter({"train": len(pairs) + len(ablations), "evaluate": len(evaluate),
                    "evaluate_bicubic": len(bicubic), "flops_static": len(static),
                    "flops_routed": len(routed), "table": 5, "figure": 3, "models": 1,
                    "report": 1, "all": 1})


def test_paper_profile_all_schedules_exactly_the_expected_jobs(tmp_path):
    raw = yaml.safe_load(PAPER.read_text())
    expected = expected_paper_jobs(raw)
    # The paper's world: 27 runs; 24 pairs on DIV2K + 3 benchmarks, the beta variants on
    # Urban100 and the L_beta ablation on DIV2K; bicubic on 4 sets; 7 static + 2 routed FLOPs.
    assert (expected["train"], expected["evaluate"], expected["evaluate_bicubic"],
            expected["flops_static"], expected["flops_routed"]) == (27, 99, 4, 7, 2)
    counts, jobs = dry_run(tmp_path, "all", configfile=PAPER)
    assert counts == expected
    trained = sorted(re.search(r"checkpoints/(\S+)\.pth", j["output"]).group(1)
                     for j in jobs if j["rule"] == "train")
    assert len(set(trained)) == 27
    # A dry run writes nothing of ours (Snakemake keeps its own .snakemake/).
    assert sorted(p.name for p in tmp_path.iterdir()) == [".snakemake"]


def test_table3_trains_only_the_liif_baseline_and_tadt(tmp_path):
    counts, jobs = dry_run(tmp_path, "results/table3.csv")
    trained = sorted(j["wildcards"] for j in jobs if j["rule"] == "train")
    assert trained == ["run=baseline-liif", "run=tadt-liif"]
    # Static extractors get FLOPs from sizes alone; nothing is evaluated.
    assert counts == Counter({"train": 2, "flops_static": 5, "flops_routed": 1, "table": 1})
    static = sorted(j["wildcards"] for j in jobs if j["rule"] == "flops_static")
    assert [w.split(",")[0] for w in static] == [f"extractor={e}" for e in
                                                 sorted(["baseline", "edsr-baseline", "rcan", "rdn", "swinir"])]
    assert not (tmp_path / "results").exists()  # parsing and a dry run write nothing


def test_table1_embedded_schedules_pairs_and_bicubic(tmp_path):
    counts, jobs = dry_run(tmp_path, "results/table1.csv")
    assert counts == Counter({"train": 18, "evaluate": 18, "evaluate_bicubic": 1, "table": 1})
    assert all("dataset=div2k-valid" in j["wildcards"] for j in jobs if j["rule"].startswith("evaluate"))


BAD = [
    ({"train": {"iterationz": 5}}, "iterationz"),
    ({"train": {"iterations": "many"}}, "train/iterations"),
    ({"data": {"source": "web"}}, "data/source"),
    ({"train": {"scale_min": 3, "scale_max": 2}}, "train/scale_max"),
]


@pytest.mark.parametrize("bad,key", BAD, ids=["unknown-key", "wrong-type", "bad-enum", "scale-order"])
def test_load_config_rejects_bad_configs_naming_the_key(bad, key):
    with pytest.raises(HarnessError, match=re.escape(key)):
        load_config(bad)


@pytest.mark.parametrize("bad,key", [BAD[0], BAD[3]], ids=["unknown-key", "scale-order"])
def test_snakemake_stops_on_a_bad_config_naming_the_key(tmp_path, bad, key):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(bad))
    proc = snakemake(tmp_path, "-n", "all", "--configfile", cfg)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "invalid configuration" in out and key in out
    assert "Building DAG" not in out  # stopped before any job was considered


def test_lint_has_nothing_but_the_conda_recommendation(tmp_path):
    """`snakemake --lint`: no lints except 'use conda/containers' (we use one venv)."""
    proc = snakemake(tmp_path, "--lint")
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and ("Lints for" in out or "Congratulations" in out), out[-2000:]
    titles = set(re.findall(r"^\s+\* (.+?):?$", out, flags=re.M))
    titles = {t.split(":")[0].rstrip(".") for t in titles}
    assert titles <= {"Specify a conda environment or container for each rule"}, titles


# --------------------------------------------------------------------------- documented commands

DOCUMENTED = ["README.md", "Snakefile", "config/paper.yaml", "config/embedded-long.yaml",
              "profiles/slurm/README.md", "profiles/slurm/config.yaml"]


def documented_commands() -> list[tuple[str, list[str]]]:
    """Every ``snakemake ...`` command line written in the docs and config comments."""
    out = []
    for rel in DOCUMENTED:
        for line in (ROOT / rel).read_text().splitlines():
            m = re.search(r"(?:^|[\s`#])(?:\.venv/bin/)?snakemake (--[^`#\n]*|[a-z][^`#\n]*)", line)
            if m and ("--configfile" in m.group(1) or "--cores" in m.group(1)):
                out.append((rel, m.group(1).split()))
    return out


def test_documented_commands_are_found():
    rels = {rel for rel, _ in documented_commands()}
    assert {"README.md", "config/paper.yaml", "config/embedded-long.yaml", "profiles/slurm/README.md"} <= rels


@pytest.mark.parametrize("where,args", documented_commands(), ids=lambda v: v if isinstance(v, str) else None)
def test_documented_command_parses_as_meant(where, args):
    """``--configfile`` takes several files: a target written after it would be read as a config file."""
    from snakemake.cli import get_argument_parser

    parsed = get_argument_parser().parse_args(args)
    for cfg in parsed.configfile or []:
        assert (ROOT / cfg).is_file(), f"{where}: {' '.join(args)} reads {cfg} as a config file"
    assert parsed.targets or "--lint" in args, f"{where}: {' '.join(args)} names no target"


def test_embedded_long_lengthens_only_the_attention_liif_metasr_runs():
    from harness.config import run_names, run_spec

    default = load_config({})
    long = load_config(ROOT / "config" / "embedded-long.yaml")
    assert long["profile"] == "embedded" and long["results"] == "results/embedded-long"
    changed = {r for r in run_names(default)
               if run_spec(default, r).train != run_spec(long, r).train}
    attention = {f"{e}-{u}" for e in ("swinir", "baseline", "tadt") for u in ("liif", "metasr")}
    assert changed == attention | {"tadt-liif-beta0.5", "tadt-liif-beta0.25s", "tadt-liif-nolbeta"}
    assert run_spec(long, "swinir-liif").train["iterations"] == 4800
    assert run_spec(long, "swinir-liif").train["lr"] == 2.0e-3          # the attention lr stays
    # TADT fine-tunes keep 5/8 of the Baseline's steps, as in the default (250 of 400)
    assert run_spec(long, "tadt-liif").train["iterations"] * 8 == run_spec(long, "baseline-liif").train["iterations"] * 5
