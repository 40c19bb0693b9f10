"""Evaluation pairs: ``(name, lr, hr)`` of a dataset at a scale, by the LIIF/LTE protocol.

- x2, x3, x4: the MATLAB-bicubic LR image (precomputed file, else generated and
  cached, see ``harness.data.lr``); the HR image is cropped to the LR size times s.
- any other scale, on the fly (``on_the_fly_pair``): ``h_lr = floor(H / s + 1e-9)``
  (same for W), HR cropped to ``round(h_lr * s)``, LR = PIL bicubic of that crop (uint8).

Images too small for a scale stop the evaluation, before any image is decoded, with one
line naming the image (``check_eval_sizes``): an LR side under one pixel, or an HR crop
that the protocol's border shave (``harness.protocol.shave_for``: s + 6 on DIV2K, s on
the benchmarks) leaves empty. They are not skipped: a dataset mean over fewer images
would not be the protocol's number, and a table could not show the gap.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from harness.bicubic import pil_bicubic_resize
from harness.data.files import hr_files
from harness.data.images import image_size, read_image, to_tensor
from harness.data.layouts import check_data_cfg, is_benchmark
from harness.data.lr import lr_size, matlab_lr_pairs
from harness.errors import HarnessError
from harness.protocol import matlab_scale, shave_for
from harness.scales import scale_label


def on_the_fly_pair(hr: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(lr, hr crop) for scales other than x2/x3/x4: LIIF/LTE's ``sr-implicit-downsampled``.

    ``h_lr = floor(H / s + 1e-9)``, HR cropped to ``round(h_lr * s)`` (Python's
    round, as LIIF), LR = PIL bicubic of the crop (uint8).
    """
    s = float(scale)
    h_lr = math.floor(hr.shape[0] / s + 1e-9)
    w_lr = math.floor(hr.shape[1] / s + 1e-9)
    if h_lr < 1 or w_lr < 1:
        raise HarnessError(f"image of {hr.shape[0]}x{hr.shape[1]} is too small for {scale_label(s)}")
    crop = np.ascontiguousarray(hr[:round(h_lr * s), :round(w_lr * s)])
    return pil_bicubic_resize(crop, (h_lr, w_lr)), crop


def _pair_sizes(hr_shape, scale: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(lr size, HR crop size)`` of an HR image at ``scale`` by the protocol."""
    s_int = matlab_scale(scale)
    if s_int is not None:
        lr = lr_size(hr_shape, s_int)
        return lr, (lr[0] * s_int, lr[1] * s_int)
    s = float(scale)
    lr = tuple(math.floor(n / s + 1e-9) for n in hr_shape[:2])
    return lr, (round(lr[0] * s), round(lr[1] * s))


def check_eval_sizes(files, dataset: str, scale: float) -> None:
    """Stop, with one line naming the first image too small to score at ``scale`` (see the
    module docstring); sizes come from the file headers."""
    shave = shave_for(scale, is_benchmark(dataset))
    for f in files:
        hr_shape = image_size(f)
        (h, w), (ch, cw) = _pair_sizes(hr_shape, scale)
        if min(h, w) < 1 or min(ch, cw) <= 2 * shave:
            raise HarnessError(
                f"image {f} ({hr_shape[0]}x{hr_shape[1]}) is too small to evaluate at {scale_label(scale)}: "
                f"its LR would be {h}x{w} and its {ch}x{cw} HR crop keeps no pixel after the protocol's "
                f"border shave of {shave}; remove it from the dataset (or evaluate other scales)")


def eval_pairs(data_cfg: Mapping[str, Any], dataset: str, scale: float, max_images: int = 0
               ) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """Yield ``(name, lr (3,h,w), hr (3,H,W))`` float32 tensors in [0, 1], sorted by name;
    only the first ``max_images`` images when it is > 0.

    x2/x3/x4 use MATLAB-bicubic LR (precomputed files, else generated and cached);
    other scales are made on the fly with PIL bicubic (see the module docstring).
    A missing or incomplete dataset, a precomputed LR file of the wrong size and an
    image too small for ``scale`` raise here, at the call; unreadable images raise
    while iterating.
    """
    cfg = check_data_cfg(data_cfg)
    if float(scale) < 1:
        raise HarnessError(f"scale must be >= 1, got {scale}")
    files = hr_files(cfg, dataset)                       # checks the layout now
    if max_images:
        files = files[:max_images]
    check_eval_sizes(files, dataset, scale)
    s_int = matlab_scale(scale)
    if s_int is not None:
        source = matlab_lr_pairs(cfg, dataset, s_int, files)    # checks the LR files now
        return ((name, to_tensor(lr), to_tensor(hr)) for name, lr, hr, _ in source)

    def pairs():
        for f in files:
            lr, hr = on_the_fly_pair(read_image(f), scale)
            yield f.stem, to_tensor(lr), to_tensor(hr)
    return pairs()
