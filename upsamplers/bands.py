"""Inference decoding a band of LR rows at a time: the pieces LIIF, LTE and MetaSR share.

Without autograd (:func:`fast_paths_on`, asked when ``prepare`` runs) the
upsamplers do not build their per-pixel decoder maps (LIIF's projected first
layer, LTE's amplitudes and frequencies, MetaSR's folded last layer) for the
whole image: :class:`BandedMap` computes a map for the LR rows the current chunk
of queries touches, channels last, in tiles of rows aligned on the image, and
keeps the tiles of the last band so that the next chunk (queries come in
raster order) only adds new ones. Memory then grows
with the chunk, not with the image. Queries read their pixels with
:func:`nearest_index` (the pixel ``grid_sample(mode="nearest")`` reads) and
``index_select`` on the ``(pixels, channels)`` band, and the MLPs run through
:func:`run_mlp` on blocks of :data:`QUERY_BLOCK` queries (all corners of a
block in one matrix product). With autograd on, the upsamplers run their
per-query form instead, so training numerics never depend on this module.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import _pytree as pytree

from upsamplers.base import CLAMP, EPS_SHIFT, area_weights
from upsamplers.coords import make_coord

#: Queries decoded together inside a chunk on the CPU (gathers and elementwise
#: work on all corners of a block at once): blocks of 2048-4096 ran best on one
#: thread (the block's tensors stay near the caches), larger ones on two threads
#: of cores shared with other jobs (fewer parallel regions to wait on); see
#: benchmarks/README.md.
QUERY_BLOCK = 4096

#: Rows per matrix product of :func:`run_mlp` on the CPU: enough for full
#: matrix-product speed, few enough that activations (8 MB at width 256) stay
#: near the caches (32768-row products ran ~25 % slower on one thread); see
#: benchmarks/README.md.
MLP_ROWS = 8192

#: LR pixels of a :class:`BandedMap` tile: ``max(1, TILE_PIXELS // w)`` whole rows
#: (16 rows at x2 of a 2040-pixel-wide output, where a chunk of 30000 queries
#: spans ~8 LR rows), so a band's memory does not grow with the image's width.
TILE_PIXELS = 16384


def fast_paths_on() -> bool:
    """Whether ``prepare`` sets up the fast paths: not under autograd (training keeps the
    per-query forms' numerics) nor under the JIT tracer (FLOP counts see the per-query forms)."""
    return not torch.is_grad_enabled() and not torch.jit.is_tracing()


def nearest_index(coord: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Indices of the pixels ``grid_sample(mode="nearest", align_corners=False)`` reads at
    ``coord (..., d)`` in [-1, 1] on a grid of ``size`` (d numbers), clamped into it."""
    n = coord.new_tensor(size)
    idx = (((coord + 1) * n - 1) / 2).round_().clamp_(min=0)
    return torch.minimum(idx, n - 1).long()


def pixel_centres(row: torch.Tensor, col: torch.Tensor, h: int, w: int, like: torch.Tensor
                  ) -> torch.Tensor:
    """Centres ``(..., 2)`` of pixels ``(row, col)`` of an ``h x w`` grid, as ``make_coord`` makes them."""
    ys = make_coord((h,), device=like.device, dtype=like.dtype)[:, 0]
    xs = make_coord((w,), device=like.device, dtype=like.dtype)[:, 0]
    return torch.stack([ys[row], xs[col]], dim=-1)


def band_rows(feat: torch.Tensor, r0: int, r1: int, fn: Callable[[torch.Tensor], torch.Tensor],
              halo: int) -> torch.Tensor:
    """``fn`` on rows ``r0..r1-1`` of ``feat (B, C, h, w)``, channels last: ``(B, r1 - r0, w, C')``.

    ``fn`` is a convolution without row padding (``padding=(0, halo)``); it gets
    the rows with ``halo`` rows of context on each side, zeros past the image
    border, so the band equals the same rows of a convolution of the whole map
    with ``padding=halo``.
    """
    h = feat.shape[-2]
    a, b = max(r0 - halo, 0), min(r1 + halo, h)
    x = feat[:, :, a:b]
    top, bottom = halo - (r0 - a), halo - (b - r1)
    if top or bottom:
        x = F.pad(x, (0, 0, top, bottom))
    out = fn(x.contiguous(memory_format=torch.channels_last))
    return out.permute(0, 2, 3, 1).contiguous()


class BandedMap:
    """A per-LR-pixel map ``fn`` of an encoder map, computed a band of rows at a time.

    The map is computed in tiles of whole rows aligned on the image
    (:meth:`tile_rows`), so every row has the same value whichever chunks of queries asked
    for it (outputs do not depend on the chunk size); :meth:`rows` keeps the
    tiles of its last band, and a later band that shares them reuses them.
    The kept tiles are replaced as a whole (one assignment), so concurrent
    readers can only cause recomputation, never a wrong band.
    """

    def __init__(self, feat: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], halo: int):
        self.feat, self.fn, self.halo = feat, fn, halo
        self._tiles: dict[int, torch.Tensor] = {}

    @property
    def shape(self) -> torch.Size:
        """The encoder map's shape ``(B, C, h, w)``."""
        return self.feat.shape

    def tile_rows(self) -> int:
        """Rows per tile: ``max(1, TILE_PIXELS // w)``."""
        return max(1, TILE_PIXELS // self.feat.shape[-1])

    def rows(self, r0: int, r1: int) -> torch.Tensor:
        """Rows ``r0..r1-1`` of the map, channels last: ``(B, r1 - r0, w, C')``."""
        h, n = self.feat.shape[-2], self.tile_rows()
        t0, t1 = r0 // n, (r1 - 1) // n + 1
        kept = self._tiles
        tiles = {t: kept[t] if t in kept else
                 band_rows(self.feat, t * n, min((t + 1) * n, h), self.fn, self.halo)
                 for t in range(t0, t1)}
        self._tiles = tiles
        band = tiles[t0] if t1 == t0 + 1 else torch.cat([tiles[t] for t in range(t0, t1)], dim=1)
        return band[:, r0 - t0 * n:r1 - t0 * n]


# A pytree node whose leaf is the encoder map, so that tools walking a ``prepare``
# result with ``torch.utils._pytree`` (harness.upscaling's memory probe) see its tensors.
pytree.register_pytree_node(BandedMap, lambda m: ([m.feat], (m.fn, m.halo)),
                            lambda leaves, ctx: BandedMap(leaves[0], *ctx))


def conv_band(weight: torch.Tensor, bias: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ``fn`` of a :class:`BandedMap` for a ``k x k`` convolution (zero padding)."""
    pad = weight.shape[-1] // 2
    return lambda x: F.conv2d(x, weight, bias, padding=(0, pad))


def gather_rows(table: torch.Tensor, row: torch.Tensor, col: torch.Tensor, r0: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten a band ``(B, rows, w, C)`` to ``(B * rows * w, C)`` and index its pixels.

    ``row``, ``col`` ``(..., B, Q)`` are absolute LR rows (inside the band) and
    columns; returns the flat table and the flat index, shaped like ``row``.
    """
    b, n_rows, w, c = table.shape
    item = torch.arange(b, device=row.device).view(b, 1) * (n_rows * w)
    return table.reshape(-1, c), item + (row - r0) * w + col


class Corners(NamedTuple):
    """LIIF's local ensemble for ``N = B * Q`` queries and ``K`` corners (4, or 1 without it)."""

    row: torch.Tensor     # (K, B, Q) LR row of each corner's feature
    col: torch.Tensor     # (K, B, Q) LR column
    rel: torch.Tensor     # (K, B, Q, 2) (coord - centre) * (h, w), the reference's unit
    weight: torch.Tensor  # (K, B, Q) area weights (summing to 1 over K)


def ensemble_corners(coord: torch.Tensor, h: int, w: int, local_ensemble: bool = True) -> Corners:
    """The corners :func:`upsamplers.base.ensemble_query` blends, as indices and weights.

    The shifted coordinates equal ``corner_queries``' (the same float32 shifts,
    all corners at once), the pixel centres ``make_coord``'s, and the weights
    come from ``area_weights``, as in the per-query form.
    """
    vs, eps = ((-1, 1), EPS_SHIFT) if local_ensemble else ((0,), 0.0)
    ry, rx = 1.0 / h, 1.0 / w
    shifts = coord.new_tensor([[vy * ry + eps, vx * rx + eps] for vy in vs for vx in vs])
    shifted = (coord + shifts.view(-1, *[1] * (coord.dim() - 1), 2)).clamp_(-CLAMP, CLAMP)
    row, col = nearest_index(shifted, (h, w)).unbind(-1)
    rel = (coord - pixel_centres(row, col, h, w, coord)) * coord.new_tensor([h, w])
    weight = torch.stack(area_weights(rel.unbind(0), local_ensemble))
    return Corners(row, col, rel, weight)


def _fused_linear():
    """oneDNN's linear with the bias and ReLU fused (``torch.ops.mkldnn._linear_pointwise``),
    if this torch has it and it gives ``F.linear``'s result; else None."""
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return None
    try:
        g = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(*s, generator=g) for s in ((64, 32), (16, 32), (16,)))
        ok = torch.allclose(op(x, w, b, "relu", [None], ""), F.linear(x, w, b).relu(), atol=1e-5)
    except (RuntimeError, TypeError):
        return None
    return op if ok else None


_FUSED_LINEAR = _fused_linear()


def run_mlp(layers: nn.Sequential, x: torch.Tensor, rows: int | None = None) -> torch.Tensor:
    """``layers`` (Linear and ReLU modules) on ``x (N, in)`` without autograd.

    On the CPU in float32 each Linear and the ReLU after it run as one oneDNN
    kernel (:func:`_fused_linear`: no separate pass for the bias and the ReLU),
    ``rows`` (default :data:`MLP_ROWS`) rows at a time; elsewhere ``F.linear``
    and an in-place ReLU on all rows at once.
    """
    fused = _FUSED_LINEAR is not None and x.device.type == "cpu" and x.dtype == torch.float32
    rows = (rows or MLP_ROWS) if fused else x.shape[0]
    if x.shape[0] > rows:
        parts = [run_mlp(layers, x[i:i + rows], rows) for i in range(0, x.shape[0], rows)]
        return torch.cat(parts)
    mods = list(layers)
    i = 0
    while i < len(mods):
        layer = mods[i]
        relu = i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU)
        if isinstance(layer, nn.ReLU):
            x = x.relu_()
        elif fused:
            x = _FUSED_LINEAR(x, layer.weight, layer.bias, "relu" if relu else "none", [None], "")
        else:
            x = F.linear(x, layer.weight, layer.bias)
            x = x.relu_() if relu else x
        i += 2 if relu and not isinstance(layer, nn.ReLU) else 1
    return x


class Scratch:
    """Buffers reused by the blocks of one chunk: ``get(name, *shape)`` is a view of
    the first ``prod(shape)`` elements of buffer ``name``, grown when too small."""

    def __init__(self, like: torch.Tensor):
        self.like = like
        self.bufs: dict[str, torch.Tensor] = {}

    def get(self, name: str, *shape: int) -> torch.Tensor:
        n = math.prod(shape)
        buf = self.bufs.get(name)
        if buf is None or buf.numel() < n:
            buf = self.bufs[name] = self.like.new_empty(n)
        return buf[:n].view(shape)


def blocks(n: int, like: torch.Tensor):
    """``(i, j)`` slices covering ``range(n)``: :data:`QUERY_BLOCK` at a time on the CPU,
    all at once elsewhere (a GPU wants few, large kernels; the chunk bounds the memory)."""
    size = QUERY_BLOCK if like.device.type == "cpu" else max(n, 1)
    return ((i, min(i + size, n)) for i in range(0, n, size))
