"""Which torch device a command runs on: one rule for training, evaluation, FLOPs and upscaling."""
from __future__ import annotations

import torch

from harness.errors import HarnessError


def resolve_device(name: str | None, local_rank: int = 0) -> torch.device:
    """The device for ``name`` (``auto``/None: CUDA when torch sees one, else the CPU).

    ``cuda`` picks GPU ``local_rank`` modulo the GPUs visible (one per torchrun
    process); asking for ``cuda`` without one, or an unknown name, is a
    :class:`HarnessError`.
    """
    name = (name or "auto").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise HarnessError("--device cuda was asked for, but torch sees no CUDA device "
                               "(use --device cpu or auto)")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name != "cpu":
        raise HarnessError(f"unknown device {name!r} (choose cpu, cuda or auto)")
    return torch.device("cpu")
