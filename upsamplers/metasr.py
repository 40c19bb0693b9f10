"""Meta-SR's meta-upscale module (Hu et al., CVPR 2019), as in github jaewon-lee-b/lte.

Each query (an HR pixel) reads the LR pixel that contains its top-left corner
``coord - cell / 2``. An MLP (3 -> 256 -> 9C*3) maps

    (offset_y, offset_x, 1 / s)

to a ``(9C, 3)`` weight matrix, where the offsets are the corner's position
inside that LR pixel, in LR pixels (in [0, 1)), and ``1 / s = cell_y * h / 2``
(so it comes from the cell, not from a scale argument); the output is the
3x3-unfolded feature vector of the LR pixel times that matrix. No local
ensemble, no skip. Reference configuration: 445,120 parameters. State-dict
keys: ``encoder.*``, ``imnet.layers.<i>.*``.

Inference without autograd
--------------------------
With autograd (training) the per-query form above runs. Without it
:meth:`MetaSR.prepare` returns a :class:`~upsamplers.bands.BandedMap` of the
last Linear folded into the feature map: with ``g`` the weight MLP's last
hidden vector, ``A, b`` its last Linear and ``u`` the unfolded feature,
``rgb_j = sum_i u_i (A g + b)_{i,j} = sum_k g_k (sum_i u_i A_{(i,j),k}) + sum_i
u_i b_{(i,j)}``, and the brackets are a 3x3 convolution of the feature map with
``3 * (hidden + 1)`` output channels, computed only on the LR rows the current
chunk of queries touches. A chunk is then decoded one of two ways:

- Few distinct offsets (integer scales: ``s`` row offsets and ``s`` column
  offsets; :func:`offset_groups`). The first Linear is linear in ``(offset_y,
  offset_x, 1/s)``, so it separates into a row part ``W_y offset_y``, a column
  part ``W_x offset_x`` and a constant ``W_s / s + b``: it is evaluated per
  distinct row and column offset, the rest of the MLP once per distinct
  (row, column) pair, and each pair's ``9C x 3`` weights become 3 output
  channels of a 3x3 convolution of the band: a query reads 3 numbers. Offsets
  that differ by less than the float32 rounding of the per-query form's own
  offsets (:data:`OFFSET_TOL` times the LR size) count as one.
- Otherwise, per query: the MLP up to ``g`` and a ``3 x hidden`` product with
  the folded band.

Same function and weights either way (sums in another order;
tests/test_upsamplers.py pins both to the per-query form); memory grows with
the chunk, not with the image.
"""
from __future__ import annotations

from typing import Sequence

import torch

from upsamplers import UPSAMPLERS
from upsamplers.bands import (BandedMap, band_rows, blocks, conv_band, fast_paths_on, gather_rows,
                              nearest_index, pixel_centres, run_mlp)
from upsamplers.base import CLAMP, EPS_SHIFT, ArbitraryScaleUpsampler, feature_grid, sample_nearest
from upsamplers.liif import unfold3x3
from upsamplers.mlp import MLP


#: Offsets (in LR pixels) closer than ``OFFSET_TOL * max(h, w)`` are one offset on the
#: few-offsets path. The per-query form's own offsets carry float32 rounding of up
#: to ~4e-8 * max(h, w) (coordinates in [-1, 1] scaled by ``h / 2``; measured on
#: the query grids of a 2040 x 1356 image at x2..x30), distinct offsets of a grid
#: differ by at least 1 / (number of offsets).
OFFSET_TOL = 5e-7


def _corner(coord: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The HR pixel's top-left corner, and where to read (nudged by 1e-6, clamped)."""
    corner = coord - cell / 2
    return corner, (corner + EPS_SHIFT).clamp(-CLAMP, CLAMP)


def _meta_in(corner, top_left, cell, h: int, w: int) -> torch.Tensor:
    offset = (corner - top_left) * corner.new_tensor([h / 2, w / 2])
    return torch.cat([offset, cell[..., :1] * (h / 2)], dim=-1)


def meta_positions(coord: torch.Tensor, cell: torch.Tensor, h: int, w: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each query reads and what the weight MLP sees.

    Returns ``(read_at, meta_in)``: ``read_at (B, Q, 2)`` is a coordinate inside
    the LR pixel holding the HR pixel's top-left corner (nudged by 1e-6 so a
    corner on a pixel border belongs to the pixel below/right), and ``meta_in
    (B, Q, 3)`` is ``(offset_y, offset_x, cell_y * h / 2)`` with offsets from
    that LR pixel's top-left corner in LR pixels.
    """
    corner, read_at = _corner(coord, cell)
    grid = feature_grid(coord.shape[0], h, w, coord)
    top_left = grid - grid.new_tensor([1.0 / h, 1.0 / w]).view(1, 2, 1, 1)
    return read_at, _meta_in(corner, sample_nearest(top_left, read_at), cell, h, w)


def meta_pixels(coord: torch.Tensor, cell: torch.Tensor, h: int, w: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`meta_positions` as pixel indices: ``(row, col, meta_in)``, rows and columns ``(B, Q)``."""
    corner, read_at = _corner(coord, cell)
    row, col = nearest_index(read_at, (h, w)).unbind(-1)
    top_left = pixel_centres(row, col, h, w, coord) - coord.new_tensor([1.0 / h, 1.0 / w])
    return row, col, _meta_in(corner, top_left, cell, h, w)


def offset_groups(v: torch.Tensor, tol: float, most: int
                  ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Group the values of ``v (N,)`` that lie within ``tol`` of each other.

    Returns ``(values, group)``: each group's midpoint ``(G,)`` and each value's
    group ``(N,)``; None if there are more than ``most`` groups or a group
    (a run of sorted values with gaps <= tol) spans more than ``tol``.
    """
    sv, order = v.sort()
    gap = sv[1:] - sv[:-1] > tol
    starts = torch.cat([gap.new_ones(1), gap])
    if int(starts.sum()) > most:
        return None
    first, last = sv[starts], sv[torch.cat([gap, gap.new_ones(1)])]
    if float((last - first).max()) > tol:
        return None
    group = torch.empty_like(order)
    group[order] = starts.cumsum(0) - 1
    return first + (last - first) / 2, group


@UPSAMPLERS.register("metasr")
class MetaSR(ArbitraryScaleUpsampler):
    def __init__(self, encoder, hidden_list: Sequence[int] = (256,)):
        super().__init__(encoder)
        self.imnet = MLP(3, encoder.out_dim * 9 * 3, list(hidden_list))

    def prepare(self, feat: torch.Tensor) -> torch.Tensor | BandedMap:
        """The encoder map; without autograd a :class:`BandedMap` of the last Linear folded
        into it (``3 * hidden`` channels ``j * hidden + k``, then 3 bias channels ``j``)."""
        if not fast_paths_on():
            return feat
        last = self.imnet.layers[-1]
        c, hidden = feat.shape[1], last.in_features
        # weight row (c * 9 + k) * 3 + j  ->  conv output j * hidden + k', input c, tap k
        w = last.weight.view(c, 9, 3, hidden).permute(2, 3, 0, 1).reshape(3 * hidden, c, 3, 3)
        b = last.bias.view(c, 9, 3).permute(2, 0, 1).reshape(3, c, 3, 3)
        return BandedMap(feat, conv_band(torch.cat([w, b]), None), 1)

    def query_rgb(self, inp, feat, coord, cell):
        if isinstance(feat, BandedMap):
            return self._query_banded(feat, coord, cell)
        h, w = feat.shape[-2:]
        read_at, meta_in = meta_positions(coord, cell, h, w)
        feat = unfold3x3(feat)
        q_feat = sample_nearest(feat, read_at)  # (B, Q, 9C)
        weights = self.imnet(meta_in).unflatten(-1, (feat.shape[1], 3))  # (B, Q, 9C, 3)
        return torch.matmul(q_feat.unsqueeze(-2), weights).squeeze(-2)

    def _query_banded(self, feat: BandedMap, coord, cell):
        b, q = coord.shape[:2]
        h, w = feat.shape[-2:]
        row, col, meta_in = meta_pixels(coord, cell, h, w)
        r0, r1 = int(row.min()), int(row.max()) + 1
        pairs = self._pair_weights(meta_in.reshape(-1, 3), OFFSET_TOL * max(h, w))
        if pairs is not None:  # few offsets: 3 channels per (row, column) offset pair
            weight, pair = pairs
            n = weight.shape[0] // 3
            table, idx = gather_rows(band_rows(feat.feat, r0, r1, conv_band(weight, None), 1), row, col, r0)
            return table.reshape(-1, 3).index_select(0, (idx.view(-1) * n + pair)).view(b, q, 3)
        g = run_mlp(self.imnet.layers[:-1], meta_in.reshape(-1, 3))  # (B * Q, hidden)
        table, idx = gather_rows(feat.rows(r0, r1), row, col, r0)
        idx, hidden = idx.view(-1), g.shape[-1]
        out = coord.new_empty(b * q, 3)
        for i, j in blocks(b * q, coord):
            p = table.index_select(0, idx[i:j])
            proj = p[:, :3 * hidden].view(j - i, 3, hidden)
            torch.add((proj * g[i:j].unsqueeze(1)).sum(-1), p[:, 3 * hidden:], out=out[i:j])
        return out.view(b, q, 3)

    def _pair_weights(self, meta_in: torch.Tensor, tol: float):
        """Convolution weights ``(3 P, C, 3, 3)`` for the P distinct offset pairs of the chunk
        and each query's pair ``(N,)``, or None when the offsets are too many (or the
        queries' cells differ): then the folded map is cheaper."""
        layers = self.imnet.layers
        most = layers[-1].in_features + 1  # no more output channels than the folded map
        inv_scale = meta_in[:, 2]
        if not bool((inv_scale == inv_scale[0]).all()):
            return None
        rows = offset_groups(meta_in[:, 0], tol, most)
        cols = offset_groups(meta_in[:, 1], tol, most) if rows is not None else None
        if cols is None or len(rows[0]) * len(cols[0]) > most:
            return None
        (ys, row_of), (xs, col_of) = rows, cols
        first = layers[0]
        const = first.weight[:, 2] * inv_scale[0] + first.bias
        pre = (ys[:, None] * first.weight[:, 0] + const)[:, None] + xs[:, None] * first.weight[:, 1]
        weights = run_mlp(layers[1:], pre.reshape(-1, pre.shape[-1]))  # (P, 9C * 3)
        c = weights.shape[1] // 27
        # weight (c * 9 + k) * 3 + j of pair p -> conv output p * 3 + j, input c, tap k
        conv = weights.view(-1, c, 9, 3).permute(0, 3, 1, 2).reshape(-1, c, 3, 3)
        return conv, row_of * len(xs) + col_of
