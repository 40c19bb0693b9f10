"""Encoder features of an LR image, whole or in overlapping tiles, in bounded memory.

``extract_features(model, inp, scale, tile, tile_overlap, routing)`` is the one
place where an extractor runs on an evaluation image (``harness.evaluate`` and
``harness.upscaling`` both call it). With ``tile > 0`` the extractor runs on LR
tiles of ``tile x tile`` pixels, each extended by ``tile_overlap`` pixels on
every side (clipped at the image border), and only the tile's own pixels are
kept; tile origins, sizes and overlaps are rounded up to multiples of the
extractor's window (``window_of``), so a tile sees exactly the window grid of
the whole image.

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
  TADT/Baseline 96). CAT-R-2 likewise (window 16: 64).
- NLSA: every attention module reads the whole image (its hash buckets, and
  their number, depend on all pixels), so no overlap is exact: capped at
  ``GLOBAL_OVERLAP``. Its memory is linear in the pixels untiled (attention in
  blocks of bounded size), so evaluation runs it whole (``evaluation.tile`` 0).

The deviation the defaults leave (max |tiled - untiled| of the features, paper
widths, random and "stress" weights) is measured by
``benchmarks/bench_eval_memory.py --deviation``; the figures are in
benchmarks/README.md. For SwinIR, Baseline and TADT at the defaults it is at the
float noise floor (~2e-6: convs of another size sum in another order).

A routed extractor's routing (TADT: ``encoder.routing_for``, the TARC) is
decided once on the whole (padded) LR image and forced on every tile, so tiling
never changes the path the network takes.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

__all__ = ["GLOBAL_OVERLAP", "conv_receptive_radius", "window_of", "ceil_to", "default_tile_overlap",
           "routing_of", "extract_features"]

#: Default overlap (LR pixels, before rounding up to the window) for extractors
#: whose receptive field is effectively the whole image (see the module docstring).
GLOBAL_OVERLAP = 64


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
