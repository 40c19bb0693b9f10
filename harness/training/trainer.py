"""The trainer of one run: the LIIF/LTE protocol, and TADT's fine-tune with Eq. (5).

Protocol. Batches of the training dataset (s ~ U(scale_min, scale_max),
``patch_size`` LR crops, ``sample_q`` queries) in the order of
:mod:`harness.training.data_order`, Adam (default betas), ``MultiStepLR`` with
milestones counted in optimiser steps, L1 on normalised values. For scale-aware
extractors (TADT) the loss is Eq. (5), ``L1 + lam * L_beta`` with ``L_beta =
tadt.loss.intensity_loss(beta, s, alpha)`` (Eq. 6/7) and ``beta`` read from
``encoder.last_routing`` after the forward pass; the model starts from the
Baseline checkpoint of the same upsampler (``init``), only the TARC is new.

One trainer per run: the whole run holds an exclusive lock on ``<out>.lock``
(:mod:`harness.training.lock`); a second trainer of the same output stops with
one line naming the holder. With ``skip_complete`` an ``out`` that already is
this run, complete, is kept and nothing is trained (``train`` without ``--force``).

Resume. Every ``checkpoint_every`` steps the full state (weights, optimiser,
scheduler, step, torch/CUDA/numpy/python RNG states of every process, the
partial sums of the current log row, elapsed time) is written atomically to
``<out>.partial`` (:mod:`harness.training.resume`); ``out`` is written when the
last step is done, and the partial file removed after it. SIGTERM (a batch
system's time limit) saves the state at the next step boundary and stops the
run with exit status 75 (:mod:`harness.training.preemption`). A step whose loss
or weights are not finite stops the run with one line before anything is
written, so the last checkpoint on disk is the last finite state. On CPU with a
fixed seed a run killed at any moment and resumed ends bitwise identical to an
uninterrupted one (tested). On GPUs resume is exact in data order, RNG streams
and optimiser state, but cuDNN/NCCL kernels are not bitwise deterministic.

Several processes. Under ``torchrun`` the model is wrapped in
``DistributedDataParallel``; the global batch ``train.batch_size`` is split
evenly (it must be divisible by the world size) and only rank 0 writes
checkpoints and logs (how to launch it: ``python -m harness train --help``).

Mixed precision. ``train.amp`` autocasts the forward pass on CUDA to bfloat16
where supported, else float16 with a ``GradScaler``; it is ignored on CPU.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from harness.checkpoint import load_weights, save_checkpoint, weights_of
from harness.config import RunSpec, checkpoint_path
from harness.device import resolve_device
from harness.errors import HarnessError
from harness.training.data_order import StepBatches, batches, make_train_dataset
from harness.training.distributed import (barrier, dist_from_env, gather_objects, mean_over_processes,
                                          process_group)
from harness.training.lock import run_lock
from harness.training.preemption import StopRequest, settle_partial
from harness.training.resume import (completed_run, file_sha256, find_resume, init_from_checkpoint,
                                     partial_path, remove_stale_temporaries)
from harness.training.rng import rng_state, seed_everything, set_rng_state
from harness.training.setup import amp_setup, build_model, make_scheduler, nonfinite_weights
from harness.training.runlog import CsvLog, Progress, fmt

RANK_SEED_STRIDE = 7919  # per-rank seeds: seed + RANK_SEED_STRIDE * rank
EMPTY_WINDOW = {"loss": 0.0, "l1": 0.0, "l_beta": 0.0, "beta": 0.0, "n": 0}  # sums of a log row


class Trainer:
    """One run of ``spec``, trained to the checkpoint ``out``: ``Trainer(...).run()``, once.

    It owns the run's state: the model (and its DDP wrapper), optimiser,
    scheduler, gradient scaler, step, the sums of the current log row, the CSV
    log and the progress display. ``on_step(step)`` is called after every
    optimiser step (and after the checkpoint of that step, if any); tests use it
    to kill the process. ``attempt``: the workflow's submission number of this job
    (None outside it; see :mod:`harness.training.preemption`).
    """

    def __init__(self, cfg: dict, spec: RunSpec, out: str | os.PathLike,
                 init: str | os.PathLike | None = None, log: str | os.PathLike | None = None,
                 device: str | None = None, threads: int | None = None, progress: str = "auto",
                 on_step: Callable[[int], None] | None = None, skip_complete: bool = False,
                 attempt: int | None = None):
        self.cfg, self.spec, self.out, self.part, self.attempt = cfg, spec, Path(out), partial_path(out), attempt
        self.log_path, self.progress, self.on_step, self.skip_complete = log, progress, on_step, skip_complete
        self.dist = dist_from_env()
        self.train = dict(spec.train)
        self.iterations = int(self.train["iterations"])
        self.batch = int(self.train["batch_size"])
        self.seed = int(self.train["seed"])
        if self.batch % self.dist.world:
            raise HarnessError(f"train.batch_size {self.batch} (the global batch) is not divisible by "
                               f"the {self.dist.world} processes of this torchrun")
        self.threads = int(threads or self.train.get("threads") or 1)
        self.device = resolve_device(device or cfg.get("device"), self.dist.local_rank)
        self.init_path = (Path(init) if init else
                          checkpoint_path(cfg, spec.init_from) if spec.init_from else None)
        self._init_given = bool(init)
        self.init_sha: str | None = None
        self.step = self.start = 0
        self.saved_step: int | None = None  # step of the partial checkpoint on disk, if any
        self.saved_rows: list | None = None  # the CSV rows a resumed checkpoint holds
        self.stop = StopRequest()  # set by SIGTERM (harness.training.preemption)
        self.elapsed0 = 0.0
        self.window = dict(EMPTY_WINDOW)
        self.last_row: dict = {}

    # ----------------------------------------------------------------- the run

    def run(self) -> dict:
        """Train to the last step and write ``out``; returns a summary dict.

        With ``skip_complete``, an ``out`` that already holds this run, complete,
        is kept: nothing is trained and the summary says ``skipped``. SIGTERM
        raises :class:`~harness.training.preemption.Preempted` once the state is saved.
        """
        torch.set_num_threads(self.threads)
        self.show = Progress(self.progress, self.spec.name, self.iterations, 0, main=self.dist.is_main)
        lock = (run_lock(self.out, f"run {self.spec.name} ({self.out})") if self.dist.is_main
                else nullcontext())
        try:
            with lock, self.stop.installed():
                self._prepare()
                if self.skip_complete:
                    done = completed_run(self.out, self.spec, self.iterations, self.init_sha,
                                         self.show.note)
                    if done is not None:
                        return self._skipped(done)
                resume = find_resume(self.part, self.spec, self.iterations, self.init_sha, self.show.note,
                                     complete_ok=self.attempt is None or self.attempt > 1)
                with process_group(self.dist, self.device):
                    self._build(resume)
                    return self._fit()
        finally:
            self.show.close()

    def _prepare(self) -> None:
        """Remove a killed writer's debris; check the init checkpoint (and note a GPU setting)."""
        if self.dist.is_main:
            remove_stale_temporaries(self.out)
        if self.init_path is not None:
            if not self.init_path.is_file():
                hint = (f" (train run {self.spec.init_from} first)"
                        if self.spec.init_from and not self._init_given else "")
                raise HarnessError(f"init checkpoint {self.init_path} does not exist{hint}")
            self.init_sha = file_sha256(self.init_path)
        gpus = int(self.train.get("gpus") or 0)
        if gpus > 1 and not self.dist.enabled:
            self.show.note(f"note: train.gpus is {gpus} but this is one process; launch "
                           f"'torchrun --standalone --nproc_per_node {gpus} -m harness -- train ...' for DDP")

    def _skipped(self, ck: dict) -> dict:
        """The summary of a run whose ``out`` is already complete (nothing trained)."""
        elapsed = float((((ck.get("run") or {}).get("trainer")) or {}).get("elapsed_s", 0.0))
        if self.dist.is_main:  # a partial file beside a complete run (see settle_partial)
            self.part.unlink(missing_ok=True)
        self.show.note(f"{self.spec.name}: {self.out} already holds this run, complete ({ck['step']} "
                       "steps); nothing to train (--force trains it again)")
        return {"run": self.spec.name, "steps": 0, "step": int(ck["step"]), "seconds": elapsed,
                "session_seconds": 0.0, "out": str(self.out), "resumed_from": int(ck["step"]),
                "last": {}, "skipped": True}

    def _build(self, resume: dict | None) -> None:
        """Model, optimiser, scheduler, data stream and log, fresh or restored from ``resume``."""
        spec, dev, dist = self.spec, self.device, self.dist
        seed_everything(self.seed)
        self.model = build_model(spec, dev)
        if resume is None and self.init_path is not None:
            copied, new = init_from_checkpoint(self.model, self.init_path, spec)
            self.show.note(f"{spec.name}: initialised {copied} tensors from {self.init_path}"
                           + (f"; {new} new tensor(s) (TARC) start fresh" if new else ""))
        self.model.to(dev)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=float(self.train["lr"]))
        self.scheduler = make_scheduler(self.optimizer, self.train)
        self.amp_dtype, self.scaler = amp_setup(bool(self.train.get("amp")), dev, self.show.note)
        if resume is not None:
            self._restore(resume)
        elif dist.enabled:
            # Same initial weights everywhere (DDP broadcasts rank 0's anyway), then
            # per-rank streams for the model's own randomness (TARC sampling, drop-path).
            seed_everything(self.seed + RANK_SEED_STRIDE * dist.rank)

        self.scale_aware = bool(getattr(self.model.encoder, "scale_aware", False))  # Eq. 5 adds lam * L_beta
        self.net: nn.Module = self.model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(self.model, device_ids=[dev.index] if dev.type == "cuda" else None,
                           find_unused_parameters=self.scale_aware)

        dataset = make_train_dataset(self.cfg, self.train, self.seed)
        self.n_items = len(dataset)
        if self.n_items <= 0:
            raise HarnessError("the training set is empty")
        sampler = StepBatches(self.n_items, self.batch, self.seed, self.start, self.iterations, dist)
        self.stream = batches(dataset, sampler, int(self.train.get("num_workers") or 0),
                              pin_memory=dev.type == "cuda")
        self.csv = CsvLog(self.log_path if dist.is_main else None, self.start, self.saved_rows)
        self.show.resume_at(self.start)

    def _restore(self, resume: dict) -> None:
        """Weights, optimiser, scheduler, step, RNG streams and log-row sums of a partial checkpoint."""
        dist = self.dist
        load_weights(self.model, weights_of(resume, self.part), f"partial checkpoint {self.part}",
                     f"run {self.spec.name}")
        self.optimizer.load_state_dict(resume["optimizer"])
        self.scheduler.load_state_dict(resume["scheduler"])
        self.step = self.start = self.saved_step = int(resume["step"])
        trainer = (resume.get("run") or {}).get("trainer") or {}
        self.elapsed0 = float(trainer.get("elapsed_s", 0.0))
        self.saved_rows = trainer.get("log_rows")
        if self.scaler is not None and trainer.get("grad_scaler"):
            self.scaler.load_state_dict(trainer["grad_scaler"])
        states = (resume.get("rng") or {}).get("ranks") or []
        if dist.rank < len(states):
            set_rng_state(states[dist.rank], self.device)
            saved_window = states[dist.rank].get("log_window", {})
        else:  # more processes than when it was saved: a fresh, still deterministic stream
            seed_everything(self.seed + RANK_SEED_STRIDE * dist.rank + self.start)
            saved_window = {}
        self.window.update({k: type(self.window[k])(v) for k, v in saved_window.items() if k in self.window})
        self.show.note(f"{self.spec.name}: resuming from {self.part} at step {self.start}/{self.iterations}")

    def _fit(self) -> dict:
        """The training loop from ``self.start``; writes ``out`` and removes the partial file."""
        log_every = int(self.train["log_every"])
        ckpt_every = int(self.train["checkpoint_every"])
        self.net.train()
        self.t_session = self.t_window = time.perf_counter()
        for data in self.stream:
            lr_now = self.optimizer.param_groups[0]["lr"]
            losses = self._train_step(data)
            self.step += 1
            self._account(losses, lr_now)
            if self.step % log_every == 0 or self.step == self.iterations:
                self._log_row(lr_now)
            if self.step % ckpt_every == 0 and self.step < self.iterations:
                self._save(self.part, self._elapsed())
            if self.on_step is not None:
                self.on_step(self.step)
            if self.stop.agreed(self.dist, self.device):  # SIGTERM reached a process: save and stop
                if self.saved_step != self.step:
                    self._save(self.part, self._elapsed())
                raise self.stop.stopped(self.spec.name, self.step, self.iterations, self.part, self.show.note)

        elapsed = self._elapsed()
        self._save(self.out, elapsed)
        if self.dist.is_main:  # removed, or kept as out: see harness.training.preemption
            settle_partial(self.out, self.part, keep=self.stop.requested or self.attempt is not None)
        barrier(self.dist)
        return self._summary(elapsed)

    # ----------------------------------------------------------------- one step

    def _train_step(self, data: dict) -> tuple:
        """Forward, loss (Eq. 5 for scale-aware extractors), backward and the optimiser step.

        Returns the step's ``(loss, l1, l_beta, beta_mean)`` tensors (the last two
        None unless the extractor is scale-aware).
        """
        dev = self.device
        inp = data["inp"].to(dev, non_blocking=True)
        coord = data["coord"].to(dev, non_blocking=True)
        cell = data["cell"].to(dev, non_blocking=True)
        gt = data["gt"].to(dev, non_blocking=True)
        scale = data["scale"].to(dev, non_blocking=True).float().reshape(-1)
        with torch.autocast(dev.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            pred = self.net(inp, coord, cell, scale)
        l1 = F.l1_loss(pred.float(), gt)
        loss = l1
        l_beta = beta_mean = None
        if self.scale_aware:
            from tadt.loss import intensity_loss

            beta = self.model.encoder.last_routing.beta.float()
            l_beta = intensity_loss(beta, scale, list(self.spec.alpha)).mean()
            loss = l1 + float(self.spec.lam) * l_beta
            beta_mean = beta.detach().mean()
        self.optimizer.zero_grad(set_to_none=True)
        try:
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
        except RuntimeError as exc:  # a learning rate too large for float32 ("... without overflow")
            if "overflow" not in str(exc):
                raise
            raise HarnessError(f"{self.spec.name}: the update of step {self.step + 1} overflows at learning "
                               f"rate {self.optimizer.param_groups[0]['lr']:.3g} (lower train.lr or "
                               f"train.gamma); {self._kept()}") from None
        self.scheduler.step()
        return loss, l1, l_beta, beta_mean

    def _account(self, losses: tuple, lr_now: float) -> None:
        """Add the step's losses to the log-row sums (a non-finite loss stops the run)."""
        loss, l1, l_beta, beta_mean = losses
        loss_v = float(loss.detach())
        if not math.isfinite(loss_v):
            raise HarnessError(f"{self.spec.name}: loss is {loss_v} at step {self.step} "
                               f"(lower train.lr, or disable train.amp); {self._kept()}")
        win = self.window
        win["loss"] += loss_v
        win["l1"] += float(l1.detach())
        if l_beta is not None:
            win["l_beta"] += float(l_beta.detach())
            win["beta"] += float(beta_mean)
        win["n"] += 1
        self.show.step(loss_v, lr_now)

    def _log_row(self, lr_now: float) -> None:
        """One CSV row: the means over the steps since the last row, over all processes."""
        win = self.window
        sums = torch.tensor([win["loss"], win["l1"], win["l_beta"], win["beta"]], dtype=torch.float64)
        mean_over_processes(sums, self.dist)
        now = time.perf_counter()
        k = max(win["n"], 1)
        self.last_row = {
            "step": self.step, "epoch": ((self.step * self.batch) - 1) // self.n_items,
            "loss": fmt(sums[0].item() / k), "l1": fmt(sums[1].item() / k),
            "l_beta": fmt(sums[2].item() / k) if self.scale_aware else "",
            "beta_mean": fmt(sums[3].item() / k) if self.scale_aware else "",
            "lr": fmt(lr_now), "it_per_s": fmt(k / max(now - self.t_window, 1e-9), ".4g"),
            "seconds": fmt(self.elapsed0 + now - self.t_session, ".2f"),
        }
        if self.dist.is_main:
            self.csv.write(self.last_row)
            self.show.line(self.last_row)
        self.t_window = now
        self.window = dict(EMPTY_WINDOW)

    # ----------------------------------------------------------------- checkpoints

    def _elapsed(self) -> float:
        return self.elapsed0 + time.perf_counter() - self.t_session

    def _run_meta(self, elapsed: float) -> dict:
        meta = self.spec.as_dict()
        amp = str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else None
        meta["trainer"] = {"elapsed_s": elapsed, "world_size": self.dist.world, "device": self.device.type,
                           "threads": self.threads, "amp": amp, "torch": str(torch.__version__),
                           "init": ({"path": str(self.init_path), "sha256": self.init_sha}
                                    if self.init_path else None),
                           "log_rows": list(self.csv.rows)}
        if self.scaler is not None:
            meta["trainer"]["grad_scaler"] = self.scaler.state_dict()
        return meta

    def _kept(self) -> str:
        """What is left on disk when the run stops now: the last (finite) partial checkpoint."""
        if self.saved_step is None:
            return "no checkpoint was written"
        return f"the last checkpoint, {self.part} (step {self.saved_step}), is kept"

    def _check_finite_weights(self) -> None:
        """Stop the run (one line) if a weight is NaN or infinite: nothing non-finite is saved."""
        bad = nonfinite_weights(self.model)
        if not bad:
            return
        shown = ", ".join(bad[:3]) + (f", ... {len(bad) - 3} more" if len(bad) > 3 else "")
        raise HarnessError(f"{self.spec.name}: {len(bad)} weight tensor(s) are not finite after step "
                           f"{self.step} ({shown}; lower train.lr, or disable train.amp); "
                           f"{self._kept()}")

    def _save(self, path: Path, elapsed: float) -> None:
        """Write the full state at the current step to ``path`` (a collective: every rank calls it).

        Non-finite weights stop the run instead, before anything is written.
        """
        self._check_finite_weights()
        mine = rng_state(self.device)
        mine["log_window"] = dict(self.window)  # partial CSV-row sums: a resumed row averages the same steps
        rng = {"ranks": gather_objects(mine, self.dist)}
        if self.dist.is_main:
            save_checkpoint(path, self.model, self.spec.model_spec, self.step, optimizer=self.optimizer,
                            scheduler=self.scheduler, rng=rng, run=self._run_meta(elapsed))
        if path == self.part:
            self.saved_step = self.step

    def _summary(self, elapsed: float) -> dict:
        session, done = time.perf_counter() - self.t_session, self.step - self.start
        summary = {"run": self.spec.name, "steps": done, "step": self.step, "seconds": elapsed,
                   "session_seconds": session, "out": str(self.out), "resumed_from": self.start,
                   "last": self.last_row}
        if self.dist.is_main:
            self.show.note(f"{self.spec.name}: {self.step} steps done ({done} this session, "
                           f"{session:.1f} s), wrote {self.out}")
        return summary


def train_run(cfg: dict, spec: RunSpec, out: str | os.PathLike, **options) -> dict:
    """Train ``spec`` and write its final checkpoint to ``out``; returns a summary dict.

    ``options`` are :class:`Trainer`'s (``init``, ``log``, ``device``, ``threads``, ``progress``,
    ``on_step``, ``skip_complete``: keep an ``out`` that already holds this run, complete; ``attempt``).
    """
    return Trainer(cfg, spec, out, **options).run()
