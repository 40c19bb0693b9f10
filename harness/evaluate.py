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
the output image). With ``tile > 0`` the extractor runs on LR tiles of
``tile x tile`` pixels, each extended by ``tile_overlap`` pixels on every side
(clipped at the image border), and only the tile's own pixels are kept; tile
origins, sizes and overlaps are rounded up to multiples of the extractor's
window, so a tile sees exactly the window grid of the whole image.

Choosing the overlap (``default_tile_overlap``):

- Convolution-only extractors (EDSR-baseline, RDN): a feature depends on the
  input within the sum of the radii of all its convolutions (an upper bound for
  any residual / dense wiring, and exact for these two because their longest
  path runs through every conv). An overlap of that radius makes tiled features
  equal to untiled ones up to float summation order; two pixels less and the
  tile borders show (tests/test_evaluate.py). Paper widths: EDSR-baseline 34,
  RDN 131 LR pixels.
- RCAN: 412 pixels of convolutions, and every channel-attention layer averages
  over the whole image, so no overlap is exact; the default is capped at
  ``GLOBAL_OVERLAP`` (64). RCAN's activations are 64 channels wide: untiled it
  needs ~1.7 KiB per LR pixel, under 4 GB even at x2 on DIV2K, so it never
  needs tiles.
- SwinIR: 36 blocks of 8-pixel windows, alternately shifted, each reaching up to
  7 pixels further: ~260 pixels, effectively the whole image. Baseline / TADT:
  attention stays inside aligned windows (4/8/16/48, no shift), and each of the
  8 groups' 3x3 convs carries information one pixel into the next 48-window,
  which the next group spreads over that window: ~8 windows (~400 pixels).
  Exactness would need overlaps that make tiles nearly as large as the image,
  so the default is ``GLOBAL_OVERLAP`` rounded up to the window (SwinIR 64,
  TADT/Baseline 96), and the deviation it leaves is measured
  (``benchmarks/bench_eval_memory.py --deviation``, paper widths, random LR):
  max |tiled - untiled| of the features, fresh weights / "stress" weights
  (variance-preserving linears, N(0, 1) position-bias tables: a pessimistic
  stand-in for trained weights):
  SwinIR (tile 128 on 240x336): overlap 32: 7.8e-7 / 1.3e-4; 64: 8.3e-7 / 3.2e-6;
  128: 6.0e-7 / 1.9e-6. TADT (tile 96 on 288x432): 48: 1.7e-4; 96: 3.3e-6;
  192: 2.9e-6. Baseline: 96: 3.2e-6. RCAN (tile 128): 64: 1.4e-3; 128: 5.7e-4.
  At the defaults the deviation is at the float noise floor (~2e-6: convs of
  another size sum in another order) and the SR outputs differ by < 1e-7.

TADT's routing is decided once, on the whole (padded) LR image, by the TARC
(``encoder.routing_for``), and then forced on every tile, so tiling never
changes the path the network takes. :func:`evaluation_routing` is that
decision on its own; the FLOPs verb counts TADT along it, and the per-image
CSV records it (``routing``), so PSNR and GFLOPs come from the same path.
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
from upsamplers import DEFAULT_CHUNK
from upsamplers.base import decode_in_chunks
from upsamplers.coords import make_coord

__all__ = ["output_size", "conv_receptive_radius", "default_tile_overlap", "extract_features",
           "super_resolve", "super_resolve_routed", "evaluation_input", "evaluation_routing",
           "bicubic_upscale", "EVAL_COLUMNS", "evaluate_rows", "GLOBAL_OVERLAP", "decode_rows",
           "check_finite", "check_sr_args", "routing_of", "eval_mode", "window_of", "ceil_to"]

#: Default overlap (LR pixels, before rounding up to the window) for extractors
#: whose receptive field is effectively the whole image (see the module docstring).
GLOBAL_OVERLAP = 64


def output_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """Output size of an ``h x w`` image at ``scale``: each side rounded half up.

    ``floor(n * s + 0.5)`` (with a 1e-9 tolerance so that 5 * 3.7 = 18.500000000000004
    and 18.499999999999996 both give 19). At least 1 pixel per side.
    """
    s = float(scale)
    if not s > 0 or not math.isfinite(s):
        raise ValueError(f"scale must be a positive number, got {scale}")
    return tuple(max(1, int(math.floor(n * s + 0.5 + 1e-9))) for n in (h, w))


# ----------------------------------------------------------------------------- overlap

def conv_receptive_radius(encoder: nn.Module) -> tuple[int, bool]:
    """``(radius, local)``: sum of ``dilation * (k - 1) / 2`` over the encoder's convs,
    and whether the encoder is free of global operations (adaptive pooling, or a
    module marked ``non_local = True`` such as NLSA's attention).

    The TARC (``tarc.*``) is skipped: routing is decided once on the whole image.
    """
    radius, local = 0, True
    for name, m in encoder.named_modules():
        if name == "tarc" or name.startswith("tarc."):
            continue
        if isinstance(m, nn.Conv2d):
            radius += max(d * (k - 1) // 2 for d, k in zip(m.dilation, m.kernel_size))
        elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) or getattr(m, "non_local", False):
            local = False
    return radius, local


def window_of(encoder: nn.Module) -> int:
    """The multiple the extractor pads its input to (``window_size``), 1 for convnets."""
    ws = getattr(encoder, "window_size", None)
    return int(ws) if ws else 1


def ceil_to(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple``."""
    return -(-int(n) // multiple) * multiple


def default_tile_overlap(encoder: nn.Module) -> int:
    """Overlap (LR pixels) added around each feature tile; see the module docstring."""
    ws = window_of(encoder)
    if ws > 1:
        return ceil_to(GLOBAL_OVERLAP, ws)
    radius, local = conv_receptive_radius(encoder)
    return radius if local else min(radius, GLOBAL_OVERLAP)


# ---------------------------------------------------------------------------- features

def routing_of(encoder: nn.Module, inp: torch.Tensor, scale) -> Any:
    """TADT/Baseline: the routing of the whole image (``RoutingInfo``); else None."""
    route = getattr(encoder, "routing_for", None)
    return route(inp, scale) if callable(route) else None


def _encode(encoder: nn.Module, x: torch.Tensor, scale, routing) -> torch.Tensor:
    if routing is None:
        return encoder(x, scale=scale)
    return encoder(x, scale=scale, routing=routing.r)


def extract_features(model: nn.Module, inp: torch.Tensor, scale, tile: int = 0,
                     tile_overlap: Optional[int] = None, routing: Any = None,
                     rows: Optional[Sequence[int]] = None) -> torch.Tensor:
    """The encoder's map ``(B, C, h, w)`` of the normalised (already padded) ``inp``.

    ``tile > 0`` runs the encoder on tiles (see the module docstring). ``routing``
    (a ``RoutingInfo``) is forced on every call; when tiling a routed extractor
    without one, the routing is decided on the whole ``inp`` first, so that no
    tile routes on its own content. ``rows = (r0, r1)`` (with ``tile > 0``; ``r0`` a
    multiple of the window) computes only those rows, ``(B, C, r1 - r0, w)``, as one
    row of ``(r1 - r0) x tile`` tiles that read their overlap from all of ``inp``.
    """
    encoder = model.encoder
    h, w = inp.shape[-2:]
    if rows is None:
        if tile <= 0 or (tile >= h and tile >= w):
            return _encode(encoder, inp, scale, routing)
        r0, r1 = 0, h
    else:
        r0, r1 = int(rows[0]), int(rows[1])
        if tile <= 0 or not 0 <= r0 < r1 <= h:
            raise ValueError(f"rows {rows} of {h} need tile > 0, got {tile}")
    if routing is None:
        routing = routing_of(encoder, inp, scale)
    ws = window_of(encoder)
    overlap = default_tile_overlap(encoder) if tile_overlap is None else int(tile_overlap)
    if overlap < 0:
        raise ValueError(f"tile_overlap must be >= 0, got {tile_overlap}")
    tile, overlap = ceil_to(tile, ws), ceil_to(overlap, ws)
    step = tile if rows is None else r1 - r0
    feat = None
    for y0 in range(r0, r1, step):
        y1 = min(y0 + step, r1)
        ey0, ey1 = max(0, y0 - overlap), min(h, y1 + overlap)
        for x0 in range(0, w, tile):
            x1 = min(x0 + tile, w)
            ex0, ex1 = max(0, x0 - overlap), min(w, x1 + overlap)
            f = _encode(encoder, inp[..., ey0:ey1, ex0:ex1], scale, routing)
            if feat is None:
                feat = f.new_empty(f.shape[0], f.shape[1], r1 - r0, w)
            feat[..., y0 - r0:y1 - r0, x0:x1] = f[..., y0 - ey0:y1 - ey0, x0 - ex0:x1 - ex0]
            del f
    return feat


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
    whole image at once; overlap None = :func:`default_tile_overlap`).
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
