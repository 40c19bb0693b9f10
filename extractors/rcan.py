"""RCAN feature extractor (Zhang et al., 2018) without its upsampling tail.

The encoder of LIIF's ``rcan`` with ``no_upsampling=True`` (yinboc/liif
``models/rcan.py``): a 3x3 head conv, ``n_resgroups`` residual groups of
``n_resblocks`` residual channel-attention blocks (conv-ReLU-conv, then channel
attention: global average pool, 1x1 squeeze by ``reduction``, ReLU, 1x1
excite, sigmoid) each closed by a 3x3 conv and a group skip, a 3x3 body conv
and a global skip from the head. Output: ``n_feats`` channels.

State-dict keys equal the reference's::

    sub_mean.*  add_mean.*  head.0.*
    body.<g>.body.<b>.body.{0,2}.*              conv-ReLU-conv of block b
    body.<g>.body.<b>.body.3.conv_du.{0,2}.*    channel attention
    body.<g>.body.<n_resblocks>.*               closing conv of group g
    body.<n_resgroups>.*                        body conv

Parameter count, a deliberate choice: we use the *reference (LIIF)
definition*, 15,295,224 parameters at the default configuration (10 x 20
blocks, 64 feats, reduction 16), including the 24 parameters of the unused
mean-shift layers. The paper's Table 3 lists 15.33M for its RCAN, within
+-0.05M of this; we match LIIF rather than guess the paper's variant so that
released-style (LIIF format) RCAN encoder checkpoints load with ``strict=True``.

Like EDSR, ``sub_mean``/``add_mean`` are in the state dict but not applied (the
calls are commented out in the reference). The reference meant to freeze them
(``self.requires_grad = False``, which in fact freezes nothing); we do freeze
them, so unused parameters never reach an optimizer or DDP's gradient check.
The reference's ``res_scale`` is unused, and so it is here.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from extractors import EXTRACTORS
from extractors.layers import HeadBodyTrunk, check_no_upsampling, same_conv


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel attention (the reference's ``CALayer``)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


class RCAB(nn.Module):
    """Residual channel-attention block: x + CA(conv(ReLU(conv(x))))."""

    def __init__(self, n_feats: int, kernel_size: int, reduction: int):
        super().__init__()
        self.body = nn.Sequential(
            same_conv(n_feats, n_feats, kernel_size),
            nn.ReLU(inplace=True),
            same_conv(n_feats, n_feats, kernel_size),
            ChannelAttention(n_feats, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class ResidualGroup(nn.Module):
    def __init__(self, n_feats: int, kernel_size: int, reduction: int, n_resblocks: int):
        super().__init__()
        self.body = nn.Sequential(
            *[RCAB(n_feats, kernel_size, reduction) for _ in range(n_resblocks)],
            same_conv(n_feats, n_feats, kernel_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


@EXTRACTORS.register("rcan")
class RCAN(HeadBodyTrunk):
    """RCAN encoder: ``(B, 3, H, W) -> (B, n_feats, H, W)``."""

    def __init__(self, n_resgroups: int = 10, n_resblocks: int = 20, n_feats: int = 64,
                 reduction: int = 16, kernel_size: int = 3, rgb_range: float = 1.0, n_colors: int = 3,
                 no_upsampling: bool = True):
        super().__init__()
        check_no_upsampling(no_upsampling)
        self._build_trunk([ResidualGroup(n_feats, kernel_size, reduction, n_resblocks)
                           for _ in range(n_resgroups)],
                          n_feats, kernel_size, rgb_range, n_colors)
