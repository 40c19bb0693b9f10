"""LR images of x2, x3 and x4 (the MATLAB-bicubic scales) and their cache.

Following LIIF/LTE, the LR image of ``<name>`` at scale s is the precomputed file
``<name>x<s>.png`` when the dataset's ``X<s>`` folder exists (then it must be
complete: MATLAB files and ours are never mixed, and every file must have the size
below). Otherwise it is made with the MATLAB-compatible
``harness.bicubic.imresize_uint8(hr, 1/s)`` from the HR image cropped to a multiple
of s (as the benchmark LR files were made) and cached as a uint8 PNG under
``<cache>/lr/<key>/<dataset>/X<s>/<name>x<s>.png`` (written atomically, made once),
where ``<key>`` is ``embedded-v1`` for the embedded sets and ``folders-<sha1 of the
resolved root, 8 hex>`` for folders.

LR size: exactly ``floor(H / s) x floor(W / s)`` for an ``H x W`` HR image
(``lr_size``): the HR cropped to a multiple of s, then MATLAB's ``imresize(hr, 1/s)``.
The DIV2K and benchmark LR files follow it: LIIF/LTE's paired loader crops the HR
to ``LR * s``, which needs ``LR <= HR / s`` where an HR side is not a multiple of s,
and MATLAB's size for an uncropped HR would be the ceiling. Any other size, the
ceiling included, is an error naming the file, checked from the headers before any
image is decoded (a smaller LR would otherwise be scored against a crop of the HR).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from harness.bicubic import imresize_uint8
from harness.data.embedded import EMBEDDED_DIR
from harness.data.files import dataset_root, hr_files
from harness.data.images import image_size, read_image, write_png
from harness.data.layouts import check_data_cfg, layout_of
from harness.errors import HarnessError


def _cache_key(cfg: dict) -> str:
    if cfg["source"] == "embedded":
        return EMBEDDED_DIR
    digest = hashlib.sha1(str(Path(cfg["root"]).resolve()).encode()).hexdigest()[:8]
    return f"folders-{digest}"


def lr_cache_path(data_cfg: Mapping[str, Any], dataset: str, name: str, scale: int) -> Path:
    """Where the generated x2/x3/x4 LR image of one HR image is cached."""
    cfg = check_data_cfg(data_cfg)
    return Path(cfg["cache"]) / "lr" / _cache_key(cfg) / dataset / f"X{scale}" / f"{name}x{scale}.png"


def lr_size(hr_shape, s: int) -> tuple[int, int]:
    """The protocol's LR size of an HR image at x2/x3/x4: ``(floor(H / s), floor(W / s))``."""
    return int(hr_shape[0]) // s, int(hr_shape[1]) // s


def _check_lr_size(lr_file: Path, lr_shape, hr_file: Path, hr_shape, s: int) -> None:
    expect = lr_size(hr_shape, s)
    if tuple(lr_shape[:2]) != expect:
        raise HarnessError(
            f"LR image {lr_file} is {lr_shape[0]}x{lr_shape[1]}, but x{s} of its HR image {hr_file} "
            f"({hr_shape[0]}x{hr_shape[1]}) must be {expect[0]}x{expect[1]} (floor of HR / {s}, the "
            f"protocol's size); replace it, or remove its X{s} folder to have the LR images generated")


def _matlab_lr(hr: np.ndarray, s: int) -> np.ndarray:
    """LR of x2/x3/x4: MATLAB bicubic of the HR image cropped to a multiple of s."""
    h, w = (hr.shape[0] // s) * s, (hr.shape[1] // s) * s
    if h == 0 or w == 0:
        raise HarnessError(f"image of {hr.shape[0]}x{hr.shape[1]} is too small for x{s}")
    return imresize_uint8(hr[:h, :w], scale=1.0 / s)


def _cached_lr(cfg: dict, dataset: str, name: str, hr: np.ndarray, s: int) -> tuple[np.ndarray, bool]:
    """The cached LR (made and written once); returns (lr, written_now)."""
    path = lr_cache_path(cfg, dataset, name, s)
    if path.is_file():
        lr = read_image(path)
        if lr.shape[:2] == lr_size(hr.shape, s):
            return lr, False
    lr = _matlab_lr(hr, s)
    write_png(path, lr)
    return lr, True


def _precomputed_lr_file(lr_dir: Path, stem: str, s: int) -> Path | None:
    for ext in (".png", ".PNG", ".bmp", ".jpg"):
        p = lr_dir / f"{stem}x{s}{ext}"
        if p.is_file():
            return p
    return None


def matlab_lr_pairs(data_cfg: Mapping[str, Any], dataset: str, s: int, files: list[Path] | None = None
                    ) -> Iterator[tuple[str, np.ndarray, np.ndarray, str]]:
    """``(name, lr, hr, how)`` for x2/x3/x4: uint8, HR cropped to LR size * s, ``how`` one of
    ``precomputed``, ``generated`` (written to the cache now) or ``cached``; of the HR
    ``files`` given (default: all of the dataset's).

    The layout, and the size of every precomputed LR file (from the headers), are
    checked when this is called; the images are read while iterating.
    """
    cfg = check_data_cfg(data_cfg)
    layout = layout_of(dataset)
    root = dataset_root(cfg)
    if files is None:
        files = hr_files(cfg, dataset)
    lr_dir = root / layout.lr / f"X{s}" if layout.lr else None
    precomputed = lr_dir is not None and lr_dir.is_dir()
    if precomputed:   # a present LR folder must be complete: never mix MATLAB files and ours
        absent = [f for f in files if _precomputed_lr_file(lr_dir, f.stem, s) is None]
        if absent:
            raise HarnessError(
                f"dataset '{dataset}' is incomplete: folder {lr_dir} lacks "
                f"{', '.join(f'{a.stem}x{s}.png' for a in absent[:3])}"
                f"{' ...' if len(absent) > 3 else ''} ({len(absent)} of {len(files)} missing). "
                f"Complete it, or remove {lr_dir} to have the LR images generated with "
                f"MATLAB-compatible bicubic into the cache.")
        for f in files:
            lr_file = _precomputed_lr_file(lr_dir, f.stem, s)
            _check_lr_size(lr_file, image_size(lr_file), f, image_size(f), s)

    def pairs():
        for f in files:
            hr = read_image(f)
            if precomputed:
                lr_file = _precomputed_lr_file(lr_dir, f.stem, s)
                lr, how = read_image(lr_file), "precomputed"
                _check_lr_size(lr_file, lr.shape, f, hr.shape, s)   # the file may have changed since
            else:
                lr, written = _cached_lr(cfg, dataset, f.stem, hr, s)
                how = "generated" if written else "cached"
            h, w = lr.shape[0] * s, lr.shape[1] * s
            yield f.stem, lr, hr[:h, :w], how
    return pairs()
