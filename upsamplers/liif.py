"""LIIF: local implicit image function (Chen et al., CVPR 2021; github yinboc/liif).

For a query at ``coord`` with HR cell ``cell``, each of the four nearest LR
feature vectors (3x3-unfolded, zero padding: 9C channels) is decoded by an MLP
together with the query's offset from that feature's centre and the cell, both
multiplied by ``(h, w)`` (units of half an LR pixel: the cell becomes ``2 / s``,
as in the reference); the four predictions are
blended with bilinear-like area weights (:func:`upsamplers.base.ensemble_query`).
Reference configuration: MLP 9*64+2+2 = 580 -> 256 x4 -> 3, 346,883 parameters.
State-dict keys: ``encoder.*``, ``imnet.layers.<i>.*``.

The first layer, evaluated once per LR pixel
---------------------------------------------
The reference concatenates ``[unfolded feature (9C), rel_coord (2), rel_cell
(2)]`` for every query and corner and applies the MLP's first Linear ``W`` to
it. ``W`` splits by columns into ``[W_f | W_coord | W_cell]``, and ``W_f``
applied to the 3x3-unfolded feature of a pixel is a 3x3 convolution (zero
padding) of the feature map with ``W_f`` reshaped to ``(hidden, C, 3, 3)``.
So :meth:`LIIF.prepare` runs that convolution (bias included) once per LR
pixel, and each query reads the projected ``hidden``-channel map at its
corner's pixel and adds ``W_coord rel_coord + W_cell rel_cell``. This is the
same function with the same parameters and state-dict keys (sums taken in
another order: outputs agree with the reference form to ~1e-6, see
tests/test_upsamplers.py), but queries outnumber LR pixels (4 corners per
query, and s^2 queries per pixel at evaluation; 4 x 2304 corner reads per 48x48
training patch), so it does fewer multiply-adds and never builds the 9C-wide
per-query vectors: the embedded evaluation decodes ~3x faster. FLOP counts of
the extractors, which the tables report, are unaffected.

Without autograd :meth:`LIIF.prepare` does not run that convolution on the
whole image: it returns a :class:`~upsamplers.bands.BandedMap` that runs it on
the LR rows each chunk of queries touches, and the four corners of a block of
queries go through the MLP as one matrix product (:mod:`upsamplers.bands`).
With autograd (training) the whole-map convolution and the per-corner MLP run as
before.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from upsamplers import UPSAMPLERS
from upsamplers.bands import (BandedMap, blocks, conv_band, ensemble_corners, fast_paths_on, gather_rows,
                              run_mlp)
from upsamplers.base import ArbitraryScaleUpsampler, ensemble_query, sample_nearest
from upsamplers.mlp import MLP


def unfold3x3(feat: torch.Tensor) -> torch.Tensor:
    """Each pixel's 3x3 neighbourhood stacked on channels (zero padding): ``(B, 9C, h, w)``.

    Channel ``c * 9 + k`` holds channel ``c`` at neighbour ``k`` (row-major,
    ``k = 4`` is the pixel itself), the order of ``F.unfold``.
    """
    b, c, h, w = feat.shape
    return F.unfold(feat, 3, padding=1).view(b, c * 9, h, w)


@UPSAMPLERS.register("liif")
class LIIF(ArbitraryScaleUpsampler):
    def __init__(self, encoder, hidden_list: Sequence[int] = (256, 256, 256, 256),
                 local_ensemble: bool = True, feat_unfold: bool = True,
                 cell_decode: bool = True):
        super().__init__(encoder)
        self.local_ensemble = local_ensemble
        self.feat_unfold = feat_unfold
        self.cell_decode = cell_decode
        in_dim = encoder.out_dim * (9 if feat_unfold else 1) + 2 + (2 if cell_decode else 0)
        self.imnet = MLP(in_dim, 3, list(hidden_list))

    def prepare(self, feat: torch.Tensor) -> torch.Tensor | BandedMap:
        """The first Linear's feature part (and bias) on every LR pixel: ``(B, hidden, h, w)``;
        without autograd a :class:`BandedMap` of it, computed as the queries need it."""
        first = self.imnet.layers[0]
        k = 3 if self.feat_unfold else 1
        w_feat = first.weight[:, :feat.shape[1] * k * k]  # input c*9 + ky*3 + kx (F.unfold order)
        w_feat = w_feat.reshape(first.out_features, feat.shape[1], k, k)
        if fast_paths_on():
            return BandedMap(feat, conv_band(w_feat, first.bias), k // 2)
        return F.conv2d(feat, w_feat, first.bias, padding=k // 2)

    def query_rgb(self, inp, feat, coord, cell):
        """``feat`` is what :meth:`prepare` returned (``gen_feat`` does both)."""
        h, w = feat.shape[-2:]
        first = self.imnet.layers[0]
        n_feat = first.in_features - 2 - (2 if self.cell_decode else 0)
        w_rest = first.weight[:, n_feat:].t()  # rel_coord (and rel_cell) columns
        rel_cell = cell * cell.new_tensor([h, w]) if self.cell_decode else None
        rest = self.imnet.layers[1:]
        if isinstance(feat, BandedMap):
            return self._query_banded(feat, coord, rel_cell, w_rest)

        def predict_corner(shifted, rel_coord):
            q = sample_nearest(feat, shifted)
            tail = rel_coord if rel_cell is None else torch.cat([rel_coord, rel_cell], dim=-1)
            x = torch.addmm(q.reshape(-1, q.shape[-1]), tail.reshape(-1, tail.shape[-1]), w_rest)
            return rest(x).view(*q.shape[:-1], -1)

        return ensemble_query(coord, h, w, self.local_ensemble, predict_corner)

    def _query_banded(self, feat: BandedMap, coord, rel_cell, w_rest):
        """:meth:`query_rgb` on a band: every corner of a block of queries in one MLP pass."""
        b, q = coord.shape[:2]
        corners = ensemble_corners(coord, *feat.shape[-2:], self.local_ensemble)
        r0, r1 = int(corners.row.min()), int(corners.row.max()) + 1
        table, idx = gather_rows(feat.rows(r0, r1), corners.row, corners.col, r0)
        k = idx.shape[0]
        tail = corners.rel
        if rel_cell is not None:
            tail = torch.cat([tail, rel_cell.expand(k, b, q, 2)], dim=-1)
        idx, tail, weight = idx.view(k, -1), tail.view(k, b * q, -1), corners.weight.view(k, -1, 1)
        out = coord.new_empty(b * q, self.imnet.out_dim)
        for i, j in blocks(b * q, coord):
            x = table.index_select(0, idx[:, i:j].reshape(-1))
            x = x.addmm_(tail[:, i:j].reshape(-1, tail.shape[-1]), w_rest)
            y = run_mlp(self.imnet.layers[1:], x).view(k, j - i, -1)
            torch.sum(y.mul_(weight[:, i:j]), dim=0, out=out[i:j])
        return out.view(b, q, -1)
