"""Training of one run: the LIIF/LTE protocol, and TADT's fine-tune with Eq. (5).

``train_run(cfg, spec, out, ...)`` trains the model of a :class:`harness.config.RunSpec`
and writes its checkpoint to ``out``. What it guarantees:

Protocol. Batches of ``harness.data.TrainPatches`` items (s ~ U(scale_min,
scale_max), ``patch_size`` LR crops, ``sample_q`` queries), Adam (default betas),
``MultiStepLR`` with milestones counted in optimiser steps, L1 on normalised
values. For ``tadt`` runs the loss is Eq. (5), ``L1 + lam * L_beta`` with
``L_beta = tadt.loss.intensity_loss(beta, s, alpha)`` (Eq. 6/7) and ``beta``
read from ``encoder.last_routing`` after the forward pass; the model starts from
the Baseline checkpoint of the same upsampler (``init``), only the TARC is new.

Data order. Every run sees one fixed stream of sample indices: the
concatenation of per-epoch permutations of the training set, permutation ``e``
drawn from ``(seed, e)`` alone. Step ``k`` takes stream positions
``[k B, (k+1) B)`` of the *global* batch ``B`` (``train.batch_size``); the item
content is deterministic per ``(seed, epoch, index)`` (``TrainPatches.set_epoch``).
So resuming at step ``k`` needs no replay: the batch is computed from ``k``.

Resume. Every ``checkpoint_every`` steps the full state (weights, optimiser,
scheduler, step, torch/CUDA/numpy/python RNG states of every process, elapsed
time) is written atomically to ``<out>.partial``; ``out`` itself is written only
when the last step is done, and the partial file is removed after it. Starting
the same run again continues from ``<out>.partial``. On CPU with a fixed seed a
run killed at any moment and resumed ends bitwise identical to an uninterrupted
one (tested). A partial file written for a different run spec, or (TADT) from
another Baseline checkpoint (compared by SHA-256), is ignored with a note, never
silently continued. On GPUs resume is exact in data order, RNG streams and
optimiser state, but cuDNN/NCCL kernels are not bitwise deterministic.

Multiple processes. Under ``torchrun`` (``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` in
the environment) the model is wrapped in ``DistributedDataParallel`` (NCCL on
GPUs, gloo on CPU). The global batch ``B`` is split: rank ``r`` takes positions
``r, r + W, ...`` of each global batch (``B`` must be divisible by the world size
``W``), so the data seen per step does not depend on ``W``. Only rank 0 writes
checkpoints and logs. Launch it as ``torchrun --standalone --nproc_per_node N -m
harness -- train ...``: without the ``--`` torchrun's own parser takes ``--run``
and ``--log`` for abbreviations of its ``--run-path``/``--log-dir``.

Progress. A tqdm bar (loss, lr, it/s) on stderr when it is a terminal, else a
plain line every ``log_every`` steps; and the CSV log (``LOG_FIELDS``: means over
the ``log_every`` steps of each row, ``seconds`` of training so far), appended
row by row; on resume rows past the resumed step are dropped.

Mixed precision. ``train.amp`` autocasts the forward pass on CUDA to bfloat16
where supported, else float16 with a ``GradScaler``; it is ignored on CPU.
"""
from __future__ import annotations

import bisect
import csv
import functools
import inspect
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import HarnessError
from harness.config import RunSpec, checkpoint_path

LOG_FIELDS = ["step", "epoch", "loss", "l1", "l_beta", "beta_mean", "lr", "it_per_s", "seconds"]

# Train settings that change how a run is executed but not what it computes:
# a partial checkpoint written under other values of these is still resumed.
EXECUTION_KEYS = {"checkpoint_every", "log_every", "threads", "num_workers", "gpus"}


# --------------------------------------------------------------------------- processes

@dataclass(frozen=True)
class DistInfo:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def dist_from_env(env: dict | None = None) -> DistInfo:
    """The process layout torchrun announces in ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1") or 1)
    rank = int(env.get("RANK", "0") or 0)
    local = int(env.get("LOCAL_RANK", str(rank)) or 0)
    return DistInfo(world, rank, local)


def resolve_device(name: str | None, dist: DistInfo) -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise HarnessError("--device cuda was asked for, but torch sees no CUDA device "
                               "(use --device cpu or auto)")
        return torch.device("cuda", dist.local_rank % torch.cuda.device_count())
    if name != "cpu":
        raise HarnessError(f"unknown device {name!r} (choose cpu, cuda or auto)")
    return torch.device("cpu")


# --------------------------------------------------------------------------- data order

@functools.lru_cache(maxsize=8)
def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the ``n`` training items in ``epoch``: a function of ``(seed, epoch)`` only."""
    return np.random.default_rng([seed, epoch, 0x7AD7]).permutation(n)


def global_batch(n: int, batch: int, seed: int, step: int) -> list[tuple[int, int]]:
    """``(epoch, index)`` of the items of global batch ``step`` (0-based) in the data stream."""
    out = []
    for pos in range(step * batch, (step + 1) * batch):
        epoch, i = divmod(pos, n)
        out.append((epoch, int(epoch_permutation(n, seed, epoch)[i])))
    return out


def local_batch(n: int, batch: int, seed: int, step: int, dist: DistInfo) -> list[tuple[int, int]]:
    """This process's share of global batch ``step``: positions ``rank, rank + W, ...``."""
    return global_batch(n, batch, seed, step)[dist.rank::dist.world]


class StepBatches:
    """Batch sampler over steps ``[start, stop)`` yielding this process's ``(epoch, index)`` lists."""

    def __init__(self, n: int, batch: int, seed: int, start: int, stop: int, dist: DistInfo):
        self.n, self.batch, self.seed, self.start, self.stop, self.dist = n, batch, seed, start, stop, dist

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield local_batch(self.n, self.batch, self.seed, step, self.dist)


class EpochIndexed(torch.utils.data.Dataset):
    """``dataset[(epoch, i)]`` = item ``i`` of ``dataset`` in ``epoch`` (works in worker processes)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


def make_train_sampler(cfg: dict, train: dict, seed: int):
    """Build ``harness.data.TrainPatches`` for ``train`` (the resolved train settings)."""
    from harness.data import TrainPatches

    params = inspect.signature(TrainPatches).parameters
    if "train_cfg" in params:
        return TrainPatches(cfg["data"], train, seed=seed)
    kwargs = {"patch": train["patch_size"], "scale_min": train["scale_min"],
              "scale_max": train["scale_max"], "sample_q": train["sample_q"],
              "repeat": train["repeat"], "augment": True, "seed": seed}
    return TrainPatches(cfg["data"], **{k: v for k, v in kwargs.items() if k in params})


def batches(dataset, sampler: StepBatches, num_workers: int, pin_memory: bool = False):
    """Collated batches in step order; no global RNG is consumed (so resume stays exact)."""
    from torch.utils.data import DataLoader, default_collate

    wrapped = EpochIndexed(dataset)
    if num_workers <= 0:
        for idx in sampler:
            yield default_collate([wrapped[i] for i in idx])
        return
    loader = DataLoader(wrapped, batch_sampler=sampler, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(0), persistent_workers=False,
                        pin_memory=pin_memory)
    yield from loader


# --------------------------------------------------------------------------- RNG state

def rng_state(device: torch.device) -> dict:
    """This process's RNG states, in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    ns = state["numpy"]
    np.random.set_state((ns["name"], ns["keys"].numpy().astype(np.uint32), ns["pos"],
                         ns["has_gauss"], ns["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- checkpoints

def partial_path(out: str | os.PathLike) -> Path:
    """Where the resumable checkpoint of a run whose final checkpoint is ``out`` lives."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def remove_stale_temporaries(out: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed writer of ``out`` or its partial file left behind.

    ``harness.io.atomic_path`` writes ``.<name>.<random>.tmp`` beside the target;
    a SIGKILL mid-write leaves it (never the target itself). Returns what was removed.
    """
    out = Path(out)
    removed = []
    if out.parent.is_dir():
        for name in (out.name, partial_path(out).name):
            for tmp in out.parent.glob(f".{name}.*.tmp"):
                if "." not in tmp.name[len(name) + 2:-len(".tmp")]:  # mkstemp's random part
                    tmp.unlink(missing_ok=True)
                    removed.append(tmp)
    return removed


def file_sha256(path: str | os.PathLike) -> str:
    import hashlib

    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _comparable(run: dict | None) -> dict:
    if not run:
        return {}
    run = {k: v for k, v in run.items() if k != "trainer"}
    run["train"] = {k: v for k, v in (run.get("train") or {}).items() if k not in EXECUTION_KEYS}
    return run


def _same_run(saved: dict | None, spec: RunSpec) -> bool:
    import json

    norm = lambda d: json.loads(json.dumps(_comparable(d), sort_keys=True, default=str))  # noqa: E731
    return norm(saved) == norm(spec.as_dict())


def _load_checkpoint(path: Path) -> dict:
    from harness.checkpoint import load_checkpoint

    try:
        return load_checkpoint(path)
    except HarnessError:
        raise
    except Exception as exc:  # unreadable, truncated, not ours
        raise HarnessError(f"cannot read checkpoint {path}: {exc}") from None


def _state_dict_of(ckpt: dict) -> dict:
    if "state_dict" in ckpt:
        return ckpt["state_dict"]
    model = ckpt.get("model")
    if isinstance(model, dict) and "sd" in model:  # a released LIIF/LTE file
        return model["sd"]
    raise HarnessError("checkpoint holds no model weights")


def init_from_checkpoint(model: nn.Module, path: Path, spec: RunSpec) -> tuple[int, int]:
    """Copy the weights of checkpoint ``path`` into ``model``.

    For a ``tadt`` run started from a ``baseline`` checkpoint every tensor of the
    checkpoint must find its place (same name and shape); the tensors the
    checkpoint lacks (the TARC) keep their fresh initialisation. Otherwise the
    checkpoint must match the model exactly. Returns (copied, new) tensor counts.
    """
    ckpt = _load_checkpoint(path)
    sd = _state_dict_of(ckpt)
    saved = ckpt.get("model") if isinstance(ckpt.get("model"), dict) else {}
    src_ext, src_up = saved.get("extractor"), saved.get("upsampler")
    if src_up is not None and src_up != spec.upsampler:
        raise HarnessError(f"init checkpoint {path} is a {src_ext}-{src_up} model; run {spec.name} "
                           f"needs upsampler {spec.upsampler}")
    allow_new = spec.extractor == "tadt" and src_ext in ("baseline", None)
    own = model.state_dict()
    unexpected = [k for k in sd if k not in own]
    if unexpected:
        raise HarnessError(f"init checkpoint {path} does not fit run {spec.name}: "
                           f"{len(unexpected)} unknown tensor(s), e.g. {unexpected[0]!r}")
    bad = [k for k in sd if tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise HarnessError(f"init checkpoint {path} does not fit run {spec.name}: {k!r} has shape "
                           f"{tuple(sd[k].shape)}, the model {tuple(own[k].shape)} "
                           "(were both trained with the same config widths?)")
    missing = [k for k in own if k not in sd]
    if allow_new:  # Baseline -> TADT: only the routing controller may be new
        missing_other = [k for k in missing if not k.startswith("encoder.tarc.")]
        if missing_other:
            raise HarnessError(f"init checkpoint {path} lacks {len(missing_other)} backbone tensor(s) "
                               f"of run {spec.name}, e.g. {missing_other[0]!r}")
    elif missing:
        raise HarnessError(f"init checkpoint {path} lacks {len(missing)} tensor(s) of run "
                           f"{spec.name}, e.g. {missing[0]!r}")
    model.load_state_dict(sd, strict=False)
    return len(sd), len(missing)


# --------------------------------------------------------------------------- logging

class CsvLog:
    """The per-run CSV (``LOG_FIELDS``), appended row by row; rows past ``resume_step`` dropped."""

    def __init__(self, path: Path | None, resume_step: int):
        self.path = Path(path) if path else None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if resume_step > 0 and self.path.is_file():
            with self.path.open(newline="") as fh:
                for row in csv.DictReader(fh):
                    try:
                        if int(row["step"]) <= resume_step:
                            rows.append(row)
                    except (KeyError, TypeError, ValueError):
                        continue
        from harness.io import atomic_path

        with atomic_path(self.path) as tmp:
            with tmp.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, LOG_FIELDS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o666 & ~umask)  # mkstemp makes 0600; a log is as readable as any file

    def write(self, row: dict) -> None:
        if self.path is None:
            return
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, LOG_FIELDS, extrasaction="ignore").writerow(row)


def _fmt(x: float | None, spec: str = ".6g") -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


class Progress:
    """tqdm bar on stderr (``bar``), plain lines every ``log_every`` steps (``plain``), or nothing."""

    def __init__(self, mode: str, run: str, total: int, start: int, main: bool = True):
        self.main = main
        if not main:
            mode = "none"
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "plain"
        self.mode, self.run, self.total = mode, run, total
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=run, file=sys.stderr, dynamic_ncols=True,
                            unit="it", smoothing=0.1)

    def step(self, loss: float, lr: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            self.bar.update(1)

    def line(self, row: dict) -> None:
        if self.mode == "plain":
            print(f"train {self.run} step {row['step']}/{self.total} epoch {row['epoch']} "
                  f"loss {float(row['loss']):.5f} lr {float(row['lr']):.3g} "
                  f"{float(row['it_per_s']):.2f} it/s {float(row['seconds']):.0f} s",
                  file=sys.stderr, flush=True)

    def note(self, msg: str) -> None:
        """Notes and warnings: always shown (rank 0 only), whatever the progress mode."""
        if not self.main:
            return
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------- training

def build_model(spec: RunSpec) -> nn.Module:
    from upsamplers import create_model

    try:
        return create_model(spec.upsampler, spec.extractor, extractor_args=spec.extractor_args,
                            upsampler_args=spec.upsampler_args)
    except TypeError as exc:  # a width key the constructor does not know
        raise HarnessError(f"cannot build run {spec.name}: {exc}") from None


def make_scheduler(optimizer, train: dict):
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(train["milestones"]),
                                                gamma=float(train["gamma"]))


def expected_lr(train: dict, step: int) -> float:
    """Learning rate applied at 0-based ``step`` (for tests and reports)."""
    return float(train["lr"]) * float(train["gamma"]) ** bisect.bisect_right(sorted(train["milestones"]), step)


def _amp_setup(enabled: bool, device: torch.device, note: Callable[[str], None]):
    if not enabled:
        return None, None
    if device.type != "cuda":
        note("note: train.amp is ignored on CPU (mixed precision is a GPU option)")
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def train_run(cfg: dict, spec: RunSpec, out: str | os.PathLike, init: str | os.PathLike | None = None,
              log: str | os.PathLike | None = None, device: str | None = None,
              threads: int | None = None, progress: str = "auto",
              on_step: Callable[[int], None] | None = None) -> dict:
    """Train ``spec`` and write its final checkpoint to ``out``; returns a summary dict.

    ``on_step(step)`` is called after every optimiser step (and after the
    checkpoint of that step, if any); tests use it to kill the process.
    """
    out = Path(out)
    dist = dist_from_env()
    train = dict(spec.train)
    iterations = int(train["iterations"])
    batch = int(train["batch_size"])
    seed = int(train["seed"])
    if batch % dist.world:
        raise HarnessError(f"train.batch_size {batch} (the global batch) is not divisible by the "
                           f"{dist.world} processes of this torchrun")
    n_threads = int(threads or train.get("threads") or 1)
    torch.set_num_threads(n_threads)
    dev = resolve_device(device or cfg.get("device"), dist)
    show = Progress(progress, spec.name, iterations, 0, main=dist.is_main)
    note = show.note

    # Where do we start? A partial checkpoint of the same run spec wins over init.
    part = partial_path(out)
    if dist.is_main:
        remove_stale_temporaries(out)
    init_path = Path(init) if init else (checkpoint_path(cfg, spec.init_from) if spec.init_from else None)
    init_sha = None
    if init_path is not None:
        if not init_path.is_file():
            hint = f" (train run {spec.init_from} first)" if spec.init_from and not init else ""
            raise HarnessError(f"init checkpoint {init_path} does not exist{hint}")
        init_sha = file_sha256(init_path)
    resume = None
    if part.is_file():
        try:
            ck = _load_checkpoint(part)
        except HarnessError as exc:
            note(f"note: ignoring unreadable partial checkpoint {part} ({exc}); starting afresh")
            ck = None
        if ck is not None:
            saved = ck.get("run") or {}
            if not (_same_run(saved, spec) and 0 < int(ck.get("step", 0)) <= iterations):
                note(f"note: ignoring {part}: it was written for a different run spec; starting afresh")
            elif ((saved.get("trainer") or {}).get("init") or {}).get("sha256") != init_sha:
                note(f"note: ignoring {part}: it started from another init checkpoint; starting afresh")
            else:
                resume = ck
    if int(train.get("gpus") or 0) > 1 and not dist.enabled:
        note(f"note: train.gpus is {train['gpus']} but this is one process; launch "
             f"'torchrun --standalone --nproc_per_node {train['gpus']} -m harness -- train ...' for DDP")

    pg = None
    if dist.enabled:
        import torch.distributed as tdist

        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        if not tdist.is_initialized():
            tdist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        pg = tdist

    try:
        return _train(cfg, spec, out, part, resume, init_path, init_sha, log, dev, dist, pg, show,
                      on_step, train, iterations, batch, seed, n_threads)
    finally:
        show.close()
        if pg is not None and pg.is_initialized():
            pg.destroy_process_group()


def _train(cfg, spec, out, part, resume, init_path, init_sha, log, dev, dist, pg, show, on_step,
           train, iterations, batch, seed, n_threads) -> dict:
    from harness.checkpoint import save_checkpoint

    seed_everything(seed)
    model = build_model(spec)
    start = 0
    if resume is None and init_path is not None:
        copied, new = init_from_checkpoint(model, init_path, spec)
        show.note(f"{spec.name}: initialised {copied} tensors from {init_path}"
                  + (f"; {new} new tensor(s) (TARC) start fresh" if new else ""))
    model.to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(train["lr"]))
    scheduler = make_scheduler(optimizer, train)
    amp_dtype, scaler = _amp_setup(bool(train.get("amp")), dev, show.note)
    elapsed0 = 0.0
    if resume is not None:
        model.load_state_dict(_state_dict_of(resume))
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        start = int(resume["step"])
        trainer = (resume.get("run") or {}).get("trainer") or {}
        elapsed0 = float(trainer.get("elapsed_s", 0.0))
        if scaler is not None and trainer.get("grad_scaler"):
            scaler.load_state_dict(trainer["grad_scaler"])
        states = (resume.get("rng") or {}).get("ranks") or []
        if dist.rank < len(states):
            set_rng_state(states[dist.rank], dev)
        else:  # more processes than when it was saved: a fresh, still deterministic stream
            seed_everything(seed + 7919 * dist.rank + start)
        show.note(f"{spec.name}: resuming from {part} at step {start}/{iterations}")
    elif dist.enabled:
        # Same initial weights everywhere (DDP broadcasts rank 0's anyway), then
        # per-rank streams for the model's own randomness (TARC sampling, drop-path).
        seed_everything(seed + 7919 * dist.rank)

    net: nn.Module = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                  find_unused_parameters=bool(getattr(model.encoder, "scale_aware", False)))

    dataset = make_train_sampler(cfg, train, seed)
    n = len(dataset)
    if n <= 0:
        raise HarnessError("the training set is empty")
    sampler = StepBatches(n, batch, seed, start, iterations, dist)
    stream = batches(dataset, sampler, int(train.get("num_workers") or 0), pin_memory=dev.type == "cuda")

    scale_aware = bool(getattr(model.encoder, "scale_aware", False))  # TADT: Eq. 5 adds lam * L_beta
    lam = float(spec.lam)
    alpha = list(spec.alpha)
    if scale_aware:
        from tadt.loss import intensity_loss
    csv_log = CsvLog(log if dist.is_main else None, start)
    if show.bar is not None:
        show.bar.n = start
        show.bar.last_print_n = start
        show.bar.refresh()
    log_every = int(train["log_every"])
    ckpt_every = int(train["checkpoint_every"])

    def run_meta(elapsed: float) -> dict:
        meta = spec.as_dict()
        meta["trainer"] = {"elapsed_s": elapsed, "world_size": dist.world, "device": dev.type,
                           "threads": n_threads, "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else None,
                           "torch": str(torch.__version__),
                           "init": {"path": str(init_path), "sha256": init_sha} if init_path else None}
        if scaler is not None:
            meta["trainer"]["grad_scaler"] = scaler.state_dict()
        return meta

    def gather_rng() -> dict:
        mine = rng_state(dev)
        mine["log_window"] = dict(win)  # partial CSV-row sums: a resumed row averages the same steps
        if not dist.enabled:
            return {"ranks": [mine]}
        all_states = [None] * dist.world
        pg.all_gather_object(all_states, mine)
        return {"ranks": all_states}

    def save(path: Path, step: int, elapsed: float) -> None:
        rng = gather_rng()  # collective: every rank takes part
        if dist.is_main:
            save_checkpoint(path, model, spec.model_spec, step, optimizer=optimizer, scheduler=scheduler,
                            rng=rng, run=run_meta(elapsed))

    net.train()
    t_session = time.perf_counter()
    t_window = t_session
    win = {"loss": 0.0, "l1": 0.0, "l_beta": 0.0, "beta": 0.0, "n": 0}
    if resume is not None:
        states = (resume.get("rng") or {}).get("ranks") or []
        saved_win = states[dist.rank].get("log_window", {}) if dist.rank < len(states) else {}
        win.update({k: type(win[k])(v) for k, v in saved_win.items() if k in win})
    step = start
    last = {}
    for data in stream:
        lr_now = optimizer.param_groups[0]["lr"]
        inp = data["inp"].to(dev, non_blocking=True)
        coord = data["coord"].to(dev, non_blocking=True)
        cell = data["cell"].to(dev, non_blocking=True)
        gt = data["gt"].to(dev, non_blocking=True)
        scale = data["scale"].to(dev, non_blocking=True).float().reshape(-1)
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            pred = net(inp, coord, cell, scale)
        l1 = F.l1_loss(pred.float(), gt)
        loss = l1
        l_beta = beta_mean = None
        if scale_aware:
            routing = model.encoder.last_routing
            beta = routing.beta.float()
            l_beta = intensity_loss(beta, scale, alpha).mean()
            loss = l1 + lam * l_beta
            beta_mean = beta.detach().mean()
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        step += 1

        loss_v = float(loss.detach())
        if not math.isfinite(loss_v):
            raise HarnessError(f"{spec.name}: loss is {loss_v} at step {step} "
                               "(lower train.lr, or disable train.amp)")
        win["loss"] += loss_v
        win["l1"] += float(l1.detach())
        if l_beta is not None:
            win["l_beta"] += float(l_beta.detach())
            win["beta"] += float(beta_mean)
        win["n"] += 1
        show.step(loss_v, lr_now)

        if step % log_every == 0 or step == iterations:
            sums = torch.tensor([win["loss"], win["l1"], win["l_beta"], win["beta"]], dtype=torch.float64)
            if dist.enabled:
                pg.all_reduce(sums)  # gloo/NCCL: the mean over all processes
                sums /= dist.world
            now = time.perf_counter()
            k = max(win["n"], 1)
            last = {
                "step": step, "epoch": ((step * batch) - 1) // n,
                "loss": _fmt(sums[0].item() / k), "l1": _fmt(sums[1].item() / k),
                "l_beta": _fmt(sums[2].item() / k) if scale_aware else "",
                "beta_mean": _fmt(sums[3].item() / k) if scale_aware else "",
                "lr": _fmt(lr_now), "it_per_s": _fmt(k / max(now - t_window, 1e-9), ".4g"),
                "seconds": _fmt(elapsed0 + now - t_session, ".2f"),
            }
            if dist.is_main:
                csv_log.write(last)
                show.line(last)
            t_window = now
            win = {"loss": 0.0, "l1": 0.0, "l_beta": 0.0, "beta": 0.0, "n": 0}

        if step % ckpt_every == 0 and step < iterations:
            save(part, step, elapsed0 + time.perf_counter() - t_session)
        if on_step is not None:
            on_step(step)

    elapsed = elapsed0 + time.perf_counter() - t_session
    save(out, step, elapsed)
    if dist.is_main and part.exists():
        part.unlink()
    if dist.enabled:
        pg.barrier()
    done = step - start
    summary = {"run": spec.name, "steps": done, "step": step, "seconds": elapsed,
               "session_seconds": time.perf_counter() - t_session, "out": str(out),
               "resumed_from": start, "last": last}
    if dist.is_main:
        show.note(f"{spec.name}: {step} steps done ({done} this session, "
                  f"{summary['session_seconds']:.1f} s), wrote {out}")
    return summary
