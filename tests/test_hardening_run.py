"""Issue 12, items 5, 6, 7, 9, 12 and 13: bad checkpoints, configs, tables, FLOPs arguments and
environments give one line (exit 2, no traceback, no output file, nothing lost); one trainer per
run output; no non-finite training state is ever saved; a completed run is not retrained unless
asked; the README says how to recover a killed workflow.

The verbs run in this process through ``harness.cli.main`` (a traceback would fail the test);
the lock test starts a real second process, and the workflow test real Snakemake runs.
"""
from __future__ import annotations

import io
import os
import re
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from harness import checkpoint as ckpt
from harness import modelbuild
from harness.cli import main
from harness.config import ROOT, load_config, run_spec
from harness.errors import HarnessError
from harness.training import train_run
from harness.training.lock import lock_path
from harness.training.resume import partial_path
from harness.training.setup import build_model
from upsamplers import create_model

PY = sys.executable
TINY_EDSR = {"n_resblocks": 1, "n_feats": 8}
SPEC = {"upsampler": "liif", "extractor": "edsr-baseline", "extractor_args": TINY_EDSR,
        "upsampler_args": {"hidden_list": [16]}}
TINY_CFG = {
    "profile": "custom", "device": "cpu",
    "extractors": {"edsr-baseline": TINY_EDSR},
    "upsamplers": {"liif": {"hidden_list": [16]}},
    "train": {"patch_size": 16, "sample_q": 32, "repeat": 2, "batch_size": 4, "lr": 1e-3,
              "iterations": 4, "milestones": [3], "gamma": 0.5, "checkpoint_every": 1,
              "log_every": 1, "seed": 3, "threads": 1},
    "tadt": {"lambda": 0.5},
    "evaluation": {},
}


def one_error(capsys, rc: int, *needles: str) -> str:
    """The single ``error:`` line a failed verb printed (exit 2), holding every needle."""
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), (rc, err)
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A data root with two 96x96 training images."""
    root = tmp_path_factory.mktemp("hardening") / "data"
    folder = root / "DIV2K_train_HR"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        small = rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)
        Image.fromarray(small).resize((96, 96), Image.BICUBIC).save(folder / f"{i:04d}.png")
    return root


def write_cfg(where: Path, data_root: Path, name: str = "cfg", extractor=None, **train) -> Path:
    cfg = yaml.safe_load(yaml.safe_dump(TINY_CFG))
    cfg["data"] = {"source": "folders", "root": str(data_root), "cache": str(where / "cache")}
    cfg["results"] = str(where / "results")
    cfg["train"].update(train)
    if extractor:
        cfg["extractors"]["edsr-baseline"] = extractor
    path = where / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_cli(cfg: Path, out: Path, *extra: str) -> int:
    return main(["train", "--config", str(cfg), "--run", "edsr-baseline-liif", "--out", str(out),
                 "--log", str(out.with_suffix(".csv")), "--progress", "none", *extra])


def tiny_model():
    torch.manual_seed(0)
    return create_model("liif", "edsr-baseline", extractor_args=TINY_EDSR,
                        upsampler_args={"hidden_list": [16]})


def upscale(capsys, tmp_path: Path, checkpoint: Path) -> tuple[int, Path]:
    """``upscale`` of a small image with ``checkpoint``: (exit status, the output path)."""
    image, out = tmp_path / "in.png", tmp_path / "up" / "out.png"
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(image)
    return main(["upscale", str(image), "--scale", "2", "--checkpoint", str(checkpoint), "-o", str(out)]), out


def release(path: Path, hidden_list, sd) -> Path:
    args = {"encoder_spec": {"name": "edsr-baseline", "args": {"no_upsampling": True, **TINY_EDSR}},
            "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": hidden_list}}}
    torch.save({"model": {"name": "liif", "args": args, "sd": sd}, "epoch": 1}, path)
    return path


def ours(path: Path, spec: dict, state_dict) -> Path:
    torch.save({"format": ckpt.FORMAT, "model": spec, "state_dict": state_dict, "step": 1,
                "optimizer": None, "scheduler": None, "rng": None, "run": None}, path)
    return path


# ----------------------------------------------------------------------------- item 5: checkpoints

def test_item5_release_with_hidden_list_of_strings_is_one_line(tmp_path, capsys):
    path = release(tmp_path / "strings.pth", ["a"], tiny_model().state_dict())
    rc, out = upscale(capsys, tmp_path, path)
    one_error(capsys, rc, "strings.pth", "hidden_list ['a'] is not a list of positive integers")
    assert not out.exists() and not out.parent.exists()


def test_item5_release_whose_sd_is_a_list_is_one_line(tmp_path, capsys):
    path = release(tmp_path / "listsd.pth", [16], list(tiny_model().state_dict().values()))
    rc, out = upscale(capsys, tmp_path, path)
    one_error(capsys, rc, "listsd.pth", "its weights are a list, not a mapping of names to tensors")
    assert not out.exists()


@pytest.mark.parametrize("change, needle", [
    ({"extractor": ["edsr-baseline"]}, "the extractor name is a list"),
    ({"extractor_args": [1, 2]}, "extractor_args is a list, not a mapping"),
    ({"extractor_args": {"n_feats": float("nan")}}, "extractor_args.n_feats is nan, not a finite number"),
    ({"extractor_args": {"n_feats": "a"}}, "cannot build it: TypeError"),
    ({"extractor_args": {"n_feats": -4}}, "negative dimension -4"),
    ({"extractor_args": {"n_feats": 0}}, "parameter encoder.head.0.weight would have shape (0, 3, 3, 3)"),
    ({"upsampler_args": {"hidden_list": ["a"]}}, "cannot build it"),
])
def test_item5_spec_of_the_wrong_type_is_one_line(tmp_path, change, needle):
    path = ours(tmp_path / "typed.pth", {**SPEC, **change}, tiny_model().state_dict())
    with pytest.raises(HarnessError) as info:
        ckpt.load_model(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"checkpoint {path}") and needle in msg, msg


def test_item5_state_dict_of_non_tensors_is_one_line(tmp_path):
    sd = {k: v.tolist() for k, v in tiny_model().state_dict().items()}
    path = ours(tmp_path / "lists.pth", SPEC, sd)
    with pytest.raises(HarnessError, match=r"lists\.pth: its weights hold \d+ values that are not tensors "
                                           r"\(encoder\.sub_mean\.weight \(list\), "):
        ckpt.load_model(path)


def test_item5_huge_width_is_refused_before_anything_is_allocated(tmp_path, capsys):
    """n_feats 30000 (a 32 GB model) with the weights of an 8-wide one: refused from the shapes."""
    path = ours(tmp_path / "wide.pth", {**SPEC, "extractor_args": {"n_resblocks": 1, "n_feats": 30000}},
                tiny_model().state_dict())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    rc, out = upscale(capsys, tmp_path, path)
    one_error(capsys, rc, "wide.pth does not fit", "encoder.head.0.weight (8, 3, 3, 3) vs (30000, 3, 3, 3)")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 1_000_000  # not 32 GB
    assert not out.exists()


def test_item5_model_larger_than_memory_is_refused(tmp_path, capsys):
    """Weights that fit a 1 PB model (stride-0 tensors make the file 3 kB): the memory check refuses."""
    spec = {**SPEC, "extractor_args": {"n_resblocks": 1, "n_feats": 3_000_000}}
    meta = modelbuild.on_meta(lambda: create_model("liif", "edsr-baseline",
                                                   extractor_args=spec["extractor_args"],
                                                   upsampler_args=spec["upsampler_args"]))
    one = torch.zeros(1)
    path = ours(tmp_path / "peta.pth", spec, {k: one.expand(*v.shape) for k, v in meta.state_dict().items()})
    assert path.stat().st_size < 100_000
    rc, out = upscale(capsys, tmp_path, path)
    line = one_error(capsys, rc, "peta.pth: the model has 243,000,525,000,155 parameters (972 TB)",
                     "of memory available on cpu")
    assert re.search(r"more than the [\d.e+]+ [GT]B of memory", line)
    assert not out.exists()


def test_item5_memory_limit_follows_the_memory_available(tmp_path, monkeypatch, data_root):
    path = ckpt.save_checkpoint(tmp_path / "small.pth", tiny_model(), SPEC, step=1)
    n_bytes = modelbuild.tensor_bytes(tiny_model())
    monkeypatch.setattr(modelbuild, "available_bytes", lambda device="cpu": n_bytes - 1)
    with pytest.raises(HarnessError, match=r"small\.pth: the model has \d[\d,]* parameters .*more than"):
        ckpt.load_model(path)
    spec = run_spec(load_config(write_cfg(tmp_path, data_root)), "edsr-baseline-liif")
    monkeypatch.setattr(modelbuild, "available_bytes", lambda device="cpu": 4 * n_bytes - 1)
    with pytest.raises(HarnessError, match=r"run edsr-baseline-liif: .*4 copies of its tensors"):
        build_model(spec)
    monkeypatch.setattr(modelbuild, "available_bytes", lambda device="cpu": 4 * n_bytes)
    assert modelbuild.tensor_bytes(build_model(spec)) == n_bytes
    assert ckpt.load_model(path)[0] is not None


def test_item5_training_a_huge_width_is_refused_before_allocating(tmp_path, data_root, capsys):
    cfg = write_cfg(tmp_path, data_root, extractor={"n_resblocks": 1, "n_feats": 100_000})
    out = tmp_path / "ckpt" / "wide.pth"
    one_error(capsys, train_cli(cfg, out), "run edsr-baseline-liif: the model has", "4 copies of its tensors")
    assert not out.exists() and not lock_path(out).exists() and not partial_path(out).exists()


# ----------------------------------------------------------------------------- item 6: one trainer per run

HOLD_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from harness.config import load_config, run_spec
    from harness.training import train_run
    cfg_path, out, ready = sys.argv[1:4]
    cfg = load_config(cfg_path)
    def hold(step):  # after the checkpoint of step 1: say so, then wait to be killed
        if step == 1:
            Path(ready).write_text("1")
            time.sleep(600)
    train_run(cfg, run_spec(cfg, "edsr-baseline-liif"), out, log=str(Path(out).with_suffix(".csv")), progress="none", on_step=hold)
""")


def test_item6_second_trainer_stops_naming_the_first_and_the_lock_dies_with_it(tmp_path, data_root, capsys):
    cfg = write_cfg(tmp_path, data_root)
    out = tmp_path / "ckpt" / "run.pth"
    log = out.with_suffix(".csv")
    script, ready = tmp_path / "hold.py", tmp_path / "ready"
    script.write_text(HOLD_SCRIPT)
    first = subprocess.Popen([PY, str(script), str(cfg), str(out), str(ready)], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        while not ready.exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert ready.exists(), first.communicate(timeout=5)[0][-2000:] if first.poll() is not None else "slow"
        assert lock_path(out).read_text().split()[0] == str(first.pid)
        # Debris that looks like a killed writer's: the second trainer must not touch it.
        in_flight = out.parent / f".{partial_path(out).name}.abc12345.tmp"
        in_flight.write_bytes(b"the first trainer's file being written")
        part_before, log_before = partial_path(out).read_bytes(), log.read_bytes()

        one_error(capsys, train_cli(cfg, out), f"run edsr-baseline-liif ({out}) is being trained by process "
                  f"{first.pid} on host", str(lock_path(out)))
        assert in_flight.exists() and not out.exists()
        assert partial_path(out).read_bytes() == part_before and log.read_bytes() == log_before
        in_flight.unlink()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    assert lock_path(out).exists()  # left by the killed trainer, but its lock died with it

    assert train_cli(cfg, out) == 0
    err = capsys.readouterr().err
    assert f"resuming from {partial_path(out)} at step 1/4" in err
    assert ckpt.load_checkpoint(out)["step"] == 4 and not partial_path(out).exists()
    assert not lock_path(out).exists()
    assert [r.split(",")[0] for r in log.read_text().splitlines()[1:]] == ["1", "2", "3", "4"]


# ----------------------------------------------------------------------------- item 7: configs

@pytest.mark.parametrize("text, needles", [
    ("train:\n  lr: .nan\n", ["bad config value at train/lr: nan is not a finite number"]),
    ("train:\n  lr: .inf\n", ["bad config value at train/lr: inf is not a finite number"]),
    ("train:\n  gamma: -.inf\n", ["bad config value at train/gamma: -inf is not a finite number"]),
    ("train:\n  lr: [1, 2\n  x: 3\n", ["is not valid YAML at line 3, column 4: expected ',' or ']'"]),
    ("train:\n\tlr: 1\n", ["is not valid YAML at line 2, column 1: found character '\\t'"]),
    ("a: 1\nb: x\x01y\n", ["is not valid YAML at line 2, column 5: character #x0001"]),
])
def test_item7_bad_config_is_one_line(tmp_path, capsys, text, needles):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    out = tmp_path / "o" / "x.pth"
    rc = main(["train", "--config", str(path), "--run", "edsr-baseline-liif", "--out", str(out)])
    one_error(capsys, rc, *needles)
    assert not out.parent.exists()


def test_item7_config_that_is_not_utf8_is_one_line(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# réglages\ntrain:\n  lr: 1.0e-3\n".encode("latin-1"))
    rc = main(["train", "--config", str(path), "--run", "edsr-baseline-liif"])
    one_error(capsys, rc, f"config file {path} is not UTF-8 text: byte 0xe9 on line 1")


# ----------------------------------------------------------------------------- item 9: more tracebacks

@pytest.mark.parametrize("content, needle", [
    (b"", "is empty (not even a header line)"),
    (bytes(np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8)), "is not a text CSV"),
    (b"run,dataset,scale,image,psnr\nx,div2k-valid,2,a,high\n", "column psnr holds 'high' on data row 1"),
    (b'run,dataset,scale,image,psnr\n"x,1\n', "is not a readable CSV"),
])
def test_item9_table_of_an_unreadable_csv_is_one_line(tmp_path, capsys, content, needle):
    csv_path, out = tmp_path / "e.csv", tmp_path / "t" / "table1.csv"
    csv_path.write_bytes(content)
    one_error(capsys, main(["table", "1", "--eval", str(csv_path), "--out", str(out)]),
              f"evaluation CSV {csv_path}", needle)
    assert not out.exists()


def test_item9_flops_with_a_negative_width_is_one_line(capsys):
    rc = main(["flops", "--extractor", "edsr-baseline", "--extractor-args", '{"n_feats": -4}', "--size", "16x16"])
    one_error(capsys, rc, "edsr-baseline with {'n_feats': -4}: cannot build it: RuntimeError",
              "negative dimension -4")


@pytest.mark.parametrize("env, needle", [
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 is set but MASTER_ADDR and MASTER_PORT are not"),
    ({"WORLD_SIZE": "abc"}, "environment variable WORLD_SIZE='abc' is not an integer >= 1"),
    ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "x", "MASTER_PORT": "1"}, "RANK=2 is not below WORLD_SIZE=2"),
])
def test_item9_stale_torchrun_environment_is_one_line(tmp_path, data_root, capsys, monkeypatch, env, needle):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "ckpt" / "x.pth"
    one_error(capsys, train_cli(write_cfg(tmp_path, data_root), out), needle, "launch with torchrun")
    assert not out.parent.exists()


# ----------------------------------------------------------------------------- item 12: non-finite steps, reruns

def test_item12_overflowing_learning_rate_stops_and_keeps_the_last_finite_checkpoint(tmp_path, data_root, capsys):
    """gamma 1e304 at step 3: the 4th update cannot be represented; the partial of step 3 stays."""
    cfg = write_cfg(tmp_path, data_root, gamma=1e304, milestones=[3])
    out = tmp_path / "ckpt" / "x.pth"
    one_error(capsys, train_cli(cfg, out), "the update of step 4 overflows at learning rate 1e+301",
              f"the last checkpoint, {partial_path(out)} (step 3), is kept")
    part = ckpt.load_checkpoint(partial_path(out))
    assert part["step"] == 3 and all(torch.isfinite(v).all() for v in part["state_dict"].values())
    assert not out.exists() and not lock_path(out).exists()


def test_item12_non_finite_weights_are_never_saved(tmp_path, data_root, capsys, monkeypatch):
    """An update that leaves NaN weights (the loss of that step still finite): nothing is written."""
    real_step, calls = torch.optim.Adam.step, []

    def poisoning_step(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("nan"))
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", poisoning_step)
    out = tmp_path / "ckpt" / "x.pth"
    one_error(capsys, train_cli(write_cfg(tmp_path, data_root), out),
              "1 weight tensor(s) are not finite after step 3 (encoder.sub_mean.weight;",
              f"the last checkpoint, {partial_path(out)} (step 2), is kept")
    assert ckpt.load_checkpoint(partial_path(out))["step"] == 2 and not out.exists()

    # With no checkpoint yet, it says so.
    calls.clear()
    out2 = tmp_path / "ckpt" / "y.pth"
    monkeypatch.setattr(torch.optim.Adam, "step", poisoning_step)
    one_error(capsys, train_cli(write_cfg(tmp_path, data_root, "c3", checkpoint_every=3), out2),
              "not finite after step 3", "no checkpoint was written")
    assert not out2.exists() and not partial_path(out2).exists()


def test_item12_completed_run_is_kept_unless_force(tmp_path, data_root, capsys):
    cfg = write_cfg(tmp_path, data_root, iterations=2)
    out = tmp_path / "ckpt" / "done.pth"
    log = out.with_suffix(".csv")
    assert train_cli(cfg, out) == 0
    assert "2 steps done (2 this session" in capsys.readouterr().err
    before, log_before, mtime = out.read_bytes(), log.read_bytes(), out.stat().st_mtime_ns

    assert train_cli(cfg, out) == 0
    err = capsys.readouterr().err
    assert f"edsr-baseline-liif: {out} already holds this run, complete (2 steps); nothing to train " \
           "(--force trains it again)" in err and "steps done" not in err
    assert out.read_bytes() == before and out.stat().st_mtime_ns == mtime and log.read_bytes() == log_before

    assert train_cli(cfg, out, "--force") == 0
    assert "2 steps done (2 this session" in capsys.readouterr().err
    assert out.stat().st_mtime_ns != mtime
    ck = ckpt.load_checkpoint(out)
    assert all(torch.equal(ck["state_dict"][k], v)  # CPU, fixed seed: the same run again
               for k, v in torch.load(io.BytesIO(before), weights_only=True)["state_dict"].items())

    other = write_cfg(tmp_path, data_root, "other", iterations=2, lr=5e-4)
    assert train_cli(other, out) == 0
    err = capsys.readouterr().err
    assert f"note: replacing {out}: it was written for a different run spec; training the run again" in err
    assert ckpt.load_checkpoint(out)["run"]["train"]["lr"] == 5e-4

    out.write_bytes(b"not a checkpoint")
    assert train_cli(other, out) == 0
    assert f"note: replacing unreadable {out} (checkpoint {out} cannot be read" in capsys.readouterr().err
    assert ckpt.load_checkpoint(out)["step"] == 2


def test_item12_train_help_documents_force(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--force train even if --out already holds this run, complete" in text
    assert "Snakemake deletes a job's outputs before it runs the job" in text


def _snakemake(wd: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(wd), *args],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


@pytest.mark.slow
def test_item12_13_killed_workflow_recovers_as_the_readme_says_and_reruns_retrain(tmp_path):
    """A SIGKILLed workflow (Snakemake and its training job) leaves its lock; the README's
    --unlock and --rerun-incomplete resume the training; a forced rerun retrains (Snakemake deletes
    the output before the job, so the verb never sees a completed run to keep)."""
    cfg = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
    cfg["train"].update(iterations=300, checkpoint_every=10, log_every=10)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    target = "results/checkpoints/edsr-baseline-liif.pth"
    ckpt_path = tmp_path / target
    txt = tmp_path / "results" / "logs" / "train" / "edsr-baseline-liif.log"
    args = ["--cores", "1", target, "--configfile", str(config)]

    first = subprocess.Popen([PY, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not partial_path(ckpt_path).exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the workflow and its job, as a lost terminal would
    first.wait(timeout=60)
    assert partial_path(ckpt_path).exists() and not ckpt_path.exists()

    proc = _snakemake(tmp_path, *args)
    assert proc.returncode != 0 and "cannot be locked" in proc.stdout + proc.stderr
    assert _snakemake(tmp_path, "--unlock", "--configfile", config).returncode == 0
    proc = _snakemake(tmp_path, *args, "--rerun-incomplete")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = txt.read_text()
    assert re.search(r"resuming from \S+\.partial at step [1-9]\d*/300", log), log[-2000:]
    assert "300 steps done" in log and ckpt_path.exists() and not lock_path(ckpt_path).exists()
    mtime = ckpt_path.stat().st_mtime_ns

    proc = _snakemake(tmp_path, *args, "-f")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = txt.read_text()
    assert "300 steps done (300 this session" in log and "already holds this run" not in log
    assert ckpt_path.stat().st_mtime_ns != mtime


# ----------------------------------------------------------------------------- item 13: README

def test_item13_readme_says_how_to_recover_where_the_main_command_is():
    text = (ROOT / "README.md").read_text()
    section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    assert "make table1" in section
    assert ".venv/bin/snakemake --unlock" in section
    assert ".venv/bin/snakemake --cores all results/table1.csv --rerun-incomplete" in section
    assert "<run>.pth.lock" in section and "<run>.pth.partial" in section
