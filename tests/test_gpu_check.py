"""benchmarks/gpu_check.sh runs only where a CUDA device is lent, so drift in the run
names or config keys it uses would surface there, after a machine has been started.
These checks catch it on the CPU: the script parses, every run it trains exists in the
paper profile, and the configuration it builds validates."""
from __future__ import annotations

import re
import subprocess

import yaml

from harness.config import ROOT, ablation_runs, load_config, pair_runs

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
PAPER = ROOT / "config" / "paper.yaml"


def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def _runs(text: str) -> set[str]:
    runs = set()
    for m in re.finditer(r"^for run in ([^;]+); do", text, re.M):
        runs.update(m.group(1).split())
    runs.update(m.group(1) for m in re.finditer(r"--run ([a-z0-9.-]+)", text))
    return runs


def test_every_trained_run_exists_in_the_paper_profile():
    text = SCRIPT.read_text()
    runs = _runs(text)
    assert {"edsr-baseline-liif", "baseline-liif", "tadt-liif", "swinir-liif"} <= runs
    cfg = load_config(PAPER)
    known = set(pair_runs(cfg)) | set(ablation_runs(cfg))
    assert runs <= known, runs - known


def test_overlay_validates_over_the_paper_profile(tmp_path):
    text = SCRIPT.read_text()
    m = re.search(r'cat >"\$WORK/overlay.yaml" <<EOF\n(.*?)\nEOF\n', text, re.S)
    assert m, "overlay heredoc not found"
    body = (m.group(1).replace("$WORK", str(tmp_path)).replace("$DEVICE", "cuda")
            .replace("$((ITER * 10))", "600").replace("$ITER", "60"))
    assert "$" not in body, body
    overlay = yaml.safe_load(body)
    cfg = load_config(PAPER, overlay, {"train": {"amp": True}})
    assert cfg["profile"] == "paper" and cfg["data"]["source"] == "embedded"
    assert cfg["train"]["iterations"] == 60 and cfg["train"]["amp"] is True
    assert cfg["train"]["patch_size"] == 48 and cfg["train"]["sample_q"] == 2304  # the paper's
    assert cfg["extractors"]["baseline"] == {}  # paper widths
