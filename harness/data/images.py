"""Image files: reading any image as ``(H, W, 3)`` uint8 RGB, writing PNG atomically, and
the uint8 -> float tensor conversion used by the evaluation pairs and the training patches."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness.bicubic import to_uint8
from harness.errors import HarnessError
from harness.io import atomic_path


def as_rgb_uint8(arr) -> np.ndarray:
    """Any 8-bit-range image to ``(H, W, 3)`` uint8 RGB, deliberately:

    grey ``(H, W)`` / ``(H, W, 1)`` is stacked to three identical channels (so the
    RGB and Y metrics apply unchanged); the alpha channel of grey+alpha / RGBA is
    dropped, not composited (SR datasets store opaque images; compositing would
    invent a background colour). bool becomes 0/255; float in [0, 1] is scaled by
    255 and rounded.
    """
    a = np.asarray(arr)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1):
            raise ValueError("float images must lie in [0, 1]")
        a = to_uint8(a * 255.0)
    elif a.dtype != np.uint8:
        raise ValueError(f"unsupported image dtype {a.dtype}")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"unsupported image shape {a.shape}")
    if a.shape[2] in (2, 4):
        a = a[..., :-1]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.array(a, order="C")        # a writable copy (PIL's arrays are read-only)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8; an unreadable file is a HarnessError naming it."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = to_uint8(np.asarray(im, dtype=np.float64) / 257.0)   # 16-bit -> 8-bit
            elif im.mode == "1":
                arr = np.asarray(im.convert("L"))
            elif im.mode == "P":
                arr = np.asarray(im.convert("RGBA" if "transparency" in im.info else "RGB"))
            elif im.mode in ("L", "LA", "RGB", "RGBA"):
                arr = np.asarray(im)
            else:
                arr = np.asarray(im.convert("RGB"))
        return as_rgb_uint8(arr)
    except Exception as exc:  # PIL raises several types for broken files
        raise HarnessError(f"cannot read image {path}: {exc}") from exc


def write_png(path: str | Path, arr: np.ndarray) -> None:
    """Write a uint8 image as PNG atomically (a killed job leaves no partial file)."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(arr)).save(tmp, format="PNG")


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1] (a copy)."""
    return torch.from_numpy(np.array(arr, dtype=np.float32).transpose(2, 0, 1) / 255.0).contiguous()
