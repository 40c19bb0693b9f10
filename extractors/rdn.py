"""RDN feature extractor (Zhang et al., 2018) without its upsampling net.

The encoder of LIIF/LTE's ``rdn`` with ``no_upsampling=True`` (yinboc/liif
``models/rdn.py``): two shallow 3x3 convs, ``D`` residual dense blocks of ``C``
densely connected conv-ReLU layers (growth ``G``) with 1x1 local feature fusion
and a local skip, global feature fusion (1x1 over all block outputs, then 3x3)
and a global skip from the *first* shallow conv. Output: ``G0`` channels.

State-dict keys equal the reference's, so released ``rdn-liif`` / ``rdn-lte``
encoders load with ``strict=True``::

    SFENet1.*  SFENet2.*  RDBs.<i>.convs.<c>.conv.0.*  RDBs.<i>.LFF.*  GFF.{0,1}.*

Default configuration (G0 64, kernel 3, config B: D 16, C 8, G 64):
21,973,952 parameters.

Memory at inference. The global fusion's 1x1 conv reads the concatenation of
all D block outputs (D * G0 = 1024 channels); holding the D outputs and their
concatenation costs 2 x 1024 channels per pixel, the largest buffers of the
network (2.2 GB on a 518 x 518 tile). Without autograd the 1x1 conv is applied
block by block instead, each block's output times its slice of the weight,
summed into a G0-channel accumulator as the blocks run: the same function and
FLOPs (sums in another order, ~1e-6; tests/test_extractors.py). With autograd
(training) the concatenated form runs, as in the reference.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from extractors import EXTRACTORS
from extractors.layers import check_no_upsampling

RDN_CONFIGS = {"A": (20, 6, 32), "B": (16, 8, 64)}  # (D blocks, C convs per block, G growth)


class DenseLayer(nn.Module):
    """conv-ReLU whose output is concatenated to its input (the reference's ``RDB_Conv``)."""

    def __init__(self, in_channels: int, growth: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, growth, kernel_size, padding=(kernel_size - 1) // 2),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.conv(x)), 1)


class ResidualDenseBlock(nn.Module):
    def __init__(self, g0: int, growth: int, n_layers: int, kernel_size: int = 3):
        super().__init__()
        self.convs = nn.Sequential(*[DenseLayer(g0 + c * growth, growth, kernel_size) for c in range(n_layers)])
        self.LFF = nn.Conv2d(g0 + n_layers * growth, g0, 1)  # local feature fusion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LFF(self.convs(x)) + x


@EXTRACTORS.register("rdn")
class RDN(nn.Module):
    """RDN encoder: ``(B, 3, H, W) -> (B, G0, H, W)``.

    ``RDNconfig`` picks (D, C, G) from ``RDN_CONFIGS``; ``D``, ``C``, ``G`` given
    explicitly override it (used by small test/embedded profiles).
    """

    scale_aware = False
    window_size = None

    def __init__(self, G0: int = 64, RDNkSize: int = 3, RDNconfig: str = "B",
                 D: int | None = None, C: int | None = None, G: int | None = None, n_colors: int = 3,
                 no_upsampling: bool = True):
        super().__init__()
        check_no_upsampling(no_upsampling)
        d, c, g = RDN_CONFIGS[RDNconfig]
        self.D = d if D is None else D
        c = c if C is None else C
        g = g if G is None else G
        k = RDNkSize
        self.out_dim = G0
        self.SFENet1 = nn.Conv2d(n_colors, G0, k, padding=(k - 1) // 2)
        self.SFENet2 = nn.Conv2d(G0, G0, k, padding=(k - 1) // 2)
        self.RDBs = nn.ModuleList([ResidualDenseBlock(G0, g, c, k) for _ in range(self.D)])
        self.GFF = nn.Sequential(  # global feature fusion
            nn.Conv2d(self.D * G0, G0, 1),
            nn.Conv2d(G0, G0, k, padding=(k - 1) // 2),
        )

    def forward(self, x: torch.Tensor, scale=None) -> torch.Tensor:
        f1 = self.SFENet1(x)
        x = self.SFENet2(f1)
        if torch.is_grad_enabled():
            outs = []
            for block in self.RDBs:
                x = block(x)
                outs.append(x)
            return self.GFF(torch.cat(outs, 1)) + f1
        fuse, g0 = self.GFF[0], x.shape[1]  # inference: fuse block by block (module doc)
        acc = None
        for i, block in enumerate(self.RDBs):
            x = block(x)
            part = F.conv2d(x, fuse.weight[:, i * g0:(i + 1) * g0], fuse.bias if i == 0 else None)
            acc = part if acc is None else acc.add_(part)
        return self.GFF[1](acc) + f1
