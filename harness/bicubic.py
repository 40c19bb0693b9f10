"""The two bicubic resamplers of the SR protocol, written once.

``imresize`` is MATLAB's ``imresize(img, scale, 'bicubic')`` (Image Processing
Toolbox): the precomputed x2/x3/x4 LR images of DIV2K and of the benchmark sets
were made with it, so LR images we generate for those scales must match it.

- Keys' cubic kernel with a = -0.5.
- Antialiasing when shrinking: the kernel is stretched by ``1/scale`` (and
  scaled by ``scale``), i.e. its support grows from 4 to ``4/scale`` pixels.
- Output pixel ``x`` (1-based) samples input position
  ``u = x/scale + 0.5 (1 - 1/scale)``; weights are normalised to sum 1.
- Borders: symmetric padding, the edge pixel repeated (``[..., 2, 1, 1, 2, ...]``),
  extended periodically with period ``2n`` as MATLAB's ``contributions`` does.
- Output size ``ceil(scale * n)``; when a scale is given it is used as is for the
  sampling positions (x4/3 on 8 pixels gives 11 pixels sampled at 4/3, not 11/8);
  when ``output_shape`` is given the scale of each axis is ``out / in``.
- Axes are resized in MATLAB's order: the axis with the smaller scale first
  (rows first on a tie).

The computation runs in float64. MATLAB's uint8 path keeps the class of the
image between the two one-axis passes, i.e. it rounds (half away from zero) and
clips to uint8 after EACH pass; ``imresize_uint8`` does the same and reproduces
MATLAB's published uint8 outputs exactly (see tests/test_bicubic.py). The
precomputed DIV2K/benchmark LR files were made from uint8 images this way.

``pil_bicubic_resize`` is what the LIIF/LTE samplers use for training pairs and
for the on-the-fly LR of scales other than x2/x3/x4: PIL's ``Image.BICUBIC`` on
uint8 images (same kernel, but borders clipped with renormalised weights, and
PIL's 8-bit fixed point between the two passes).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["cubic", "contributions", "resize_matrix", "imresize", "imresize_uint8", "to_uint8", "pil_bicubic_resize"]


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (support [-2, 2])."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def contributions(in_len: int, out_len: int, scale: float,
                  antialiasing: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's ``contributions``: weights ``(out_len, taps)`` and 0-based input indices.

    Output pixel i is ``sum_k weights[i, k] * input[indices[i, k]]``.
    """
    if in_len < 1 or out_len < 1:
        raise ValueError(f"cannot resize {in_len} pixels to {out_len}")
    width = 4.0
    if scale < 1 and antialiasing:
        def kernel(d):
            return scale * cubic(scale * d)
        width = width / scale
    else:
        kernel = cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)          # input position, 1-based
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    ind = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    weights = kernel(u[:, None] - ind)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Symmetric border: 1..n, n..1, repeated (MATLAB's aux = [1:n, n:-1:1]).
    aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    indices = aux[np.mod(ind.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(weights != 0, axis=0)                   # MATLAB drops all-zero taps
    return weights[:, keep], indices[:, keep]


def resize_matrix(in_len: int, out_len: int, scale: float, antialiasing: bool = True) -> np.ndarray:
    """The ``(out_len, in_len)`` float64 matrix of one axis of MATLAB's bicubic imresize."""
    weights, indices = contributions(in_len, out_len, scale, antialiasing)
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_len)[:, None], indices.shape)
    np.add.at(mat, (rows, indices), weights)
    return mat


def _resize_axis(x: np.ndarray, axis: int, weights: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Apply one axis' contributions, tap by tap in MATLAB's order (cost ~ taps, not in_len)."""
    shape = [1] * x.ndim
    shape[axis] = weights.shape[0]
    out = np.zeros(x.shape[:axis] + (weights.shape[0],) + x.shape[axis + 1:], dtype=np.float64)
    for k in range(weights.shape[1]):
        out += weights[:, k].reshape(shape) * np.take(x, indices[:, k], axis=axis)
    return out


def imresize(img, scale: float | Sequence[float] | None = None,
             output_shape: Sequence[int] | None = None, antialiasing: bool = True,
             channels_last: bool | None = None):
    """MATLAB-compatible bicubic ``imresize`` of a float image.

    ``img``: a numpy array ``(H, W)`` or ``(H, W, C)`` (channels last), or a torch
    tensor ``(C, H, W)`` or ``(B, C, H, W)`` (channels first); ``channels_last``
    overrides that convention for 3-D inputs. Values are not clipped or rounded
    (for MATLAB's uint8 output use ``imresize_uint8``). Returns the same kind
    (array/tensor) and float dtype as the input (integer inputs give float64).
    Give exactly one of ``scale`` (a number or ``(sh, sw)``; output size
    ``ceil(scale * size)``) and ``output_shape`` ``(h, w)``.
    """
    is_tensor = isinstance(img, torch.Tensor)
    if is_tensor:
        arr = img.detach().cpu().numpy()
        out_dtype = img.dtype if img.dtype.is_floating_point else torch.float64
    else:
        arr = np.asarray(img)
        out_dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float64
    if arr.ndim == 2:
        hw_axes = (0, 1)
    elif arr.ndim == 3:
        last = (not is_tensor) if channels_last is None else channels_last
        hw_axes = (0, 1) if last else (1, 2)
    elif arr.ndim == 4 and is_tensor:
        hw_axes = (2, 3)
    else:
        raise ValueError(f"imresize expects (H,W), (H,W,C), (C,H,W) or (B,C,H,W); got {arr.shape}")
    x = _resize_hw(arr.astype(np.float64), hw_axes, scale, output_shape, antialiasing,
                   round_each_pass=False)
    if is_tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(dtype=out_dtype, device=img.device)
    return x.astype(out_dtype)


def _output_geometry(in_hw, scale, output_shape):
    if (scale is None) == (output_shape is None):
        raise ValueError("give exactly one of scale and output_shape")
    if scale is not None:
        sh, sw = (scale, scale) if np.isscalar(scale) else tuple(scale)
        scales = (float(sh), float(sw))
        if min(scales) <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        out_hw = tuple(int(math.ceil(s * n)) for s, n in zip(scales, in_hw))
    else:
        out_hw = (int(output_shape[0]), int(output_shape[1]))
        scales = (out_hw[0] / in_hw[0], out_hw[1] / in_hw[1])
    return scales, out_hw


def _resize_hw(x: np.ndarray, hw_axes, scale, output_shape, antialiasing: bool,
               round_each_pass: bool) -> np.ndarray:
    in_hw = (x.shape[hw_axes[0]], x.shape[hw_axes[1]])
    scales, out_hw = _output_geometry(in_hw, scale, output_shape)
    # MATLAB: the axis with the smallest scale first (stable: rows on a tie).
    for k in sorted(range(2), key=lambda k: scales[k]):
        weights, indices = contributions(in_hw[k], out_hw[k], scales[k], antialiasing)
        x = _resize_axis(x, hw_axes[k], weights, indices)
        if round_each_pass:
            x = to_uint8(x).astype(np.float64)
    return x


def imresize_uint8(img: np.ndarray, scale: float | Sequence[float] | None = None,
                   output_shape: Sequence[int] | None = None,
                   antialiasing: bool = True) -> np.ndarray:
    """MATLAB's ``imresize`` on a uint8 image ``(H, W)`` or ``(H, W, C)``: uint8 out.

    Rounds and clips after each one-axis pass, as MATLAB does for uint8 images;
    this is how the LR files of x2/x3/x4 are made (``imresize(hr, 1/s)``).
    """
    arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise ValueError(f"imresize_uint8 expects a uint8 (H,W[,C]) array, got {arr.dtype} {arr.shape}")
    out = _resize_hw(arr.astype(np.float64), (0, 1), scale, output_shape, antialiasing,
                     round_each_pass=True)
    return out.astype(np.uint8)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Values on the 0..255 scale to uint8 as MATLAB converts: round half away from zero, clip."""
    x = np.asarray(x, dtype=np.float64)
    return np.clip(np.sign(x) * np.floor(np.abs(x) + 0.5), 0, 255).astype(np.uint8)


def pil_bicubic_resize(img, size: Sequence[int]):
    """Resize to ``size = (h, w)`` with PIL's BICUBIC on uint8, as LIIF/LTE's ``resize_fn``.

    ``img``: a uint8 numpy array ``(H, W, 3)`` (returns a uint8 array), or a
    float tensor ``(3, H, W)`` in [0, 1] (quantised to uint8 by rounding, which
    for images read from 8-bit files equals torchvision's truncating
    ``ToPILImage``; returns a float tensor ``k / 255``).
    """
    h, w = int(size[0]), int(size[1])
    if isinstance(img, torch.Tensor):
        if img.ndim != 3:
            raise ValueError(f"expected a (C,H,W) tensor, got {tuple(img.shape)}")
        arr = img.detach().cpu().permute(1, 2, 0).numpy()
        u8 = np.clip(np.round(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
        out = _pil_resize_u8(u8, h, w)
        return torch.from_numpy(out).permute(2, 0, 1).to(torch.float32).div(255.0).to(img.device)
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise ValueError(f"pil_bicubic_resize on arrays expects uint8, got {arr.dtype}")
    return _pil_resize_u8(arr, h, w)


def _pil_resize_u8(arr: np.ndarray, h: int, w: int) -> np.ndarray:
    squeeze = arr.ndim == 3 and arr.shape[2] == 1
    src = arr[..., 0] if squeeze else arr
    out = np.array(Image.fromarray(np.ascontiguousarray(src)).resize((w, h), Image.BICUBIC))
    return out[..., None] if squeeze else out
