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

Inference reorders the last product
-----------------------------------
With ``g`` the weight MLP's last hidden vector, ``A, b`` its last Linear, and
``u`` the unfolded feature, the output is ``rgb_j = sum_i u_i (A g + b)_{i,j}
= sum_k g_k (sum_i u_i A_{(i,j),k}) + sum_i u_i b_{(i,j)}``. The brackets are a
3x3 convolution of the feature map (``3 * (hidden + 1)`` output channels), so
without autograd :meth:`MetaSR.prepare` computes them once per LR pixel
(:class:`MetaSRFeatures`) and a query costs the small MLP up to ``g`` plus a
``3 x hidden`` product, instead of the ``hidden x 9C*3`` layer and the ``9C x
3`` product per HR pixel: the embedded evaluation decodes ~4x faster. Same
function and weights (sums in another order, ~1e-6; tests/test_upsamplers.py);
training (autograd on) keeps the per-query form, which is cheaper when queries
are few (2304 per 48x48 patch). The map holds ``3 * (hidden + 1)`` channels per
LR pixel, so it is used only when that is no more than the ``9C`` channels of
the unfolded map the per-query form builds: at the embedded widths (hidden 64,
C 24: 195 <= 216) it is; at the paper's (hidden 256, C 64: 771 > 576) it is not,
because on a 2040 x 1356 image at x2 the 771-channel map alone is 2.1 GB and
EDSR-MetaSR peaked at 5.0 GB with it (benchmarks/bench_eval_memory.py).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

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


class MetaSRFeatures(NamedTuple):
    """What :meth:`MetaSR.prepare` returns without autograd: the reordered last product."""

    proj: torch.Tensor  # (B, 3 * hidden, h, w): sum_i u_i A_{(i,j),k} at channel j * hidden + k
    bias: torch.Tensor  # (B, 3, h, w): sum_i u_i b_{(i,j)}


@UPSAMPLERS.register("metasr")
class MetaSR(ArbitraryScaleUpsampler):
    def __init__(self, encoder, hidden_list: Sequence[int] = (256,)):
        super().__init__(encoder)
        self.imnet = MLP(3, encoder.out_dim * 9 * 3, list(hidden_list))

    def prepare(self, feat: torch.Tensor):
        """Without autograd, and when the map is no wider than the unfolded one, the last
        Linear folded into the feature map (see the module doc)."""
        last = self.imnet.layers[-1]
        c, hidden = feat.shape[1], last.in_features
        if torch.is_grad_enabled() or 3 * (hidden + 1) > 9 * c:
            return feat
        # weight row (c * 9 + k) * 3 + j  ->  conv output j * hidden + k', input c, tap k
        w = last.weight.view(c, 9, 3, hidden).permute(2, 3, 0, 1).reshape(3 * hidden, c, 3, 3)
        b = last.bias.view(c, 9, 3).permute(2, 0, 1).reshape(3, c, 3, 3)
        out = F.conv2d(feat, torch.cat([w, b]), padding=1)
        return MetaSRFeatures(out[:, :3 * hidden], out[:, 3 * hidden:])

    def query_rgb(self, inp, feat, coord, cell):
        h, w = feat[0].shape[-2:] if isinstance(feat, MetaSRFeatures) else feat.shape[-2:]
        read_at, meta_in = meta_positions(coord, cell, h, w)
        if isinstance(feat, MetaSRFeatures):
            g = self.imnet.layers[:-1](meta_in)  # (B, Q, hidden)
            proj = sample_nearest(feat.proj, read_at).unflatten(-1, (3, g.shape[-1]))
            return (proj * g.unsqueeze(-2)).sum(-1) + sample_nearest(feat.bias, read_at)
        feat = unfold3x3(feat)
        q_feat = sample_nearest(feat, read_at)  # (B, Q, 9C)
        weights = self.imnet(meta_in).unflatten(-1, (feat.shape[1], 3))  # (B, Q, 9C, 3)
        return torch.matmul(q_feat.unsqueeze(-2), weights).squeeze(-2)
