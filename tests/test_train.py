"""Training (`python -m harness train`): protocol, resume, atomic output, DDP, TADT init, errors.

Tiny models on a synthetic two-image training folder, a handful of steps each.
The resume tests kill real processes (SIGKILL: no clean-up runs) and compare
the finished checkpoints bitwise with an uninterrupted run.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from harness.checkpoint import load_checkpoint, load_model
from harness.cli import main
from harness.errors import HarnessError
from harness.config import load_config, run_spec
from harness.training import train_run
from harness.training.data_order import global_batch, local_batch, make_train_dataset
from harness.training.distributed import DistInfo
from harness.training.resume import partial_path
from harness.training.rng import seed_everything
from harness.training.setup import build_model, expected_lr

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

TINY = {
    "profile": "custom",
    "device": "cpu",
    "extractors": {
        "edsr-baseline": {"n_resblocks": 1, "n_feats": 8},
        "rdn": {}, "rcan": {}, "swinir": {},
        "baseline": {"embed_dim": 8, "num_groups": 1, "blocks_per_group": 1, "heads": 1,
                     "out_dim": 8, "pooled_size": 4},
        "tadt": {"tarc_width": 4, "tarc_scale_hidden": 4},
    },
    "upsamplers": {"metasr": {"hidden_list": [8]}, "liif": {"hidden_list": [16]},
                   "lte": {"hidden_dim": 8, "hidden_list": [16]}},
    "train": {"patch_size": 16, "sample_q": 32, "repeat": 2, "batch_size": 4, "lr": 1e-3,
              "iterations": 8, "milestones": [5], "gamma": 0.5, "checkpoint_every": 3,
              "log_every": 2, "seed": 3, "threads": 1},
    "tadt": {"lambda": 0.5},
    "evaluation": {},
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A data root with two 96x96 training photographs-to-be (smooth random images)."""
    root = tmp_path_factory.mktemp("train")
    folder = root / "data" / "DIV2K_train_HR"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        small = rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)
        Image.fromarray(small).resize((96, 96), Image.BICUBIC).save(folder / f"{i:04d}.png")
    return root


def make_cfg(workdir: Path, name: str, **train) -> Path:
    """Write a config file (TINY + train overrides) under ``workdir``; returns its path."""
    cfg = yaml.safe_load(yaml.safe_dump(TINY))
    cfg["data"] = {"source": "folders", "root": str(workdir / "data"), "cache": str(workdir / "cache")}
    cfg["results"] = str(workdir / "results")
    cfg["train"].update(train)
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def assert_same_checkpoint(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca["step"] == cb["step"]
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for k in ca["state_dict"]:
        assert torch.equal(ca["state_dict"][k], cb["state_dict"][k]), f"weights differ at {k}"
    sa, sb = ca["optimizer"]["state"], cb["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), f"Adam {k} differs"
    assert ca["scheduler"]["last_epoch"] == cb["scheduler"]["last_epoch"]
    assert ca["optimizer"]["param_groups"][0]["lr"] == cb["optimizer"]["param_groups"][0]["lr"]


def cli(*args: str) -> int:
    return main(["train", *args, "--progress", "none"])


# ----------------------------------------------------------------------------- data order

def test_data_order_depends_only_on_seed_and_step_and_shards_partition_the_batch():
    n, batch = 10, 4
    assert global_batch(n, batch, 7, 5) == global_batch(n, batch, 7, 5)
    assert global_batch(n, batch, 7, 5) != global_batch(n, batch, 8, 5)
    # The stream is a concatenation of per-epoch permutations: each epoch sees every item once.
    stream = [x for step in range(5) for x in global_batch(n, batch, 7, step)]  # 20 = 2 epochs
    for epoch in (0, 1):
        assert sorted(i for e, i in stream if e == epoch) == list(range(n))
    # Two processes take disjoint halves whose union is the global batch.
    for step in range(6):
        whole = global_batch(n, batch, 7, step)
        parts = [local_batch(n, batch, 7, step, DistInfo(2, r, r)) for r in (0, 1)]
        assert len(parts[0]) == len(parts[1]) == batch // 2
        assert sorted(parts[0] + parts[1]) == sorted(whole)


# ----------------------------------------------------------------------------- protocol

def test_training_reduces_loss_and_checkpoint_holds_the_resumable_state(workdir, capsys):
    cfgp = make_cfg(workdir, "plain", lr=1e-2, iterations=10, amp=True)
    out = workdir / "results" / "plain.pth"
    log = workdir / "results" / "plain.csv"
    cfg = load_config(cfgp)
    spec = run_spec(cfg, "edsr-baseline-liif")

    # The loss of the initial model (same seed -> same initial weights) on a fixed batch.
    from torch.utils.data import default_collate
    data = make_train_dataset(cfg, spec.train, 123)
    batch = default_collate([data[i] for i in range(4)])
    seed_everything(spec.train["seed"])
    model0 = build_model(spec)

    def fixed_loss(model):
        with torch.no_grad():
            model.train()
            pred = model(batch["inp"], batch["coord"], batch["cell"], batch["scale"])
            return float((pred - batch["gt"]).abs().mean())

    assert cli("--config", str(cfgp), "--run", "edsr-baseline-liif", "--out", str(out),
               "--log", str(log)) == 0
    assert "train.amp is ignored on CPU" in capsys.readouterr().err
    model, meta = load_model(out)
    assert fixed_loss(model) < 0.8 * fixed_loss(model0)

    ck = load_checkpoint(out)
    assert ck["step"] == 10 and meta["step"] == 10
    assert ck["model"]["extractor"] == "edsr-baseline" and ck["model"]["upsampler"] == "liif"
    assert ck["model"]["extractor_args"] == {"n_resblocks": 1, "n_feats": 8}
    assert ck["run"]["name"] == "edsr-baseline-liif" and ck["run"]["train"]["iterations"] == 10
    assert len(ck["optimizer"]["state"]) == sum(p.requires_grad for p in model.parameters())
    assert all(int(st["step"]) == 10 for st in ck["optimizer"]["state"].values())
    assert ck["scheduler"]["last_epoch"] == 10
    assert ck["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-2 * 0.5)
    assert set(ck["rng"]["ranks"][0]) >= {"torch", "numpy", "python"}
    assert not partial_path(out).exists()

    rows = read_csv(log)
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8, 10]
    # lr of the last step of each logged window: halved from step 6 (0-based 5) on.
    assert [float(r["lr"]) for r in rows] == [expected_lr(spec.train, s - 1) for s in (2, 4, 6, 8, 10)]
    assert [float(r["lr"]) for r in rows] == [1e-2, 1e-2, 5e-3, 5e-3, 5e-3]
    assert all(r["l_beta"] == "" and r["beta_mean"] == "" for r in rows)
    assert all(float(r["loss"]) == float(r["l1"]) for r in rows)
    assert all(float(r["it_per_s"]) > 0 for r in rows)


# ----------------------------------------------------------------------------- resume

KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    import torch
    from harness.config import load_config, run_spec
    from harness import training as T
    cfg_path, run, out, log, kill_at, mode, init = sys.argv[1:8]
    kill_at = int(kill_at)
    cfg = load_config(cfg_path)
    def die():
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "step":      # killed between two checkpoints
        hook = lambda step: die() if step == kill_at else None
    else:                   # killed while the checkpoint of step kill_at is being written
        import harness.checkpoint as C
        real_save, state = torch.save, {{"step": 0}}
        def save(obj, f, *a, **k):
            if isinstance(obj, dict) and obj.get("step") == kill_at:
                with open(f, "wb") as fh:
                    fh.write(b"half a checkpoint")
                die()
            return real_save(obj, f, *a, **k)
        torch.save = save
        hook = None
    T.train_run(cfg, run_spec(cfg, run), out, init=init or None, log=log, threads=1,
                progress="none", on_step=hook)
    sys.exit(3)  # never reached: the process is killed
""")


def run_killed(workdir: Path, cfgp: Path, run: str, out: Path, log: Path, kill_at: int, mode: str,
               init: Path | None = None) -> None:
    script = workdir / "kill.py"
    script.write_text(KILL_SCRIPT.format(root=str(ROOT)))
    proc = subprocess.run([PY, str(script), str(cfgp), run, str(out), str(log), str(kill_at), mode,
                           str(init or "")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([PY, "-m", "harness", "train", *args, "--progress", "plain"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def baseline_ckpt(workdir) -> Path:
    """A trained tiny Baseline-LIIF (the init of the TADT runs)."""
    cfgp = make_cfg(workdir, "base", iterations=4)
    out = workdir / "results" / "checkpoints" / "baseline-liif.pth"
    assert cli("--config", str(cfgp), "--run", "baseline-liif", "--out", str(out)) == 0
    return out


def _stop_after(step: int):
    """An on_step hook that interrupts the run right after ``step``."""
    def hook(s: int) -> None:
        if s == step:
            raise KeyboardInterrupt
    return hook


def test_killed_run_resumes_to_a_bitwise_identical_result(workdir, baseline_ckpt):
    """TADT (Bernoulli routing: the RNG state matters) is SIGKILLed while writing the checkpoint
    of step 6, resumed and interrupted again after step 7, then finished by the CLI in a fresh
    process; the result equals an uninterrupted run bit for bit."""
    cfgp = make_cfg(workdir, "resume", iterations=10)
    run = "tadt-liif"
    ref, ref_log = workdir / "ref.pth", workdir / "ref.csv"
    out, log = workdir / "killed.pth", workdir / "killed.csv"
    part = partial_path(out)

    # uninterrupted, in this process
    cfg = load_config(cfgp)
    train_run(cfg, run_spec(cfg, run), ref, init=baseline_ckpt, log=ref_log, threads=1, progress="none")

    run_killed(workdir, cfgp, run, out, log, 6, "save", init=baseline_ckpt)
    assert not out.exists(), "--out must not exist before the run completes"
    assert load_checkpoint(part)["step"] == 3          # the half-written step-6 file is not it
    assert any(p.name.startswith(f".{part.name}.") for p in out.parent.iterdir())  # its debris

    # Resumed here and interrupted right after step 7 (between the checkpoints of 6 and 9).
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, run_spec(cfg, run), out, init=baseline_ckpt, log=log, threads=1,
                  progress="none", on_step=_stop_after(7))
    assert not out.exists()
    assert load_checkpoint(part)["step"] == 6
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{part.name}.")]

    proc = run_cli("--config", str(cfgp), "--run", run, "--out", str(out), "--log", str(log),
                   "--init", str(baseline_ckpt), "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"resuming from {part} at step 6/10" in proc.stderr
    assert out.exists() and not part.exists()
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    assert_same_checkpoint(ref, out)

    # The CSV continues: the same rows (timings aside), each step once.
    keep = ["step", "epoch", "loss", "l1", "l_beta", "beta_mean", "lr"]
    a, b = read_csv(ref_log), read_csv(log)
    assert [int(r["step"]) for r in b] == [2, 4, 6, 8, 10]
    assert [{k: r[k] for k in keep} for r in a] == [{k: r[k] for k in keep} for r in b]


def test_partial_checkpoint_of_another_spec_is_not_continued(workdir, capsys):
    cfg = load_config(make_cfg(workdir, "spec-a", iterations=4, checkpoint_every=2))
    spec = run_spec(cfg, "edsr-baseline-metasr")
    out = workdir / "spec.pth"
    with pytest.raises(KeyboardInterrupt):  # leaves the partial checkpoint of step 2
        train_run(cfg, spec, out, progress="none", on_step=_stop_after(3))
    assert not out.exists() and load_checkpoint(partial_path(out))["step"] == 2
    # Same run, another learning rate: must start afresh (and say so), not continue.
    cfg_b = load_config(make_cfg(workdir, "spec-b", iterations=4, checkpoint_every=2, lr=5e-4))
    summary = train_run(cfg_b, run_spec(cfg_b, "edsr-baseline-metasr"), out, progress="none")
    assert summary["resumed_from"] == 0 and summary["steps"] == 4
    assert "different run spec" in capsys.readouterr().err
    # ...whereas the same spec with other checkpoint/log intervals resumes.
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, spec, out, progress="none", on_step=_stop_after(3))
    cfg_c = load_config(make_cfg(workdir, "spec-c", iterations=4, checkpoint_every=3, log_every=1))
    summary = train_run(cfg_c, run_spec(cfg_c, "edsr-baseline-metasr"), out, progress="none")
    assert summary["resumed_from"] == 2 and summary["steps"] == 2


def test_partial_checkpoint_from_another_init_is_not_continued(workdir, baseline_ckpt, capsys):
    """A TADT partial made from one Baseline is not continued once the Baseline has changed."""
    cfg = load_config(make_cfg(workdir, "init-a", iterations=4, checkpoint_every=2))
    spec = run_spec(cfg, "tadt-liif")
    out = workdir / "init.pth"
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, spec, out, init=baseline_ckpt, progress="none", on_step=_stop_after(3))
    retrained = workdir / "baseline-liif-retrained.pth"
    ck = load_checkpoint(baseline_ckpt)
    ck["step"] += 1  # another file (a retrained Baseline)
    torch.save(ck, retrained)
    summary = train_run(cfg, spec, out, init=retrained, progress="none")
    assert summary["resumed_from"] == 0
    assert "another init checkpoint" in capsys.readouterr().err
    assert load_checkpoint(out)["run"]["trainer"]["init"]["path"] == str(retrained)


# ----------------------------------------------------------------------------- TADT

def test_tadt_starts_from_the_baseline_and_adds_the_intensity_loss(workdir, baseline_ckpt):
    lr = 1e-5
    cfgp = make_cfg(workdir, "tadt", iterations=1, log_every=1, lr=lr)
    out, log = workdir / "tadt1.pth", workdir / "tadt1.csv"
    # --init omitted: the default is <results>/checkpoints/baseline-liif.pth (= baseline_ckpt)
    assert cli("--config", str(cfgp), "--run", "tadt-liif", "--out", str(out), "--log", str(log)) == 0
    base = load_checkpoint(baseline_ckpt)["state_dict"]
    tadt = load_checkpoint(out)["state_dict"]
    new = [k for k in tadt if k not in base]
    assert new and all(k.startswith("encoder.tarc.") for k in new)
    # After one Adam step every weight is within lr of where it started: the backbone
    # started exactly at the Baseline's weights (a fresh init would be ~0.1 away).
    for k, v in base.items():
        assert (tadt[k] - v).abs().max() <= lr * 1.05, k
    row = read_csv(log)[0]
    l1, l_beta, loss = float(row["l1"]), float(row["l_beta"]), float(row["loss"])
    assert 0 < float(row["beta_mean"]) < 1 and l_beta > 0
    assert loss == pytest.approx(l1 + 0.5 * l_beta, rel=1e-5)   # lambda 0.5 in this config

    # The no-L_beta ablation logs L_beta but does not add it.
    log2 = workdir / "nolbeta.csv"
    assert cli("--config", str(cfgp), "--run", "tadt-liif-nolbeta", "--out", str(workdir / "nl.pth"),
               "--log", str(log2), "--init", str(baseline_ckpt)) == 0
    row = read_csv(log2)[0]
    assert float(row["l_beta"]) > 0 and float(row["loss"]) == pytest.approx(float(row["l1"]), rel=1e-6)


def test_init_that_does_not_fit_lists_the_tensors_in_one_line(workdir, baseline_ckpt, capsys):
    cfgp = make_cfg(workdir, "wide")
    raw = yaml.safe_load(cfgp.read_text())
    raw["extractors"]["baseline"]["embed_dim"] = 12  # the init was trained with 8
    cfgp.write_text(yaml.safe_dump(raw))
    out = workdir / "wide" / "tadt.pth"
    assert cli("--config", str(cfgp), "--run", "tadt-liif", "--out", str(out),
               "--init", str(baseline_ckpt)) == 2
    line = _one_error_line(capsys)
    assert f"init checkpoint {baseline_ckpt} does not fit run tadt-liif: " in line
    assert "of another shape (file vs model: encoder.conv_first.weight (8, 3, 3, 3) vs (12, 3, 3, 3)" in line
    assert "missing" not in line  # the TARC may be absent from a Baseline
    assert not out.exists() and not partial_path(out).exists()


# ----------------------------------------------------------------------------- DDP

def test_torchrun_two_processes_gloo_matches_one_process(workdir):
    cfgp = make_cfg(workdir, "ddp", iterations=3, checkpoint_every=2, log_every=1, lr=1e-3)
    out, log = workdir / "ddp.pth", workdir / "ddp.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    torchrun = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    # "--" keeps torchrun from reading --run / --log as abbreviations of its own options.
    proc = subprocess.run(torchrun + ["-m", "harness", "--", "train", "--config", str(cfgp), "--run",
                                      "edsr-baseline-liif", "--out", str(out), "--log", str(log),
                                      "--device", "cpu", "--threads", "1", "--progress", "plain"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model, meta = load_model(out)
    assert meta["step"] == 3 and meta["run"]["trainer"]["world_size"] == 2
    assert len(meta["rng"]["ranks"]) == 2
    assert not partial_path(out).exists()
    rows = read_csv(log)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]          # rank 0 alone writes the log

    # Same global batch in one process: the gradient is the same mean, so the weights agree
    # (up to float summation order).
    one = workdir / "one.pth"
    cfg = load_config(cfgp)
    train_run(cfg, run_spec(cfg, "edsr-baseline-liif"), one, log=workdir / "one.csv", progress="none")
    ref = load_checkpoint(one)["state_dict"]
    for k, v in model.state_dict().items():
        assert torch.allclose(v, ref[k], atol=1e-5), k
    assert float(rows[0]["loss"]) == pytest.approx(float(read_csv(workdir / "one.csv")[0]["loss"]), rel=1e-5)


# ----------------------------------------------------------------------------- errors

def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_clear_errors_and_no_output(workdir, baseline_ckpt, capsys):
    cfgp = make_cfg(workdir, "errors")
    out = workdir / "err" / "x.pth"

    assert cli("--config", str(cfgp), "--run", "edsr-liif", "--out", str(out)) == 2
    assert "unknown run 'edsr-liif'" in _one_error_line(capsys)

    assert cli("--config", str(workdir / "nope.yaml"), "--run", "edsr-baseline-liif", "--out", str(out)) == 2
    assert "nope.yaml does not exist" in _one_error_line(capsys)

    missing = workdir / "err" / "no-baseline.pth"
    assert cli("--config", str(cfgp), "--run", "tadt-lte", "--out", str(out), "--init", str(missing)) == 2
    line = _one_error_line(capsys)
    assert str(missing) in line and "does not exist" in line

    garbage = workdir / "err-garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    assert cli("--config", str(cfgp), "--run", "tadt-lte", "--out", str(out), "--init", str(garbage)) == 2
    line = _one_error_line(capsys)
    assert str(garbage) in line and "cannot be read" in line

    # A checkpoint of another model (a Baseline-LIIF for a TADT-LTE run) is refused with the reason.
    assert cli("--config", str(cfgp), "--run", "tadt-lte", "--out", str(out), "--init",
               str(baseline_ckpt)) == 2
    assert "needs upsampler lte" in _one_error_line(capsys)

    assert cli("--config", str(cfgp), "--run", "edsr-baseline-liif", "--out", str(out), "--attempt", "0") == 2
    assert "--attempt must be at least 1" in _one_error_line(capsys)

    assert not out.exists() and not partial_path(out).exists()
    assert not (out.parent.exists() and any(out.parent.iterdir()))


def test_schedule_overrides_by_extractor_then_by_run(workdir):
    over = {"swinir": {"lr": 2e-3}, "swinir-lte": {"lr": 1e-4},
            "tadt": {"iterations": 7}}
    cfg_path = make_cfg(workdir, "over", overrides=over)
    raw = yaml.safe_load(cfg_path.read_text())
    raw["tadt"]["finetune"] = {"iterations": 5, "lr": 3e-4}
    cfg_path.write_text(yaml.safe_dump(raw))
    cfg = load_config(cfg_path)
    assert run_spec(cfg, "swinir-liif").train["lr"] == 2e-3      # the extractor's entry
    assert run_spec(cfg, "swinir-lte").train["lr"] == 1e-4       # the run's own entry wins
    assert run_spec(cfg, "edsr-baseline-liif").train["lr"] == 1e-3
    tadt = run_spec(cfg, "tadt-liif-nolbeta").train              # finetune, then the tadt entry
    assert (tadt["iterations"], tadt["lr"]) == (7, 3e-4)
    raw["train"]["overrides"] = {"swinr": {"lr": 1e-3}}
    cfg_path.write_text(yaml.safe_dump(raw))
    with pytest.raises(HarnessError, match="train/overrides/swinr: no such run or extractor"):
        load_config(cfg_path)
