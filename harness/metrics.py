"""PSNR exactly as the SR protocol computes it (LIIF/LTE ``utils.calc_psnr``).

- The prediction is clamped to [0, 1]; it is NOT rounded to 8 bits.
- DIV2K (``y_channel=False``): RGB difference, border shave ``ceil(s) + 6``.
- Benchmarks (``y_channel=True``): the difference image is mapped to luma with
  ``harness.protocol.Y_WEIGHTS`` = (65.738, 129.057, 25.064) / 256, shave ``ceil(s)``.
- PSNR is computed per image and then averaged over images (``average``), not
  from a pooled MSE.
The shave rule for non-integer scales lives in ``harness.protocol.shave_for``.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

from harness.protocol import Y_WEIGHTS, shave_for

__all__ = ["psnr", "average"]


def psnr(pred: torch.Tensor, gt: torch.Tensor, scale: float, y_channel: bool):
    """PSNR in dB of ``pred`` against ``gt``, both in [0, 1], ``(3, H, W)`` or ``(B, 3, H, W)``.

    Returns a float for one image, a ``(B,)`` float64 tensor for a batch (one
    value per image). A perfect prediction inside the shaved region gives ``inf``.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape")
    if pred.ndim not in (3, 4) or pred.shape[-3] != 3:
        raise ValueError(f"expected (3,H,W) or (B,3,H,W) images, got {tuple(pred.shape)}")
    single = pred.ndim == 3
    if single:
        pred, gt = pred[None], gt[None]
    diff = pred.detach().to(torch.float64).clamp(0, 1) - gt.detach().to(torch.float64)
    if y_channel:
        weights = diff.new_tensor(Y_WEIGHTS).view(1, 3, 1, 1)
        diff = (diff * weights).sum(dim=1, keepdim=True)
    shave = shave_for(scale, y_channel)
    h, w = diff.shape[-2:]
    if h <= 2 * shave or w <= 2 * shave:
        raise ValueError(f"image {h}x{w} is too small for a border shave of {shave} pixels")
    valid = diff[..., shave:h - shave, shave:w - shave]
    mse = valid.pow(2).flatten(1).mean(dim=1)
    out = -10.0 * torch.log10(mse)          # mse 0 -> +inf
    return float(out[0]) if single else out


def average(psnrs: Iterable[float]) -> float:
    """Plain mean of per-image PSNRs (the protocol's dataset number)."""
    values = [float(v) for v in psnrs]
    if not values:
        raise ValueError("no PSNR values to average")
    return math.fsum(values) / len(values)
