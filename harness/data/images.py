"""Image files: reading any image as ``(H, W, 3)`` uint8 RGB, its size from the header,
writing PNG atomically (whole, or row band by row band for outputs larger than memory),
and the uint8 -> float tensor conversion used by the evaluation pairs and the training
patches.

Bit depths (``read_image``), deliberately: 8-bit images as they are; 16-bit images
(``I;16*``) divided by 257 and rounded; 32-bit integer images (``I``) only when their
values lie in 0..65535 (some writers store 16-bit data that way), then as 16-bit;
32-bit float images (``F``) only when every value is finite and in [0, 1], then
scaled by 255 and rounded. Other 32-bit images are refused with one line naming the
file and the value range: scaling them by their own range would invent a contrast, so
the user converts them knowingly.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Iterable

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


def _from_32bit(arr: np.ndarray, path: Path) -> np.ndarray:
    """A 32-bit image (PIL mode ``I`` or ``F``) to uint8 by the rule of the module docstring."""
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or lo < 0 or hi > 1:
            raise HarnessError(f"cannot read image {path}: a 32-bit float image must hold values in "
                               f"[0, 1], this one spans {lo:g} .. {hi:g}; convert it to an 8- or 16-bit "
                               f"image first (choosing how to map its range)")
        return to_uint8(arr.astype(np.float64) * 255.0)
    if lo < 0 or hi > 65535:
        raise HarnessError(f"cannot read image {path}: a 32-bit integer image must hold 16-bit values "
                           f"(0 .. 65535), this one spans {lo:g} .. {hi:g}; convert it to an 8- or 16-bit "
                           f"image first (choosing how to map its range)")
    return to_uint8(arr.astype(np.float64) / 257.0)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8; an unreadable file, or a 32-bit one outside
    the ranges of the module docstring, is a HarnessError naming it."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                arr = to_uint8(np.asarray(im, dtype=np.float64) / 257.0)   # 16-bit -> 8-bit
            elif im.mode in ("I", "F"):
                arr = _from_32bit(np.asarray(im), path)
            elif im.mode == "1":
                arr = np.asarray(im.convert("L"))
            elif im.mode == "P":
                arr = np.asarray(im.convert("RGBA" if "transparency" in im.info else "RGB"))
            elif im.mode in ("L", "LA", "RGB", "RGBA"):
                arr = np.asarray(im)
            else:
                arr = np.asarray(im.convert("RGB"))
        return as_rgb_uint8(arr)
    except HarnessError:
        raise
    except Exception as exc:  # PIL raises several types for broken files
        raise HarnessError(f"cannot read image {path}: {exc}") from exc


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image file from its header (nothing decoded); an unreadable
    file is a HarnessError naming it."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception as exc:
        raise HarnessError(f"cannot read image {path}: {exc}") from exc


def write_png(path: str | Path, arr: np.ndarray) -> None:
    """Write a uint8 ``(H, W, 3)`` image as PNG atomically (a killed job leaves no partial file)."""
    arr = np.asarray(arr)
    write_png_rows(path, arr.shape[0], arr.shape[1], [arr])


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IDAT_BYTES = 1 << 20          # compressed bytes gathered into one IDAT chunk
PNG_FILTER_BYTES = 1 << 20     # raw bytes filtered at once (bounds the filter's scratch memory)
#: Peak scratch memory of :func:`write_png_rows` (~56 bytes per byte filtered at once).
PNG_SCRATCH_BYTES = 56 * PNG_FILTER_BYTES


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _png_filter(rows: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """PNG filtering of ``rows (n, W*3)`` uint8 with the row above the first one ``prior``:
    ``(n, 1 + W*3)`` with each row's filter type first. Per row, the type whose output has
    the smallest sum of absolute signed bytes (libpng's heuristic)."""
    x = rows.astype(np.int16)
    b = np.concatenate([prior[None].astype(np.int16), x[:-1]])
    a = np.zeros_like(x)
    a[:, 3:] = x[:, :-3]
    c = np.zeros_like(x)
    c[:, 3:] = b[:, :-3]
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    candidates = np.stack([x, x - a, x - b, x - (a + b) // 2, x - paeth]).astype(np.uint8)
    cost = np.abs(candidates.view(np.int8).astype(np.int32)).sum(axis=2)   # (5, n)
    kind = cost.argmin(axis=0)
    out = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    out[:, 0] = kind
    out[:, 1:] = candidates[kind, np.arange(rows.shape[0])]
    return out


def write_png_rows(path: str | Path, height: int, width: int, bands: Iterable[np.ndarray]) -> None:
    """Write an 8-bit RGB PNG of ``height x width`` from ``bands`` -- uint8 arrays ``(n, width, 3)``
    whose rows follow each other from the top -- atomically, holding one band at a time.

    For outputs too large for memory (Pillow needs the whole image). The file is a plain
    PNG (filter chosen per row as libpng does, zlib level 6, Pillow's default); fewer or
    more rows than ``height`` is an error and leaves no file.
    """
    if height < 1 or width < 1 or height >= 2 ** 31 or width >= 2 ** 31:
        raise HarnessError(f"cannot write {path}: PNG sides must be 1 .. 2^31-1, got {height}x{width}")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(_PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        z = zlib.compressobj(6)
        pending: list[bytes] = []
        size = 0

        def emit(data: bytes, force: bool = False) -> None:
            nonlocal size
            if data:
                pending.append(data)
                size += len(data)
            if size and (force or size >= _IDAT_BYTES):
                fh.write(_png_chunk(b"IDAT", b"".join(pending)))
                pending.clear()
                size = 0

        prior = np.zeros(width * 3, np.uint8)
        done = 0
        step = max(1, PNG_FILTER_BYTES // (width * 3))
        for band in bands:
            band = np.asarray(band)
            if band.dtype != np.uint8 or band.ndim != 3 or band.shape[1:] != (width, 3):
                raise ValueError(f"PNG band must be uint8 (n, {width}, 3), got {band.dtype} {band.shape}")
            if done + band.shape[0] > height:
                raise ValueError(f"PNG of {height} rows given more rows")
            flat = band.reshape(band.shape[0], width * 3)
            for i in range(0, flat.shape[0], step):
                rows = flat[i:i + step]
                emit(z.compress(_png_filter(rows, prior).tobytes()))
                prior = rows[-1]
            done += band.shape[0]
        if done != height:
            raise ValueError(f"PNG of {height} rows given {done}")
        emit(z.flush(), force=True)
        fh.write(_png_chunk(b"IEND", b""))


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1] (a copy)."""
    return torch.from_numpy(np.array(arr, dtype=np.float32).transpose(2, 0, 1) / 255.0).contiguous()
