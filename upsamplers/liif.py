"""LIIF: local implicit image function (Chen et al., CVPR 2021; github yinboc/liif).

For a query at ``coord`` with HR cell ``cell``, each of the four nearest LR
feature vectors (3x3-unfolded, zero padding: 9C channels) is decoded by an MLP
together with the query's offset from that feature's centre and the cell, both
multiplied by ``(h, w)`` (units of half an LR pixel: the cell becomes ``2 / s``,
as in the reference); the four predictions are
blended with bilinear-like area weights (:func:`upsamplers.base.ensemble_query`).
Reference configuration: MLP 9*64+2+2 = 580 -> 256 x4 -> 3, 346,883 parameters.
State-dict keys: ``encoder.*``, ``imnet.layers.<i>.*``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from upsamplers import UPSAMPLERS
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

    def query_rgb(self, inp, feat, coord, cell):
        h, w = feat.shape[-2:]
        if self.feat_unfold:
            feat = unfold3x3(feat)
        rel_cell = cell * cell.new_tensor([h, w]) if self.cell_decode else None

        def predict_corner(shifted, rel_coord):
            parts = [sample_nearest(feat, shifted), rel_coord]
            if rel_cell is not None:
                parts.append(rel_cell)
            return self.imnet(torch.cat(parts, dim=-1))

        return ensemble_query(coord, h, w, self.local_ensemble, predict_corner)
