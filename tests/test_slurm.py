"""The SLURM profile (profiles/slurm).

Without a cluster: what the profile sets for a site without accounting, that its
plugin options exist in the pinned plugin, and that the paper profile dry-runs
through it. With ``-m slurm``: the whole of tests/slurm_local_cluster.sh (a real
single-node SLURM started on this machine, with the time-limit chain: 12.4
minutes on 2 cores at a load average of 5-9), which the default run skips.
"""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tomllib

import pytest
import yaml

from harness.config import ROOT

PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
SCRIPT = ROOT / "tests" / "slurm_local_cluster.sh"


def profile() -> dict:
    return yaml.safe_load(PROFILE.read_text())


def slurm_extra() -> dict[str, str]:
    """Package name -> pinned version, from pyproject's [slurm] extra."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        extra = tomllib.load(f)["project"]["optional-dependencies"]["slurm"]
    pins = dict(re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9.]+)", req).groups() for req in extra)
    assert len(pins) == len(extra), f"every [slurm] requirement is pinned with ==: {extra}"
    return pins


def test_profile_reads_job_states_with_squeue_and_names_no_account():
    p = profile()
    assert p["executor"] == "slurm"
    assert p["slurm-status-command"] == "squeue"  # sacct knows no job without slurmdbd
    resources = [p.get("default-resources", {}), *p.get("set-resources", {}).values()]
    assert [r for r in resources if "slurm_account" in r] == []
    assert "slurm_account" in PROFILE.read_text()  # ... but says where a site puts one


def test_slurm_extra_pins_the_plugin_and_its_jobstep():
    pins = slurm_extra()
    assert set(pins) == {"snakemake-executor-plugin-slurm", "snakemake-executor-plugin-slurm-jobstep"}
    assert f"snakemake-executor-plugin-slurm {pins['snakemake-executor-plugin-slurm']}" in PROFILE.read_text()


def test_profile_options_exist_in_the_installed_plugin():
    plugin = pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install -e '.[slurm]'")
    from importlib import metadata

    assert metadata.version("snakemake-executor-plugin-slurm") == slurm_extra()["snakemake-executor-plugin-slurm"]
    options = {"slurm-" + f.name.replace("_", "-") for f in dataclasses.fields(plugin.ExecutorSettings)}
    used = {key for key in profile() if key.startswith("slurm-")}
    assert used and used <= options, used - options


def test_paper_profile_dry_runs_through_the_slurm_profile(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install -e '.[slurm]'")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "-n",
         "--workflow-profile", str(PROFILE.parent), "all", "--configfile", str(ROOT / "config" / "paper.yaml")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f"Using workflow specific profile {PROFILE.parent}" in out
    trains = re.findall(r"^rule train:\n(?:    .*\n)*?    resources: (.*)$", out, flags=re.M)
    assert trains, out[-3000:]
    for resources in trains:  # paper runs ask SLURM for a GPU and a day-scale wall time, no account
        assert re.search(r"\bgpu=[1-9]", resources) and "slurm_account" not in resources, resources
        assert int(re.search(r"\bruntime=(\d+)", resources).group(1)) > 60 * 24, resources


@pytest.mark.slurm
@pytest.mark.timeout(3300)
def test_local_cluster_runs_the_profile_like_a_local_run(request):
    if "slurm" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("starts a SLURM cluster (several minutes): select it with -m slurm")
    # The script uses (and installs the [slurm] extra into) the environment running the tests.
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=3200,
                          env={**os.environ, "VENV": sys.prefix})
    out = proc.stdout + proc.stderr
    if proc.returncode == 77:
        pytest.skip(out.strip().splitlines()[-1])
    assert proc.returncode == 0, out[-4000:]
    assert re.search(r"all [1-9]\d* jobs went through sbatch and COMPLETED", out), out
    assert "every target is byte-equal to the local run's" in out and "PASSED" in out
    # The time-limit chain: a 3-minute training through 1-minute jobs, resubmitted after each TIMEOUT.
    m = re.search(r"time-limit chain: (\d+) SLURM jobs of 1 minute .*: (\d+) stopped at the limit \(TIMEOUT\) and "
                  r"resubmitted, ([1-9]\d*) of them with the trainer's state saved on SIGTERM \(exit 75\); the last "
                  r"resumed at step [1-9]\d*/\d+ and COMPLETED; final checkpoint bit-identical to the local run's", out)
    assert m and int(m.group(1)) >= 2 and int(m.group(2)) == int(m.group(1)) - 1 >= int(m.group(3)), out
