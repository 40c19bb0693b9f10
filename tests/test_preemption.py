"""SIGTERM during training, as a batch system's time limit sends it: the state is saved, the
process exits 75, and the resumed run ends bit for bit where an uninterrupted one does.

Every run here is a real process started on the tiny ``.test/config.yaml`` (more steps, no
periodic checkpoint, so a partial file can only come from the SIGTERM); the signal is sent from
outside, mid-run. Finished checkpoints are compared with
:func:`harness.training.resume.state_differences` (every weight, the optimiser, the scheduler and
the RNG streams of every process, exactly). One process, two gloo processes under torchrun
(only one of them signalled: both must stop after the same step), and the workflow's own
resubmission (``retries`` of rule train) after its training job was stopped.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.checkpoint import load_checkpoint
from harness.cli import main
from harness.config import ROOT, load_config, run_spec
from harness.errors import HarnessError
from harness.experiments import job_config_text
from harness.training import train_run
from harness.training.preemption import PREEMPTED_EXIT
from harness.training.resume import partial_path, state_differences
from harness.training.runlog import LOG_FIELDS

PY = sys.executable
RUN = "edsr-baseline-liif"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
STOPPED = re.compile(r"SIGTERM received: stopped after step (\d+)/(\d+) with the state saved to (\S+);")


def write_config(tmp: Path, name: str, **train) -> Path:
    """``.test/config.yaml`` with its results under ``tmp`` and the train settings ``train``."""
    cfg = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
    cfg["results"] = str(tmp / "results")
    cfg["data"]["cache"] = str(tmp / "cache")
    cfg["train"].update({"checkpoint_every": 100000, "log_every": 5, **train})
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def reference(tmp: Path, cfgp: Path) -> dict:
    """The uninterrupted run of ``cfgp``, trained in this process."""
    cfg = load_config(cfgp)
    out = tmp / f"reference-{cfgp.stem}.pth"
    train_run(cfg, run_spec(cfg, RUN), out, log=tmp / f"reference-{cfgp.stem}.csv", threads=1, progress="none")
    return load_checkpoint(out)


def train_args(cfgp: Path, out: Path, *extra: str) -> list[str]:
    """The arguments of ``train`` for run RUN of ``cfgp`` into ``out`` (its log beside it)."""
    return ["train", "--config", str(cfgp), "--run", RUN, "--out", str(out), "--log", str(out.with_suffix(".csv")),
            "--threads", "1", "--progress", "plain", *extra]


def progress(text: str) -> int:
    """The last step a plain progress line in ``text`` reports (0: none yet)."""
    return max([int(s) for s in re.findall(r" step (\d+)/", text)] or [0])


def signal_at_step(proc: subprocess.Popen, step: int, send) -> str:
    """Read ``proc``'s stderr until a progress line reaches ``step``, call ``send()``, then
    collect the rest; returns all of stderr."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if progress(line) >= step:
            send()
            break
    else:
        proc.wait(timeout=60)
        pytest.fail(f"the run ended (exit {proc.returncode}) before step {step}:\n" + "".join(seen)[-2000:])
    try:
        _, rest = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the run did not stop after SIGTERM:\n" + "".join(seen)[-2000:])
    return "".join(seen) + rest


def stopped_step(stderr: str, part: Path, iterations: int, after: int) -> int:
    """The step the log line names; checks it is that of the partial file and mid-run."""
    m = STOPPED.search(stderr)
    assert m, stderr[-2000:]
    step = int(m.group(1))
    assert int(m.group(2)) == iterations and Path(m.group(3)) == part
    assert after <= step < iterations
    assert load_checkpoint(part)["step"] == step
    return step


def assert_same_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    assert state_differences(a, b) == []
    assert len(a["rng"]["ranks"]) == len(b["rng"]["ranks"]) >= 1


# ----------------------------------------------------------------------------- one process

def test_sigterm_saves_the_step_exits_75_and_the_resumed_run_is_bitwise_the_uninterrupted_one(tmp_path):
    """SIGTERM to the whole process group (as SLURM signals every process of a job), with a
    DataLoader worker: the worker must not die of it, the trainer stops after its current step."""
    iterations = 150
    cfgp = write_config(tmp_path, "one", iterations=iterations, num_workers=1)
    out = tmp_path / "results" / "checkpoints" / f"{RUN}.pth"
    part = partial_path(out)
    proc = subprocess.Popen([PY, "-m", "harness", *train_args(cfgp, out)], stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=ENV, start_new_session=True)
    err = signal_at_step(proc, 10, lambda: os.killpg(proc.pid, signal.SIGTERM))
    assert proc.returncode == PREEMPTED_EXIT == 75, err[-3000:]
    step = stopped_step(err, part, iterations, after=10)
    assert not out.exists() and "Traceback" not in err
    rows = list(load_checkpoint(part)["run"]["trainer"]["log_rows"])
    assert [int(r["step"]) for r in rows] == list(range(5, step + 1, 5))
    assert all(set(r) == set(LOG_FIELDS) for r in rows)

    # The log file is gone (Snakemake deletes a job's logs before running it again): the
    # resumed run writes every row from the checkpoint's.
    out.with_suffix(".csv").unlink()
    done = subprocess.run([PY, "-m", "harness", *train_args(cfgp, out)], capture_output=True, text=True,
                          cwd=tmp_path, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming from {part} at step {step}/{iterations}" in done.stderr
    assert out.exists() and not part.exists()
    with open(out.with_suffix(".csv")) as fh:
        assert [int(line.split(",")[0]) for line in fh.readlines()[1:]] == list(range(5, iterations + 1, 5))

    ref = reference(tmp_path, write_config(tmp_path, "no-workers", iterations=iterations, num_workers=0))
    final = load_checkpoint(out)
    assert_same_state(final, ref)
    assert final["run"]["trainer"]["log_rows"][-1]["loss"] == ref["run"]["trainer"]["log_rows"][-1]["loss"]


def test_sigterm_while_the_final_checkpoint_is_written_keeps_it_resumable(tmp_path, monkeypatch):
    """A stop request that comes after the last step: the run completes, and the partial file
    becomes the final state, so a job counted as failed (its output deleted) only rewrites it."""
    cfgp = write_config(tmp_path, "last", iterations=6, log_every=2)
    cfg = load_config(cfgp)
    out = tmp_path / "last.pth"
    from harness.training import trainer as T

    real_save = T.Trainer._save

    def save(self, path, elapsed):
        if path == self.out:
            os.kill(os.getpid(), signal.SIGTERM)  # handled: sets the flag only
        return real_save(self, path, elapsed)

    monkeypatch.setattr(T.Trainer, "_save", save)
    handler = signal.getsignal(signal.SIGTERM)
    summary = train_run(cfg, run_spec(cfg, RUN), out, progress="none")
    assert summary["step"] == 6 and out.exists()
    part = partial_path(out)
    assert load_checkpoint(part)["step"] == 6
    assert state_differences(load_checkpoint(part), load_checkpoint(out)) == []
    assert signal.getsignal(signal.SIGTERM) is handler  # the run's handler is gone with the run

    out.unlink()  # the workflow's clean-up of a failed job
    monkeypatch.undo()
    again = train_run(cfg, run_spec(cfg, RUN), out, progress="none")
    assert again["resumed_from"] == 6 and again["steps"] == 0
    assert out.exists() and not part.exists()


def test_workflow_attempts_keep_the_final_state_and_only_a_resubmission_takes_it(tmp_path, capsys):
    """A job that completes as its time limit strikes is counted as failed and its checkpoint
    deleted: with ``attempt`` (the workflow's) the final state stays as the partial file; a later
    attempt writes the checkpoint again from it, a first attempt (a forced rerun) trains afresh."""
    cfg = load_config(write_config(tmp_path, "attempts", iterations=6, log_every=2))
    out, part = tmp_path / "a.pth", partial_path(tmp_path / "a.pth")
    first = train_run(cfg, run_spec(cfg, RUN), out, progress="none", attempt=1)
    assert first["steps"] == 6 and os.path.samefile(part, out)
    expected = load_checkpoint(out)

    out.unlink()  # Snakemake's clean-up of the job SLURM counted as TIMEOUT
    again = train_run(cfg, run_spec(cfg, RUN), out, progress="none", attempt=2)
    assert (again["resumed_from"], again["steps"]) == (6, 0)
    assert state_differences(load_checkpoint(out), expected) == [] and os.path.samefile(part, out)

    out.unlink()  # snakemake -f: a first attempt
    capsys.readouterr()
    fresh = train_run(cfg, run_spec(cfg, RUN), out, progress="none", attempt=1)
    assert (fresh["resumed_from"], fresh["steps"]) == (0, 6)
    assert f"not continuing from {part}: it holds the completed run" in capsys.readouterr().err
    assert state_differences(load_checkpoint(out), expected) == []  # CPU: the same run again

    out.unlink()  # outside the workflow (no attempt) the partial file goes as before
    train_run(cfg, run_spec(cfg, RUN), out, progress="none")
    assert out.exists() and not part.exists()


def test_before_and_after_the_run_the_verb_exits_75_at_once():
    """Before the trainer's handler is in place (imports, config) there is nothing to save."""
    from harness.training.preemption import exit_on_stop_signal

    before = signal.getsignal(signal.SIGTERM)
    try:
        exit_on_stop_signal()
        with pytest.raises(SystemExit) as stopped:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs at the next bytecode; never reached
        assert stopped.value.code == PREEMPTED_EXIT
    finally:
        signal.signal(signal.SIGTERM, before)


# ----------------------------------------------------------------------------- torchrun, 2 ranks

def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(c) for t in os.listdir(f"/proc/{p}/task")
                    for c in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
        except OSError:
            continue
        out += kids
        todo += kids
    return out


def _worker_of_rank(agent: int, rank: int) -> int:
    """The PID of the torchrun worker of ``rank`` among the processes under ``agent``."""
    for _ in range(200):
        for pid in _descendants(agent):
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in env:
                return int(pid)
        time.sleep(0.05)
    raise AssertionError(f"no worker of rank {rank} under torchrun {agent}")


def test_torchrun_two_gloo_ranks_stop_after_the_same_step_and_resume_exactly(tmp_path):
    iterations = 100
    cfgp = write_config(tmp_path, "ddp", iterations=iterations, batch_size=4)
    torchrun = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

    def launch(out: Path) -> list[str]:  # "--": torchrun would take --run/--log for its own options
        return torchrun + ["-m", "harness", "--", *train_args(cfgp, out, "--device", "cpu")]

    out = tmp_path / "ddp.pth"
    part = partial_path(out)
    proc = subprocess.Popen(launch(out), stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=ENV,
                            start_new_session=True)
    # Only rank 1 gets the signal: rank 0 must learn it at the step boundary and stop with it.
    err = signal_at_step(proc, 10, lambda: os.kill(_worker_of_rank(proc.pid, 1), signal.SIGTERM))
    assert proc.returncode != 0, err[-3000:]
    # Rank 0, never signalled, stopped after the same step: it logged the stop, and the saved
    # state holds both ranks' RNG streams (gathered in the save, a collective). torchrun's
    # summary: the ranks exited 75, or -15 where the agent, seeing the other one gone, sent
    # SIGTERM while the interpreter was shutting down.
    codes = dict(re.findall(r"rank\s*: (\d) \(local_rank.*\n\s*exitcode\s*: (-?\d+)", err))
    assert set(codes.values()) <= {str(PREEMPTED_EXIT), "-15"} and str(PREEMPTED_EXIT) in codes.values(), err[-3000:]
    step = stopped_step(err, part, iterations, after=10)
    assert len(load_checkpoint(part)["rng"]["ranks"]) == 2 and not out.exists()

    done = subprocess.run(launch(out), capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming from {part} at step {step}/{iterations}" in done.stderr
    ref_out = tmp_path / "ddp-ref.pth"
    ref = subprocess.run(launch(ref_out), capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert_same_state(load_checkpoint(out), load_checkpoint(ref_out))


# ----------------------------------------------------------------------------- the workflow

def _trainer_of(pid: int) -> int | None:
    for child in _descendants(pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"harness" in cmd and b"train" in cmd:
            return child
    return None


@pytest.mark.slow
def test_workflow_resubmits_a_stopped_training_job_and_it_continues(tmp_path):
    """Snakemake (local executor) runs the training job; the trainer gets SIGTERM mid-run (its
    shell is exec'd away, so it is Snakemake's child); the job fails with 75, the rule's
    retries run it again, and it continues from the partial file to the uninterrupted result."""
    iterations = 150
    cfgp = write_config(tmp_path, "wf", iterations=iterations, max_resubmissions=1)
    target = tmp_path / "results" / "checkpoints" / f"{RUN}.pth"  # the config's results/ is absolute
    txt = tmp_path / "results" / "logs" / "train" / f"{RUN}.log"
    proc = subprocess.Popen([PY, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path),
                             "--cores", "1", str(target), "--configfile", str(cfgp)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                            start_new_session=True)
    deadline, trainer = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        trainer = _trainer_of(proc.pid)
        if trainer and txt.exists() and progress(txt.read_text()) >= 10:
            break
        time.sleep(0.1)
    assert trainer and proc.poll() is None, "the training job did not get to step 10"
    os.kill(trainer, signal.SIGTERM)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log[-4000:]
    assert "Trying to restart job" in log, log[-4000:]
    m = re.search(rf"resuming from \S+\.partial at step (\d+)/{iterations}", txt.read_text())
    assert m and 10 <= int(m.group(1)) < iterations, txt.read_text()[-2000:]
    rows = (tmp_path / "results" / "logs" / "train" / f"{RUN}.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(5, iterations + 1, 5))
    assert os.path.samefile(partial_path(target), target)  # the workflow keeps the final state
    assert_same_state(load_checkpoint(target), reference(tmp_path, cfgp))


# ----------------------------------------------------------------------------- the setting

def test_max_resubmissions_is_read_by_the_workflow_only(tmp_path):
    """Changing it changes no run spec and no job's config slice (so it retrains nothing)."""
    a = load_config(write_config(tmp_path, "a", max_resubmissions=0))
    b = load_config(write_config(tmp_path, "b", max_resubmissions=12))
    assert (a["train"]["max_resubmissions"], b["train"]["max_resubmissions"]) == (0, 12)
    assert load_config(ROOT / "config" / "default.yaml")["train"]["max_resubmissions"] == 5
    assert run_spec(a, RUN) == run_spec(b, RUN) and "max_resubmissions" not in run_spec(a, RUN).train
    assert job_config_text(a, "train", RUN) == job_config_text(b, "train", RUN)
    assert "max_resubmissions" not in json.loads(job_config_text(a, "train", RUN))["train"]


@pytest.mark.parametrize("value", [-1, "many", 2.5, None])
def test_bad_max_resubmissions_is_one_line_naming_the_key(tmp_path, capsys, value):
    bad = write_config(tmp_path, "bad", max_resubmissions=value)
    with pytest.raises(HarnessError, match="train/max_resubmissions"):
        load_config(bad)
    rc = main(["train", "--config", str(bad), "--run", RUN, "--out", str(tmp_path / "x.pth")])
    assert "train/max_resubmissions" in one_error_line(capsys, rc)
    assert not (tmp_path / "x.pth").exists()


@pytest.mark.parametrize("value", ["0", "-2"])
def test_bad_attempt_is_one_line(tmp_path, capsys, value):
    rc = main(["train", "--config", str(write_config(tmp_path, "ok")), "--run", RUN,
               "--out", str(tmp_path / "x.pth"), "--attempt", value])
    assert one_error_line(capsys, rc) == "error: --attempt must be at least 1"
    assert not (tmp_path / "x.pth").exists() and not partial_path(tmp_path / "x.pth").exists()


def one_error_line(capsys, rc: int) -> str:
    """The one ``error:`` line of a verb that exited 2."""
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), (rc, err)
    return err[0]
