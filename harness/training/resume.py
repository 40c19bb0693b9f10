"""Where a run starts: its partial checkpoint (resume), an init checkpoint, or fresh weights.

Every ``checkpoint_every`` steps the trainer writes the full state to
``<out>.partial`` (:func:`partial_path`); ``out`` itself is written only when the
last step is done. Starting the same run again continues from the partial file
(:func:`find_resume`) unless it was written for a different run spec or, for a
run with an init checkpoint (TADT's Baseline), from another init file (compared
by SHA-256): such a file is ignored with a note, never silently continued.
Settings in ``EXECUTION_KEYS`` change how a run executes, not what it computes,
so they may differ between the sessions of one run. The same test tells
whether an existing ``out`` already is the complete run (:func:`completed_run`).
:func:`state_differences` says where two checkpoints hold different training
states (the check that a resumed run equals an uninterrupted one).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from harness.checkpoint import load_baseline_weights, load_checkpoint, load_weights, weights_of
from harness.config import RunSpec
from harness.errors import HarnessError

EXECUTION_KEYS = {"checkpoint_every", "log_every", "threads", "num_workers", "gpus"}
STATE_KEYS = ("step", "state_dict", "optimizer", "scheduler", "rng")  # what a resumed run must reproduce


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
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _comparable(run: dict | None) -> dict:
    if not run:
        return {}
    run = {k: v for k, v in run.items() if k != "trainer"}
    run["train"] = {k: v for k, v in (run.get("train") or {}).items() if k not in EXECUTION_KEYS}
    return run


def same_run(saved: dict | None, spec: RunSpec) -> bool:
    """Whether a checkpoint's ``run`` record was written for ``spec`` (execution settings aside)."""
    norm = lambda d: json.loads(json.dumps(_comparable(d), sort_keys=True, default=str))  # noqa: E731
    return norm(saved) == norm(spec.as_dict())


def not_written_by(ck: dict, spec: RunSpec, iterations: int, init_sha: str | None) -> str | None:
    """Why checkpoint ``ck`` is not a state of run ``spec`` (None: it is one).

    It must record the same run spec (execution settings aside), a step in
    ``1..iterations`` and, for a run with an init checkpoint, the same init file.
    """
    saved = ck.get("run") or {}
    step = ck.get("step")
    if not (same_run(saved, spec) and isinstance(step, int) and 0 < step <= iterations):
        return "it was written for a different run spec"
    if ((saved.get("trainer") or {}).get("init") or {}).get("sha256") != init_sha:
        return "it started from another init checkpoint"
    return None


def _state_of_run(path: Path, spec: RunSpec, iterations: int, init_sha: str | None,
                  note: Callable[[str], None], complete: bool) -> dict | None:
    """The checkpoint at ``path`` if it is a state of run ``spec`` (``complete``: its last one),
    else None, with a note when a file is there."""
    if not path.is_file():
        return None
    verb, then = ("replacing", "training the run again") if complete else ("ignoring", "starting afresh")
    try:
        ck = load_checkpoint(path)
    except HarnessError as exc:
        note(f"note: {verb} unreadable {path} ({exc}); {then}")
        return None
    reason = not_written_by(ck, spec, iterations, init_sha)
    if reason is None and complete and ck.get("step") != iterations:
        reason = f"it holds step {ck.get('step')} of {iterations}"
    if reason:
        note(f"note: {verb} {path}: {reason}; {then}")
        return None
    return ck


def find_resume(part: Path, spec: RunSpec, iterations: int, init_sha: str | None,
                note: Callable[[str], None], complete_ok: bool = True) -> dict | None:
    """The partial checkpoint ``part`` if this run may continue from it, else None (with a note).

    Without ``complete_ok`` a partial file holding the last step -- a completed run's
    state, kept by a workflow job (:mod:`harness.training.preemption`) -- is not taken:
    a first submission trains afresh (a forced rerun), and its first checkpoint replaces it.
    """
    ck = _state_of_run(part, spec, iterations, init_sha, note, complete=False)
    if ck is not None and not complete_ok and ck.get("step") == iterations:
        note(f"note: not continuing from {part}: it holds the completed run, and this first "
             "submission of the job trains it afresh")
        return None
    return ck


def completed_run(out: Path, spec: RunSpec, iterations: int, init_sha: str | None,
                  note: Callable[[str], None]) -> dict | None:
    """The final checkpoint ``out`` if it holds this very run, complete; else None (with a note
    when there is a file that is something else: it is trained again and replaced)."""
    return _state_of_run(out, spec, iterations, init_sha, note, complete=True)


def init_from_checkpoint(model: nn.Module, path: Path, spec: RunSpec) -> tuple[int, int]:
    """Copy the weights of checkpoint ``path`` into ``model``; returns (copied, new) tensor counts.

    A Baseline checkpoint (or a release, which names no extractor) loads into a
    TADT run through :func:`harness.checkpoint.load_baseline_weights`: the TARC
    keeps its fresh initialisation. Otherwise the checkpoint must fit exactly.
    """
    ckpt = load_checkpoint(path)
    sd = weights_of(ckpt, path)
    saved = ckpt.get("model") if isinstance(ckpt.get("model"), dict) else {}
    src_ext, src_up = saved.get("extractor"), saved.get("upsampler")
    if src_up is not None and src_up != spec.upsampler:
        raise HarnessError(f"init checkpoint {path} is a {src_ext}-{src_up} model; run {spec.name} "
                           f"needs upsampler {spec.upsampler}")
    load = load_baseline_weights if src_ext in ("baseline", None) else load_weights
    return load(model, sd, f"init checkpoint {path}", f"run {spec.name}")


def _differences(a, b, where: str, out: list[str]) -> None:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
        if not same:
            out.append(where)
    elif isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                out.append(f"{where}/{key} (only in {'the first' if key in a else 'the second'})")
            else:
                _differences(a[key], b[key], f"{where}/{key}", out)
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _differences(x, y, f"{where}/{i}", out)
    elif type(a) is not type(b) or a != b:
        out.append(where)


def state_differences(a: dict, b: dict) -> list[str]:
    """Where checkpoints ``a`` and ``b`` hold different training states; [] when none.

    Compares exactly (every tensor with ``torch.equal``, dtype and shape too) the
    step, weights, optimiser and scheduler states and the RNG streams (with the
    log-row sums) of every process: ``STATE_KEYS``, not the provenance in ``run``
    (times, host settings). Paths read like ``state_dict/encoder.head.0.weight``.
    """
    out: list[str] = []
    for key in STATE_KEYS:
        _differences(a.get(key), b.get(key), key, out)
    return out
