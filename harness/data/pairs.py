"""Evaluation pairs: ``(name, lr, hr)`` of a dataset at a scale, by the LIIF/LTE protocol.

- x2, x3, x4: the MATLAB-bicubic LR image (precomputed file, else generated and
  cached, see ``harness.data.lr``); the HR image is cropped to the LR size times s.
- any other scale, on the fly (``on_the_fly_pair``): ``h_lr = floor(H / s + 1e-9)``
  (same for W), HR cropped to ``round(h_lr * s)``, LR = PIL bicubic of that crop (uint8).
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from harness.bicubic import pil_bicubic_resize
from harness.data.files import hr_files
from harness.data.images import read_image, to_tensor
from harness.data.layouts import check_data_cfg
from harness.data.lr import matlab_lr_pairs
from harness.errors import HarnessError
from harness.protocol import matlab_scale
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


def eval_pairs(data_cfg: Mapping[str, Any], dataset: str, scale: float
               ) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """Yield ``(name, lr (3,h,w), hr (3,H,W))`` float32 tensors in [0, 1], sorted by name.

    x2/x3/x4 use MATLAB-bicubic LR (precomputed files, else generated and cached);
    other scales are made on the fly with PIL bicubic (see the module docstring).
    A missing or incomplete dataset raises here, at the call; unreadable images
    raise while iterating.
    """
    cfg = check_data_cfg(data_cfg)
    if float(scale) < 1:
        raise HarnessError(f"scale must be >= 1, got {scale}")
    s_int = matlab_scale(scale)
    if s_int is not None:
        source = matlab_lr_pairs(cfg, dataset, s_int)    # checks the layout now
        return ((name, to_tensor(lr), to_tensor(hr)) for name, lr, hr, _ in source)
    files = hr_files(cfg, dataset)                       # checks the layout now

    def pairs():
        for f in files:
            lr, hr = on_the_fly_pair(read_image(f), scale)
            yield f.stem, to_tensor(lr), to_tensor(hr)
    return pairs()
