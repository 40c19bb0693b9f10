"""The evaluation protocol's small rules, each in one function.

Every detail here moves a PSNR, so each one is pinned by a hand-computed case in
tests/test_protocol.py and imported from here everywhere (never re-written).

- ``normalize`` / ``denormalize``: models see ``(x - 0.5) / 0.5`` (LIIF/LTE
  ``data_norm`` sub 0.5, div 0.5 for inputs and targets).
- ``eval_cell``: the ONE cell rule for evaluation, applied to every model.
- ``pad_symmetric_past_multiple`` / ``crop_to``: LTE's mirror padding of
  window-attention models at evaluation (1..w pixels, never 0; the edge pixel
  repeated). Not the extractors' internal padding,
  ``extractors.layers.pad_reflect_to_multiple`` (0..w-1 pixels, torch's reflect).
- ``shave_for`` and ``Y_WEIGHTS``: the border shave and the luma weights of the
  PSNR (used by ``harness.metrics.psnr``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = [
    "normalize", "denormalize", "TRAIN_SCALE_MAX", "eval_cell", "window_pad_amount",
    "pad_symmetric_past_multiple", "crop_to", "DIV2K_EXTRA_SHAVE", "Y_WEIGHTS",
    "shave_for", "MATLAB_SCALES", "matlab_scale",
]


def normalize(x):
    """[0, 1] images to the models' range [-1, 1]."""
    return (x - 0.5) / 0.5


def denormalize(x):
    """Model outputs back to [0, 1] (not clamped: the metric clamps)."""
    return x * 0.5 + 0.5


# --------------------------------------------------------------------------- cell
#: Largest scale of the training distribution U(1, 4).
TRAIN_SCALE_MAX = 4.0


def eval_cell(cell, scale: float, scale_max: float = TRAIN_SCALE_MAX):
    """The cell a model is queried with at evaluation: ``cell * max(s / 4, 1)``.

    Choice (LTE's rule, applied to every model and every upsampler): above x4 the
    cell is clipped to the cell of x4 relative to the LR grid. Training samples
    s ~ U(1, 4), so no decoder ever saw a cell smaller than 2 / (4 h_lr); feeding
    the true, smaller cell of x6..x30 asks the MLP to extrapolate in its cell
    input, which LTE found to cost PSNR ("cell clip for extrapolation" in its
    test.py). LIIF's test script feeds the true cell; we do not. For s <= 4 the
    cell is unchanged. ``cell`` is a tensor (any shape) or a number.
    """
    return cell * max(float(scale) / scale_max, 1.0)


# ------------------------------------------------------------------- window padding
def window_pad_amount(n: int, window: int) -> int:
    """Pixels LTE appends to a side of ``n`` pixels: ``(n // w + 1) * w - n``, in 1..w.

    LTE's test.py (SwinIR evaluation) always pads, so a side that is already a
    multiple of the window still gets ``w`` extra pixels. We keep that rule so
    that the released SwinIR-LTE/-LIIF/-MetaSR weights are evaluated exactly as
    they were published (the padded content is seen by the attention windows
    and by the decoder's border queries).
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    return (n // window + 1) * window - n


def _mirror_index(n: int, length: int, device) -> torch.Tensor:
    """Indices of a symmetric extension ``0..n-1, n-1..0, 0..`` of length ``length``."""
    period = torch.cat([torch.arange(n, device=device), torch.arange(n - 1, -1, -1, device=device)])
    return period[torch.arange(length, device=device) % (2 * n)]


def pad_symmetric_past_multiple(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Mirror-pad the bottom and right of ``x (..., H, W)`` by ``window_pad_amount``
    (past the next multiple of ``window``: a side already a multiple gets ``window`` more).

    The mirror is LTE's ``cat([x, flip(x)])``: the edge pixel is repeated
    (numpy's 'symmetric' mode: ``a b c | c b a``), which is NOT torch's 'reflect'
    (``a b c | b a``). When the pad exceeds the image (e.g. a 10-pixel LR at x30
    under a 48-pixel window) the mirror continues periodically
    (``a b c | c b a a b c ...``) instead of failing. Returns the padded tensor and
    the original ``(H, W)`` for ``crop_to``.

    How LTE uses it: the model runs on the padded LR, is queried on the HR grid
    of the padded image (``(H + ph) * s`` rows for integer s) with the cell of
    that grid, and the prediction is cropped to the ground truth's size.
    """
    h, w = x.shape[-2], x.shape[-1]
    hp, wp = h + window_pad_amount(h, window), w + window_pad_amount(w, window)
    x = x.index_select(-2, _mirror_index(h, hp, x.device))
    x = x.index_select(-1, _mirror_index(w, wp, x.device))
    return x, (h, w)


def crop_to(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Keep the top-left ``shape = (H, W)`` of ``x (..., H', W')``: undoes the padding."""
    h, w = int(shape[0]), int(shape[1])
    if x.shape[-2] < h or x.shape[-1] < w:
        raise ValueError(f"cannot crop {tuple(x.shape[-2:])} to {(h, w)}")
    return x[..., :h, :w]


# ---------------------------------------------------------------------- PSNR rules
#: DIV2K validation: RGB PSNR, shave s + 6 pixels (LIIF/LTE ``calc_psnr``, 'div2k').
DIV2K_EXTRA_SHAVE = 6

#: Benchmarks: the luma of the DIFFERENCE image, EDSR/LIIF weights on [0, 1] data
#: (the offset 16 of Y cancels in a difference), shave s.
Y_WEIGHTS = (65.738 / 256.0, 129.057 / 256.0, 25.064 / 256.0)


def shave_for(scale: float, y_channel: bool) -> int:
    """Border pixels removed on each side before the PSNR.

    ``ceil(s)`` for benchmarks (Y), ``ceil(s) + 6`` for DIV2K (RGB). For integer s
    this is exactly LIIF/LTE's ``shave = scale`` / ``scale + 6`` (their scale is
    always an integer there). For a non-integer s (2.5, 3.5 in Figure 2; 1.5 in
    Figure 7) we round UP: one LR pixel covers s HR pixels, so ``ceil(s)`` is the
    smallest integer shave that still removes the whole border footprint of the
    outermost LR pixel, and it agrees with the integer rule at integers.
    (A 1e-9 tolerance keeps float noise such as 4.000000001 at 4.)
    """
    s = float(scale)
    if s <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    base = int(math.ceil(s - 1e-9))
    return base if y_channel else base + DIV2K_EXTRA_SHAVE


# ----------------------------------------------------------------------- LR source
#: Scales whose LR images are MATLAB-bicubic (precomputed files or our
#: ``harness.bicubic.imresize_uint8``); every other scale uses PIL on the fly.
MATLAB_SCALES = (2, 3, 4)


def matlab_scale(scale: float) -> int | None:
    """The integer 2, 3 or 4 if ``scale`` is one of them (within 1e-9), else None."""
    s = float(scale)
    r = round(s)
    return int(r) if abs(s - r) < 1e-9 and r in MATLAB_SCALES else None
