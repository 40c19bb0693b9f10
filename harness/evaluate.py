"""Super-resolve one LR image by the evaluation protocol, in bounded memory.

``super_resolve(model, lr, scale)`` is the one place where a model meets an
evaluation image; ``python -m harness evaluate`` and ``upscale`` both call it.
Each protocol rule is imported from :mod:`harness.protocol`, never re-written:

- input: ``normalize(lr)``; window-attention extractors (``encoder.window_size``)
  get LTE's mirror padding (``protocol.pad_symmetric_past_multiple``: 1..w pixels on the
  bottom/right, never 0);
- queries: the pixel centres of the ``H x W`` output grid
  (``upsamplers.coords.make_coord``) with the cell ``(2/H, 2/W)`` through
  ``protocol.eval_cell`` (the cell rule above x4). With window padding the model
  sees the padded image, so coordinates and cell are expressed in the padded
  image's frame (``y' = (y + 1) h / h_pad - 1``, ``cell' = cell h / h_pad``) and
  only the un-padded part of the grid is queried. For an integer scale this is
  exactly LTE's "predict on the padded image's HR grid, then crop": the grid
  points are the same; for other scales and explicit output sizes it is the
  same rule without rounding the padded HR size;
- the model gets ``scale`` (the scale-aware TADT routes on it);
- output: ``denormalize``, clamped to [0, 1], not rounded; a non-finite output (NaN
  weights, overflow) is a ``HarnessError``, never an image or a PSNR.

Bounded memory
--------------
Queries are decoded ``chunk`` at a time (``query_rgb`` on slices of the grid;
coordinates are made per chunk, so nothing of size H*W x 2 is ever held besides
the output image). With ``tile > 0`` the extractor runs on overlapping LR tiles
(:mod:`harness.tiling`: the tiles, their overlap and what it costs in accuracy).

TADT's routing is decided once, on the whole (padded) LR image, by the TARC
(``encoder.routing_for``), and forced on every tile. :func:`evaluation_routing`
is that decision on its own; the FLOPs verb counts TADT along it, and the
per-image CSV records it (``routing``), so PSNR and GFLOPs come from the same path.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import nn

from harness import protocol
from harness.errors import HarnessError
from harness.scales import format_scale
from harness.tables import EVAL_COLUMNS  # the per-image CSV layout, defined once with its reader
from harness.tiling import extract_features, routing_of
from upsamplers import DEFAULT_CHUNK
from upsamplers.base import decode_in_chunks
from upsamplers.coords import make_coord

__all__ = ["output_size", "super_resolve", "super_resolve_routed", "evaluation_input", "evaluation_routing",
           "bicubic_upscale", "EVAL_COLUMNS", "evaluate_rows", "decode_rows", "check_finite", "check_sr_args",
           "eval_mode"]

def output_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """Output size of an ``h x w`` image at ``scale``: each side rounded half up.

    ``floor(n * s + 0.5)`` (with a 1e-9 tolerance so that 5 * 3.7 = 18.500000000000004
    and 18.499999999999996 both give 19). At least 1 pixel per side.
    """
    s = float(scale)
    if not s > 0 or not math.isfinite(s):
        raise ValueError(f"scale must be a positive number, got {scale}")
    return tuple(max(1, int(math.floor(n * s + 0.5 + 1e-9))) for n in (h, w))


# ----------------------------------------------------------------------- super-resolve

@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _check_lr(lr: torch.Tensor) -> None:
    if not isinstance(lr, torch.Tensor) or lr.ndim != 3 or lr.shape[0] != 3:
        shape = tuple(lr.shape) if isinstance(lr, torch.Tensor) else type(lr).__name__
        raise ValueError(f"expected an LR image tensor (3, h, w), got {shape}")
    if lr.shape[1] < 1 or lr.shape[2] < 1:
        raise ValueError(f"empty LR image {tuple(lr.shape)}")


def check_finite(rgb: torch.Tensor, what: str) -> None:
    """Non-finite model output is an error, never an image: one HarnessError line."""
    if not bool(torch.isfinite(rgb).all()):
        raise HarnessError(f"the model's output for {what} is not finite (NaN or inf): the "
                           f"checkpoint's weights are probably not finite, or overflow")


def evaluation_input(encoder: nn.Module, lr: torch.Tensor, device=None) -> torch.Tensor:
    """What evaluation feeds the model for ``lr (3, h, w)`` in [0, 1]: normalised,
    float32, ``(1, 3, h', w')``, mirror-padded for window extractors
    (``protocol.pad_symmetric_past_multiple``); on ``device`` (default: the encoder's)."""
    device = _device_of(encoder) if device is None else device
    inp = protocol.normalize(lr.to(device=device, dtype=torch.float32)).unsqueeze(0)
    ws = getattr(encoder, "window_size", None)
    if ws:
        inp, _ = protocol.pad_symmetric_past_multiple(inp, int(ws))
    return inp


@torch.no_grad()
def evaluation_routing(encoder: nn.Module, lr: torch.Tensor, scale: float) -> Any:
    """The routing evaluation uses for ``lr (3, h, w)`` at ``scale``: the
    ``RoutingInfo`` the encoder's ``routing_for`` (TADT: the TARC) returns on
    the whole :func:`evaluation_input` (before any tiling), in eval mode; None
    for extractors without routing. :func:`super_resolve_routed` decides the same way."""
    _check_lr(lr)
    with eval_mode(encoder):
        return routing_of(encoder, evaluation_input(encoder, lr), float(scale))


def decode_rows(model: nn.Module, inp: torch.Tensor, feat: Any, lr_size: Sequence[int],
                out_shape: Sequence[int], rows: Sequence[int], scale: float, chunk: int,
                row0: int = 0) -> torch.Tensor:
    """Output rows ``rows[0] .. rows[1] - 1`` of the ``H x W`` super-resolution of an
    ``h x w`` (``lr_size``) image, ``(3, n, W)`` in [0, 1] (clamped, not rounded).

    ``inp`` and ``feat`` (``model.prepare``'s) hold the padded LR rows ``row0 ..
    row0 + inp.shape[-2] - 1`` and every padded column; the queries are expressed in
    their frame (``y' = (y + 1) h / n - 1 - 2 row0 / n`` for ``n`` rows, the cell scaled
    alike), so the rows a query reads must lie inside (see ``harness.upscaling``).
    Non-finite output raises (:func:`check_finite`).
    """
    (h, w), (H, W) = (int(lr_size[0]), int(lr_size[1])), (int(out_shape[0]), int(out_shape[1]))
    y0, y1 = int(rows[0]), int(rows[1])
    n, wp = inp.shape[-2:]
    device = inp.device
    ys = make_coord((H,), device=device)[:, 0]
    xs = make_coord((W,), device=device)[:, 0]
    if n != h or row0:
        ys = (ys + 1) * (h / n) - 1
    if row0:
        ys = ys - 2.0 * row0 / n
    if wp != w:
        xs = (xs + 1) * (w / wp) - 1
    cell = protocol.eval_cell(torch.tensor([2.0 / H * h / n, 2.0 / W * w / wp], device=device), scale)

    def queries(i: int, j: int):
        idx = torch.arange(y0 * W + i, y0 * W + j, device=device)
        return torch.stack([ys[idx // W], xs[idx % W]], dim=-1).unsqueeze(0), cell.expand(1, j - i, 2)

    out = torch.empty(3, (y1 - y0) * W, dtype=torch.float32, device=device)
    for i, j, rgb in decode_in_chunks(model, inp, feat, (y1 - y0) * W, queries, chunk):
        check_finite(rgb, f"{h}x{w} -> {H}x{W} (x{scale:.4g})")
        out[:, i:j] = rgb[0].t()
        del rgb
    return protocol.denormalize(out.view(3, y1 - y0, W)).clamp_(0, 1)


def check_sr_args(lr: torch.Tensor, scale: float, chunk: int,
                  out_shape: Optional[Sequence[int]] = None) -> tuple[float, int, int]:
    """Validate the arguments of a super-resolution; return ``(scale, H, W)``."""
    _check_lr(lr)
    s = float(scale)
    if not s > 0 or not math.isfinite(s):
        raise ValueError(f"scale must be a positive number, got {scale}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    h, w = int(lr.shape[1]), int(lr.shape[2])
    H, W = output_size(h, w, s) if out_shape is None else (int(out_shape[0]), int(out_shape[1]))
    if H < 1 or W < 1:
        raise ValueError(f"bad output size {H}x{W}")
    return s, H, W


@torch.no_grad()
def super_resolve_routed(model: nn.Module, lr: torch.Tensor, scale: float,
                         out_shape: Optional[Sequence[int]] = None, chunk: int = DEFAULT_CHUNK,
                         tile: int = 0, tile_overlap: Optional[int] = None):
    """:func:`super_resolve`, also returning the routing used (``RoutingInfo`` for
    TADT/Baseline, else None)."""
    s, H, W = check_sr_args(lr, scale, chunk, out_shape)
    h, w = int(lr.shape[1]), int(lr.shape[2])
    with eval_mode(model):
        inp = evaluation_input(model.encoder, lr)
        routing = routing_of(model.encoder, inp, s)
        feat = model.prepare(extract_features(model, inp, s, tile, tile_overlap, routing))
        sr = decode_rows(model, inp, feat, (h, w), (H, W), (0, H), s, chunk)
        del feat
    return sr.to(lr.device), routing


def super_resolve(model: nn.Module, lr: torch.Tensor, scale: float,
                  out_shape: Optional[Sequence[int]] = None, chunk: int = DEFAULT_CHUNK,
                  tile: int = 0, tile_overlap: Optional[int] = None) -> torch.Tensor:
    """SR image ``(3, H, W)`` in [0, 1] (clamped, not rounded) of ``lr (3, h, w)`` in [0, 1].

    ``out_shape`` defaults to :func:`output_size` ``(h, w, scale)``; ``scale`` is
    what the model is told (and what the cell rule uses) either way. ``chunk``:
    queries decoded at once. ``tile`` / ``tile_overlap``: feature tiling (0 = the
    whole image at once; overlap None = ``harness.tiling.default_tile_overlap``).
    """
    return super_resolve_routed(model, lr, scale, out_shape, chunk, tile, tile_overlap)[0]


# -------------------------------------------------------------------------- bicubic floor

def bicubic_upscale(lr: torch.Tensor, out_shape: Sequence[int]) -> torch.Tensor:
    """The "Bicubic" row: MATLAB-bicubic upscaling of ``lr (3, h, w)`` to ``out_shape``, in [0, 1].

    ``harness.bicubic.imresize`` (MATLAB's kernel and symmetric borders) on float
    data with the output size given, so each axis is scaled by ``H / h``: the
    same geometry as the models' query grid (HR pixel centres spread over the LR
    extent), and at x2/x3/x4 exactly MATLAB's ``imresize(lr, s, 'bicubic')``,
    the convention of the bicubic rows of SR papers. Like the models' outputs it
    is clamped to [0, 1] and not rounded to 8 bits (PIL's bicubic would round:
    it only resizes uint8 images).
    """
    from harness.bicubic import imresize

    _check_lr(lr)
    out = imresize(lr.detach().to(torch.float32), output_shape=(int(out_shape[0]), int(out_shape[1])))
    return out.clamp_(0, 1)


# ---------------------------------------------------------------------------- evaluation

def evaluate_rows(model: Optional[nn.Module], data_cfg, dataset: str, scales: Sequence[float],
                  run: str, chunk: int = DEFAULT_CHUNK, tile: int = 0, tile_overlap: Optional[int] = None,
                  max_images: int = 0, on_image=None) -> Iterator[dict]:
    """Per-image rows (:data:`EVAL_COLUMNS`) of ``model`` (None = bicubic) on ``dataset``.

    Pairs come from ``harness.data.eval_pairs``; the PSNR is ``harness.metrics.psnr``
    with ``y_channel = harness.data.is_benchmark(dataset)``. ``active_branches``
    and ``beta`` are filled for scale-aware (routed) extractors only; ``routing``
    (the canonical bit string of :func:`evaluation_routing`, which the FLOPs verb
    counts) for every extractor with routing (Baseline, TADT).
    ``on_image(scale, name)`` is called after each image (progress).
    """
    from harness.data import eval_pairs, is_benchmark
    from harness.metrics import psnr
    from tadt.routing import bit_string

    y_channel = is_benchmark(dataset)
    routed = model is not None and bool(getattr(model.encoder, "scale_aware", False))
    # Every scale's pairs are set up (layout, LR sizes, image sizes checked) before any work.
    sources = [(s, eval_pairs(data_cfg, dataset, s, max_images)) for s in scales]
    for s, pairs in sources:
        for name, lr, hr in pairs:
            out_shape = tuple(hr.shape[-2:])
            if model is None:
                sr, info = bicubic_upscale(lr, out_shape), None
            else:
                sr, info = super_resolve_routed(model, lr, s, out_shape, chunk, tile, tile_overlap)
            row = {"run": run, "dataset": dataset, "scale": format_scale(s), "image": name,
                   "psnr": psnr(sr, hr, s, y_channel), "active_branches": "", "beta": "",
                   "routing": "" if info is None else bit_string(info.r[0])}
            if routed and info is not None:
                row["active_branches"] = int(info.active[0])
                if info.beta is not None:
                    row["beta"] = f"{float(info.beta[0]):.6f}"
            yield row
            if on_image is not None:
                on_image(s, name)
