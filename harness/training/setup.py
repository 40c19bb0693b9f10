"""What a run is made of: its model (and the check that its weights are finite), learning-rate
schedule and mixed-precision setting."""
from __future__ import annotations

import bisect
from typing import Callable

import torch
from torch import nn

from harness.config import RunSpec
from harness.modelbuild import build_model_bounded, check_spec

TRAIN_COPIES = 4  # weights, gradients and Adam's two moments


def build_model(spec: RunSpec, device: str | torch.device = "cpu") -> nn.Module:
    """The fresh model of run ``spec``, on the CPU.

    A width it does not take, or a model whose weights, gradients and Adam
    moments would not fit in the memory of the CPU and ``device``, is a
    :class:`HarnessError` raised before anything is allocated
    (:func:`harness.modelbuild.build_bounded`).
    """
    what = f"run {spec.name}"
    return build_model_bounded(check_spec(spec.model_spec, what), what, copies=TRAIN_COPIES,
                               devices=("cpu", device))


def make_scheduler(optimizer, train: dict):
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(train["milestones"]),
                                                gamma=float(train["gamma"]))


def expected_lr(train: dict, step: int) -> float:
    """Learning rate applied at 0-based ``step`` (for tests and reports)."""
    return float(train["lr"]) * float(train["gamma"]) ** bisect.bisect_right(sorted(train["milestones"]), step)


def nonfinite_weights(model: nn.Module) -> list[str]:
    """Names of the parameters holding a NaN or an infinity (one device sync when all are finite)."""
    if bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()):
        return []
    return [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]


def amp_setup(enabled: bool, device: torch.device, note: Callable[[str], None]):
    """(autocast dtype, GradScaler) of ``train.amp`` on ``device``: (None, None) when off or on CPU."""
    if not enabled:
        return None, None
    if device.type != "cuda":
        note("note: train.amp is ignored on CPU (mixed precision is a GPU option)")
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")
