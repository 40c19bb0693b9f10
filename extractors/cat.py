"""CAT-R-2 feature extractor (Chen et al., NeurIPS 2022) without its upsampler.

The Cross Aggregation Transformer of the reference code (zhengchen1999/CAT,
``CAT`` with ``block_name='CATB_regular'``) in its CAT-R-2 configuration
(``options/Test/test_CAT_R_2_sr_x4.yml``): a 3x3 ``conv_first``, tokens with a
layer norm (``before_RG``), residual groups of cross aggregation blocks (a
3x3 conv and a skip closing each group), a final layer norm,
``conv_after_body`` plus a skip from ``conv_first``, then
``conv_before_upsample`` = Conv3x3(embed_dim -> out_dim) + LeakyReLU(0.01).
The pixel-shuffle tail (``upsample.*``, ``conv_last.*``) is dropped. As for
SwinIR in LTE, the reference's mean subtraction is not applied: the harness's
normalised input goes straight to ``conv_first``.

A block (the reference's ``CATB_regular``): pre-norm, one QKV projection whose
channels are split in two halves: the first half attends inside
``s0 x s1`` rectangle windows (H-Rwin), the second inside ``s1 x s0`` ones
(V-Rwin); odd blocks shift both by half a window (cyclic roll, Swin-style
mask). Each window adds a dynamic relative position bias, an MLP of the
(2 s - 1) offsets (``DynamicPosBias``). The locality complementary module
adds a depthwise 3x3 conv of V; then the projection, a residual, and a
pre-norm MLP with a residual.

Any ``H x W`` works: the input is padded at the bottom/right to a multiple of
``window_size`` (the least common multiple of the window sides, 16 for
CAT-R-2, the multiple the reference's test code pads to) by mirroring with the
edge repeated, as the reference's ``torch.flip`` concatenation does (repeated
for inputs smaller than the padding), and the features are cropped back.

State-dict keys equal the reference's: ``attns.<i>.rpe_biases`` and
``attns.<i>.relative_position_index`` are persistent buffers, and shifted
blocks keep the masks of the training size ``img_size`` (64 in the released
models; ``(64, 64, 64)`` each) as ``attn_mask_0`` / ``attn_mask_1``. Default
configuration: 11,628,100 parameters.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_

from extractors import EXTRACTORS
from extractors.blocks import Mlp, init_linear_and_norm
from extractors.layers import check_no_upsampling
from extractors.swinir import SHIFT_MASK_VALUE

Window = Tuple[int, int]


def window_split(x: torch.Tensor, win: Window) -> torch.Tensor:
    """``(..., H, W, C) -> (..., nW, wh * ww, C)``, windows in row-major order."""
    *lead, h, w, c = x.shape
    wh, ww = win
    x = x.reshape(*lead, h // wh, wh, w // ww, ww, c).transpose(-4, -3)
    return x.reshape(*lead, (h // wh) * (w // ww), wh * ww, c)


def window_merge(x: torch.Tensor, win: Window, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_split`: ``(..., nW, wh * ww, C) -> (..., H, W, C)``."""
    *lead, _, _, c = x.shape
    wh, ww = win
    x = x.reshape(*lead, h // wh, w // ww, wh, ww, c).transpose(-4, -3)
    return x.reshape(*lead, h, w, c)


def rect_relative_position_index(wh: int, ww: int) -> torch.Tensor:
    """``(wh*ww, wh*ww)`` int64 row of the (query minus key) offset in :func:`position_offsets`."""
    ii, jj = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
    coords = torch.stack((ii.flatten(), jj.flatten()))
    rel = coords[:, :, None] - coords[:, None, :]
    return (rel[0] + wh - 1) * (2 * ww - 1) + (rel[1] + ww - 1)


def position_offsets(wh: int, ww: int) -> torch.Tensor:
    """``((2wh-1)(2ww-1), 2)`` float offsets (dh, dw), row ``(dh+wh-1)(2ww-1) + dw+ww-1``."""
    dh, dw = torch.meshgrid(torch.arange(1 - wh, wh), torch.arange(1 - ww, ww), indexing="ij")
    return torch.stack((dh.flatten(), dw.flatten()), dim=1).float()


def rect_shift_mask(h: int, w: int, win: Window, shift: Window, device=None) -> torch.Tensor:
    """Mask ``(nW, N, N)`` for ``win``-windows on an ``h x w`` map rolled back by ``shift``.

    Pixels of the last window row/column come from up to three regions per axis
    (``[0, n-win)``, ``[n-win, n-shift)``, ``[n-shift, n)``); pairs from
    different regions get ``SHIFT_MASK_VALUE``, others 0.
    """

    def regions(n: int, size: int, s: int) -> torch.Tensor:
        idx = torch.arange(n, device=device)
        return (idx >= n - size).long() + (idx >= n - s).long()

    label = 3 * regions(h, win[0], shift[0])[:, None] + regions(w, win[1], shift[1])[None, :]
    win_label = window_split(label.view(h, w, 1).float(), win).squeeze(-1)  # (nW, N)
    differ = win_label[:, None, :] != win_label[:, :, None]
    return torch.zeros(differ.shape, device=device).masked_fill_(differ, SHIFT_MASK_VALUE)


def pad_symmetric(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad ``(B, C, H, W)`` at the bottom/right to multiples of ``multiple`` by
    mirroring with the edge repeated (``abc|cba|abc...``)."""
    for dim in (2, 3):
        target = -(-x.shape[dim] // multiple) * multiple
        while x.shape[dim] < target:
            x = torch.cat([x, torch.flip(x, [dim])], dim)
        x = x.narrow(dim, 0, target)
    return x


class DynamicPosBias(nn.Module):
    """Position bias ``(n_offsets, heads)`` from an MLP of the (dh, dw) offsets."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.pos_dim = dim // 4
        if self.pos_dim < 1:
            raise ValueError(f"position-bias width {dim} // 4 is 0; use a wider embed_dim")
        self.pos_proj = nn.Linear(2, self.pos_dim)
        self.pos1 = self._stage(self.pos_dim)
        self.pos2 = self._stage(self.pos_dim)
        self.pos3 = self._stage(num_heads)

    def _stage(self, out: int) -> nn.Sequential:
        return nn.Sequential(nn.LayerNorm(self.pos_dim), nn.ReLU(inplace=True), nn.Linear(self.pos_dim, out))

    def forward(self, offsets: torch.Tensor) -> torch.Tensor:
        return self.pos3(self.pos2(self.pos1(self.pos_proj(offsets))))


class RectWindowAttention(nn.Module):
    """Multi-head attention inside ``win`` rectangles with a dynamic position bias
    (the reference's ``Attention_regular``); QKV come from the block."""

    def __init__(self, dim: int, win: Window, num_heads: int, qk_scale: Optional[float] = None,
                 attn_drop: float = 0.0):
        super().__init__()
        self.win = tuple(win)
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.pos = DynamicPosBias(dim // 4, num_heads)
        self.register_buffer("rpe_biases", position_offsets(*self.win))
        self.register_buffer("relative_position_index", rect_relative_position_index(*self.win))
        self.attn_drop = nn.Dropout(attn_drop)

    def forward(self, qkv: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``qkv (3, B, H, W, c)``; ``mask (nW, N, N)`` or None -> ``(B, H, W, c)``."""
        _, b, h, w, c = qkv.shape
        n = self.win[0] * self.win[1]
        win = window_split(qkv, self.win)  # (3, B, nW, N, c)
        nw = win.shape[2]
        q, k, v = win.reshape(3, b, nw, n, self.num_heads, c // self.num_heads).transpose(-3, -2).unbind(0)
        bias = self.pos(self.rpe_biases)[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, self.num_heads).permute(2, 0, 1)  # (heads, N, N)
        if mask is not None:
            bias = bias.unsqueeze(0) + mask.unsqueeze(1)  # (nW, heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale,
                                             dropout_p=self.attn_drop.p if self.training else 0.0)
        return window_merge(out.transpose(-3, -2).reshape(b, nw, n, c), self.win, h, w)


class CrossAggregationBlock(nn.Module):
    """Regular cross aggregation Transformer block (the reference's ``CATB_regular``)."""

    def __init__(self, dim: int, num_heads: int, img_size: int, split: Window, shift: Window,
                 mlp_ratio: float = 2.0, qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        if not all(0 <= s < z for s, z in zip(shift, split)):
            raise ValueError(f"shift {tuple(shift)} must lie in [0, split) for split {tuple(split)}")
        self.split, self.shift = tuple(split), tuple(shift)
        self.img_size = img_size
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.norm1 = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        self.attns = nn.ModuleList([
            RectWindowAttention(dim // 2, win, num_heads // 2, qk_scale, attn_drop)
            for win in (self.split, self.split[::-1])])  # H-Rwin s0 x s1, V-Rwin s1 x s0
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.norm2 = nn.LayerNorm(dim)
        self.get_v = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)  # locality complementary module
        shifted = any(self.shift)
        for i in range(2):
            mask = self._mask(img_size, img_size, i) if shifted else None
            self.register_buffer(f"attn_mask_{i}", mask)

    def _mask(self, h: int, w: int, branch: int, device=None) -> torch.Tensor:
        win, shift = (self.split, self.shift) if branch == 0 else (self.split[::-1], self.shift[::-1])
        return rect_shift_mask(h, w, win, shift, device)

    def forward(self, x: torch.Tensor, x_size: Tuple[int, int], masks: Optional[dict] = None) -> torch.Tensor:
        """``x (B, H*W, C)``; ``masks`` caches this size's shift masks across blocks."""
        h, w = x_size
        b, length, c = x.shape
        masks = {} if masks is None else masks
        qkv = self.qkv(self.norm1(x)).view(b, h, w, 3, c).permute(3, 0, 1, 2, 4)  # (3, B, H, W, C)
        lcm = self.get_v(qkv[2].permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        half = c // 2
        outs = []
        for i, attn in enumerate(self.attns):
            part = qkv[..., i * half:(i + 1) * half]
            shift = self.shift if i == 0 else self.shift[::-1]
            if not any(self.shift):
                outs.append(attn(part))
                continue
            if (h, w) == (self.img_size, self.img_size):
                mask = getattr(self, f"attn_mask_{i}")
            else:
                key = (h, w, attn.win, shift)
                if key not in masks:
                    masks[key] = self._mask(h, w, i, x.device)
                mask = masks[key]
            y = attn(torch.roll(part, shifts=(-shift[0], -shift[1]), dims=(2, 3)), mask)
            outs.append(torch.roll(y, shifts=shift, dims=(1, 2)))
        y = (torch.cat(outs, dim=-1) + lcm).reshape(b, length, c)
        x = x + self.drop_path(self.proj(y))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ResidualGroup(nn.Module):
    """Cross aggregation blocks (even ones regular, odd ones shifted by half a
    window), then a 3x3 conv and the group's skip."""

    def __init__(self, dim: int, depth: int, num_heads: int, img_size: int, split: Window,
                 drop_paths: Sequence[float], **block_kwargs):
        super().__init__()
        half = (split[0] // 2, split[1] // 2)
        self.blocks = nn.ModuleList([
            CrossAggregationBlock(dim, num_heads, img_size, split, (0, 0) if i % 2 == 0 else half,
                                  drop_path=drop_paths[i], **block_kwargs)
            for i in range(depth)])
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor, x_size: Tuple[int, int], masks: Optional[dict] = None) -> torch.Tensor:
        b, _, c = x.shape
        y = x
        for blk in self.blocks:
            y = blk(y, x_size, masks)
        y = self.conv(y.transpose(1, 2).reshape(b, c, *x_size))
        return y.flatten(2).transpose(1, 2) + x


class Tokens(nn.Module):
    """``(B, C, H, W) -> (B, H*W, C)`` (the reference's einops ``Rearrange``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


@EXTRACTORS.register("cat-r-2")
class CAT(nn.Module):
    """CAT encoder: ``(B, 3, H, W) -> (B, out_dim, H, W)`` for any H x W.

    ``split_size_0[i] x split_size_1[i]`` is group i's H-Rwin (V-Rwin: the
    transpose); ``img_size`` only sets the stored masks (64 in the release).
    """

    scale_aware = False

    def __init__(self, img_size: int = 64, in_chans: int = 3, embed_dim: int = 180,
                 depth: Sequence[int] = (6, 6, 6, 6, 6, 6), split_size_0: Sequence[int] = (4, 4, 4, 4, 4, 4),
                 split_size_1: Sequence[int] = (16, 16, 16, 16, 16, 16),
                 num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6), mlp_ratio: float = 2.0, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1, resi_connection: str = "1conv", block_name: str = "CATB_regular",
                 out_dim: int = 64, no_upsampling: bool = True):
        super().__init__()
        check_no_upsampling(no_upsampling)
        if block_name != "CATB_regular" or resi_connection != "1conv":
            raise ValueError("only block_name 'CATB_regular' with resi_connection '1conv' (CAT-R) is supported, "
                             f"got {block_name!r}, {resi_connection!r}")
        if not len(depth) == len(num_heads) == len(split_size_0) == len(split_size_1):
            raise ValueError("depth, num_heads, split_size_0 and split_size_1 need one entry per group")
        if any(h % 2 or (embed_dim // 2) % (h // 2) for h in num_heads):
            raise ValueError(f"num_heads {tuple(num_heads)} must be even and split embed_dim // 2 ({embed_dim // 2})")
        splits = list(zip(split_size_0, split_size_1))
        self.window_size = math.lcm(*split_size_0, *split_size_1)
        if img_size % self.window_size:
            raise ValueError(f"img_size ({img_size}) must be a multiple of the windows' lcm ({self.window_size})")
        self.out_dim = out_dim
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.before_RG = nn.Sequential(Tokens(), nn.LayerNorm(embed_dim))
        dpr = torch.linspace(0, drop_path_rate, sum(depth), device="cpu").tolist()
        self.layers = nn.ModuleList([
            ResidualGroup(embed_dim, d, heads, img_size, split, dpr[sum(depth[:i]):sum(depth[:i + 1])],
                          mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate,
                          attn_drop=attn_drop_rate)
            for i, (d, heads, split) in enumerate(zip(depth, num_heads, splits))])
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, out_dim, 3, 1, 1),
                                                  nn.LeakyReLU(0.01, inplace=True))
        self.apply(partial(init_linear_and_norm, trunc_normal=partial(trunc_normal_, std=0.02)))

    def forward(self, x: torch.Tensor, scale=None) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = self.conv_first(pad_symmetric(x, self.window_size))
        x_size = tuple(x.shape[-2:])
        t = self.before_RG(x)
        masks: dict = {}  # shift masks of this size, shared by the blocks
        for layer in self.layers:
            t = layer(t, x_size, masks)
        t = self.norm(t).transpose(1, 2).reshape(x.shape)
        x = self.conv_before_upsample(self.conv_after_body(t) + x)
        return x[..., :h, :w]
