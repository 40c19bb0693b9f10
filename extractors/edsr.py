"""EDSR-baseline feature extractor (Lim et al., 2017) without its upsampling tail.

The encoder of LIIF/LTE's ``edsr-baseline`` with ``no_upsampling=True``
(yinboc/liif ``models/edsr.py``): a 3x3 head conv, ``n_resblocks`` residual
blocks (conv-ReLU-conv, scaled by ``res_scale``), a 3x3 body conv and a global
skip from the head. Output: ``n_feats`` channels at the input's size.

State-dict keys equal the reference's, so released ``edsr-baseline-liif`` /
``edsr-baseline-lte`` encoders load with ``strict=True``::

    sub_mean.{weight,bias}  add_mean.{weight,bias}  head.0.*
    body.<i>.body.{0,2}.*   (i < n_resblocks)       body.<n_resblocks>.*

``sub_mean``/``add_mean`` (24 parameters, frozen) exist only for that
compatibility: the reference forward pass does not apply them, so inputs are the
harness's normalised images, ``(x - 0.5) / 0.5``, passed straight to ``head``.
Default configuration: 1,220,440 parameters.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from extractors import EXTRACTORS
from extractors.layers import HeadBodyTrunk, check_no_upsampling, same_conv


class ResBlock(nn.Module):
    """conv3x3 -> ReLU -> conv3x3, times ``res_scale``, plus the input."""

    def __init__(self, n_feats: int, kernel_size: int = 3, res_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(
            same_conv(n_feats, n_feats, kernel_size),
            nn.ReLU(inplace=True),
            same_conv(n_feats, n_feats, kernel_size),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.body(x)
        if self.res_scale != 1:
            res = res * self.res_scale
        return res + x


@EXTRACTORS.register("edsr-baseline")
class EDSRBaseline(HeadBodyTrunk):
    """EDSR(-baseline) encoder: ``(B, 3, H, W) -> (B, n_feats, H, W)``."""

    def __init__(self, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0,
                 kernel_size: int = 3, rgb_range: float = 1.0, n_colors: int = 3,
                 no_upsampling: bool = True):
        super().__init__()
        check_no_upsampling(no_upsampling)
        self._build_trunk([ResBlock(n_feats, kernel_size, res_scale) for _ in range(n_resblocks)],
                          n_feats, kernel_size, rgb_range, n_colors)
