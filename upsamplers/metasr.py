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
"""
from __future__ import annotations

from typing import Sequence

import torch

from upsamplers import UPSAMPLERS
from upsamplers.base import CLAMP, EPS_SHIFT, ArbitraryScaleUpsampler, feature_grid, sample_nearest
from upsamplers.liif import unfold3x3
from upsamplers.mlp import MLP


def meta_positions(coord: torch.Tensor, cell: torch.Tensor, h: int, w: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each query reads and what the weight MLP sees.

    Returns ``(read_at, meta_in)``: ``read_at (B, Q, 2)`` is a coordinate inside
    the LR pixel holding the HR pixel's top-left corner (nudged by 1e-6 so a
    corner on a pixel border belongs to the pixel below/right), and ``meta_in
    (B, Q, 3)`` is ``(offset_y, offset_x, cell_y * h / 2)`` with offsets from
    that LR pixel's top-left corner in LR pixels.
    """
    corner = coord - cell / 2
    read_at = (corner + EPS_SHIFT).clamp(-CLAMP, CLAMP)
    grid = feature_grid(coord.shape[0], h, w, coord)
    top_left = grid - grid.new_tensor([1.0 / h, 1.0 / w]).view(1, 2, 1, 1)
    offset = (corner - sample_nearest(top_left, read_at)) * coord.new_tensor([h / 2, w / 2])
    inv_scale = cell[..., :1] * (h / 2)
    return read_at, torch.cat([offset, inv_scale], dim=-1)


@UPSAMPLERS.register("metasr")
class MetaSR(ArbitraryScaleUpsampler):
    def __init__(self, encoder, hidden_list: Sequence[int] = (256,)):
        super().__init__(encoder)
        self.imnet = MLP(3, encoder.out_dim * 9 * 3, list(hidden_list))

    def query_rgb(self, inp, feat, coord, cell):
        h, w = feat.shape[-2:]
        feat = unfold3x3(feat)
        read_at, meta_in = meta_positions(coord, cell, h, w)
        q_feat = sample_nearest(feat, read_at)  # (B, Q, 9C)
        weights = self.imnet(meta_in).unflatten(-1, (feat.shape[1], 3))  # (B, Q, 9C, 3)
        return torch.matmul(q_feat.unsqueeze(-2), weights).squeeze(-2)
