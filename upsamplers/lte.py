"""LTE: local texture estimator (Lee and Jin, CVPR 2022; github jaewon-lee-b/lte).

Two 3x3 convolutions turn the feature map into amplitudes (``coef``) and
frequencies (``freq``), ``hidden_dim`` channels each. For each of LIIF's four
corners, with ``delta = (coord - centre) * (h, w)`` the query's offset from the
corner feature's centre and ``c = cell * (h, w)`` the cell (both in units of half
an LR pixel, as in the reference: ``c = 2 / s``), frequency pairs
``(f_2k, f_2k+1)`` (channels 2k and 2k+1, row then column) give

    x_k = f_2k * delta_y + f_2k+1 * delta_x + phase(c)_k,   k < hidden_dim / 2
    input = coef * [cos(pi x), sin(pi x)]

which an MLP (256 -> 256 x3 -> 3) decodes; the corners are blended with LIIF's
area weights, and the input image sampled bilinearly (border padding,
align_corners=False) at the query is added. Reference configuration: 493,827
parameters. State-dict keys: ``encoder.*``, ``coef.*``, ``freq.*``,
``phase.weight``, ``imnet.layers.<i>.*``.

Without autograd :meth:`LTE.prepare` returns a :class:`~upsamplers.bands.BandedMap`
of both convolutions as one (amplitudes, then pi times the even and then the
odd frequency channels), computed on the LR rows each chunk of queries touches; a
query reads one row of it per corner, its phase is computed once for the four
corners, ``sin(pi x)`` is taken as ``cos(pi x - pi/2)`` (one contiguous cos per
row; equal within the float rounding of the argument), and the four corners of
a block of queries go through the MLP as one matrix product
(:mod:`upsamplers.bands`). With autograd (training) the
per-corner form below runs.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from upsamplers import UPSAMPLERS
from upsamplers.bands import (BandedMap, Scratch, blocks, conv_band, ensemble_corners, fast_paths_on,
                              gather_rows, run_mlp)
from upsamplers.base import ArbitraryScaleUpsampler, ensemble_query, sample_nearest
from upsamplers.mlp import MLP


class LTEFeatures(NamedTuple):
    """What :meth:`LTE.gen_feat` returns: the encoder map and its amplitude/frequency maps."""

    feat: torch.Tensor
    coef: torch.Tensor
    freq: torch.Tensor


def sample_bilinear(img: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of ``img (B, C, h, w)`` at ``coord (B, Q, 2)`` (border padding): ``(B, Q, C)``."""
    out = F.grid_sample(img, coord.flip(-1).unsqueeze(1), mode="bilinear",
                        padding_mode="border", align_corners=False)
    return out[:, :, 0, :].permute(0, 2, 1)


@UPSAMPLERS.register("lte")
class LTE(ArbitraryScaleUpsampler):
    def __init__(self, encoder, hidden_dim: int = 256,
                 hidden_list: Sequence[int] = (256, 256, 256)):
        super().__init__(encoder)
        if hidden_dim % 2:
            raise ValueError(f"LTE hidden_dim must be even, got {hidden_dim}")
        c = encoder.out_dim
        self.coef = nn.Conv2d(c, hidden_dim, 3, padding=1)
        self.freq = nn.Conv2d(c, hidden_dim, 3, padding=1)
        self.phase = nn.Linear(2, hidden_dim // 2, bias=False)
        self.imnet = MLP(hidden_dim, 3, list(hidden_list))

    def prepare(self, feat: torch.Tensor) -> LTEFeatures | BandedMap:
        """Amplitude and frequency maps; without autograd a :class:`BandedMap` of
        ``[coef | pi * freq even | pi * freq odd]`` channels, computed as the queries need it."""
        if fast_paths_on():
            order = torch.cat([torch.arange(0, self.freq.out_channels, 2),
                               torch.arange(1, self.freq.out_channels, 2)]).to(feat.device)
            weight = torch.cat([self.coef.weight, math.pi * self.freq.weight[order]])
            bias = torch.cat([self.coef.bias, math.pi * self.freq.bias[order]])
            return BandedMap(feat, conv_band(weight, bias), 1)
        return LTEFeatures(feat, self.coef(feat), self.freq(feat))

    def query_rgb(self, inp, feat: LTEFeatures | BandedMap, coord, cell):
        h, w = feat.shape[-2:] if isinstance(feat, BandedMap) else feat.feat.shape[-2:]
        rel_cell = cell * cell.new_tensor([h, w])
        phase = self.phase(rel_cell)  # (B, Q, hidden/2), the same for every corner
        if isinstance(feat, BandedMap):
            return self._query_banded(feat, coord, phase) + sample_bilinear(inp, coord)

        def predict_corner(shifted, rel_coord):
            q_coef = sample_nearest(feat.coef, shifted)
            q_freq = sample_nearest(feat.freq, shifted)
            pairs = q_freq.unflatten(-1, (-1, 2))  # (B, Q, hidden/2, 2): (f_2k, f_2k+1)
            x = (pairs * rel_coord.unsqueeze(-2)).sum(dim=-1) + phase
            x = torch.cat([torch.cos(math.pi * x), torch.sin(math.pi * x)], dim=-1)
            return self.imnet(q_coef * x)

        out = ensemble_query(coord, h, w, True, predict_corner)
        return out + sample_bilinear(inp, coord)

    def _query_banded(self, feat: BandedMap, coord, phase):
        """The blended MLP output on a band: every corner of a block of queries in one pass."""
        b, q = coord.shape[:2]
        half = phase.shape[-1]
        corners = ensemble_corners(coord, *feat.shape[-2:])
        r0, r1 = int(corners.row.min()), int(corners.row.max()) + 1
        table, idx = gather_rows(feat.rows(r0, r1), corners.row, corners.col, r0)
        k = idx.shape[0]
        idx, rel, weight = idx.view(k, -1), corners.rel.view(k, -1, 2), corners.weight.view(k, -1, 1)
        phase = (math.pi * phase).reshape(1, -1, half)
        out = coord.new_empty(b * q, self.imnet.out_dim)
        bufs = Scratch(coord)  # the block's gathered rows, phases and basis, reused
        for i, j in blocks(b * q, coord):
            n = j - i
            g = torch.index_select(table, 0, idx[:, i:j].reshape(-1), out=bufs.get("g", k * n, table.shape[1]))
            g = g.view(k, n, -1)
            coef, f_y, f_x = g[..., :2 * half], g[..., 2 * half:3 * half], g[..., 3 * half:]
            # [x, x - pi/2] in one contiguous buffer, so that one in-place cos gives
            # [cos x, sin x]: cos and sin written into the halves of each row (strided
            # outputs) ran ~13x slower on two threads (benchmarks/bench_lte_parts.py).
            basis = bufs.get("basis", k, n, 2, half)
            x = torch.addcmul(phase[:, i:j], f_y, rel[:, i:j, :1], out=basis[:, :, 0])
            x.addcmul_(f_x, rel[:, i:j, 1:])
            torch.sub(x, math.pi / 2, out=basis[:, :, 1])
            basis = basis.view(k, n, 2 * half).cos_().mul_(coef)
            y = run_mlp(self.imnet.layers, basis.view(k * n, -1)).view(k, n, -1)
            torch.sum(y.mul_(weight[:, i:j]), dim=0, out=out[i:j])
        return out.view(b, q, -1)
