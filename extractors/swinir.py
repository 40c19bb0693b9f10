"""SwinIR feature extractor (Liang et al., 2021) without its upsampler.

The encoder of LTE's ``swinir`` (jaewon-lee-b/lte ``models/swinir.py``, used by
the released swinir-lte / -liif / -metasr weights): a 3x3 ``conv_first``, patch
embedding (patch size 1) with layer norm, residual Swin Transformer blocks
(RSTB: ``depth`` Swin layers alternating regular and shifted windows, a 3x3
conv, a skip), a final layer norm, ``conv_after_body`` plus a skip from
``conv_first``, then ``conv_before_upsample`` = Conv3x3(embed_dim -> 64) +
LeakyReLU(0.01). As in LTE, there is no mean subtraction and no ``img_range``
scaling (those lines are commented out there): the harness's normalised input
goes straight to ``conv_first``.

Any ``H x W`` works: the input is reflect-padded at the bottom/right to a
multiple of ``window_size`` (as LTE's ``check_image_size``), and the features
are cropped back to ``H x W`` so they line up with the LR pixel coordinates.

State-dict compatibility (``strict=True`` with released LTE encoders):
- ``attn.relative_position_index`` is a persistent buffer (in the state dict)
  in every block;
- each *shifted* block (odd index) has a persistent ``attn_mask`` buffer, the
  shifted-window mask for the training size ``img_size`` (48 in LTE; shape
  ``(36, 64, 64)``); regular blocks register ``None`` (no key). At other
  sizes the mask is computed at forward time, once per forward for all blocks;
- patch embed/unembed carry no weights except ``patch_embed.norm``.

Attention runs through ``torch.nn.functional.scaled_dot_product_attention``
with the relative position bias (+ shift mask, -100 outside a window's
region) as a float ``attn_mask``; ``fused_attn=False`` selects the explicit
``softmax(q k^T * scale + bias) @ v`` of the reference (equal within float
tolerance). Default configuration: 11,603,044 parameters.
"""
from __future__ import annotations

from functools import partial
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from timm.layers import DropPath, trunc_normal_

from extractors import EXTRACTORS
from extractors.blocks import (Mlp, inference_pieces, init_linear_and_norm, relative_position_index,
                               window_partition, window_reverse)
from extractors.layers import check_no_upsampling, pad_reflect_to_multiple

SHIFT_MASK_VALUE = -100.0  # the reference's "minus infinity" for cross-region pairs


def shifted_window_mask(h: int, w: int, ws: int, shift: int, device=None) -> torch.Tensor:
    """Mask ``(nW, ws*ws, ws*ws)`` for shifted-window attention on an ``h x w`` map.

    After the cyclic shift, the last window row/column mixes pixels from up to
    three regions per axis (``[0, h-ws)``, ``[h-ws, h-shift)``, ``[h-shift, h)``);
    pairs from different regions get ``SHIFT_MASK_VALUE``, others 0.
    """

    def regions(n: int) -> torch.Tensor:
        idx = torch.arange(n, device=device)
        return (idx >= n - ws).long() + (idx >= n - shift).long()

    label = (3 * regions(h)[:, None] + regions(w)[None, :]).to(torch.float32)
    win = window_partition(label.view(1, h, w, 1), ws).squeeze(-1)  # (nW, N)
    differ = win[:, None, :] != win[:, :, None]
    return torch.zeros(differ.shape, device=device).masked_fill_(differ, SHIFT_MASK_VALUE)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative position bias."""

    def __init__(self, dim: int, window_size: Tuple[int, int], num_heads: int, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 fused_attn: bool = True):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.fused_attn = fused_attn
        if window_size[0] != window_size[1]:
            raise ValueError(f"windows are square, got {tuple(window_size)}")
        index, rows = relative_position_index(window_size[0])
        self.relative_position_bias_table = nn.Parameter(torch.zeros(rows, num_heads))
        self.register_buffer("relative_position_index", index)  # persistent, as LTE
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self) -> torch.Tensor:
        n = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)  # (nH, N, N)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x (B*nW, N, C)``; ``mask (nW, N, N)`` of 0 / -100, or None.

        Without autograd many windows run in :func:`~extractors.blocks.inference_pieces`
        (each window attends alone, so pieces of windows give the same result), so
        that q, k, v and the per-window bias are held a piece at a time.
        """
        pieces = inference_pieces(x.shape[0], x.shape[1], x.device)
        if pieces is None:
            return self._attend(x, mask)
        nw = None if mask is None else mask.shape[0]
        out = torch.empty_like(x)
        for p in pieces:
            # Window i of the batch is window i % nW of its image.
            m = None if mask is None else mask[torch.arange(p.start, p.stop, device=x.device) % nw]
            out[p] = self._attend(x[p], m)
        return out

    def _attend(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.position_bias()  # (nH, N, N), broadcast over windows
        if mask is not None:
            nw = mask.shape[0]
            bias = bias.unsqueeze(0) + mask.unsqueeze(1)  # (nW, nH, N, N)
            if bw != nw:  # several images: group windows per image so the mask broadcasts
                q, k, v = (t.reshape(bw // nw, nw, *t.shape[1:]) for t in (q, k, v))
        if self.fused_attn:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias.to(q.dtype),
                dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1) + bias
            attn = self.attn_drop(attn.softmax(dim=-1))
            out = attn @ v
        out = out.reshape(bw, self.num_heads, n, -1).transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}, fused={self.fused_attn}"


class SwinTransformerBlock(nn.Module):
    """(S)W-MSA + MLP, each pre-norm with a residual; ``shift_size > 0`` shifts the windows."""

    def __init__(self, dim: int, input_resolution: Tuple[int, int], num_heads: int, window_size: int = 8,
                 shift_size: int = 0, mlp_ratio: float = 2.0, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, fused_attn: bool = True):
        super().__init__()
        self.dim = dim
        self.input_resolution = tuple(input_resolution)
        self.window_size = window_size
        self.shift_size = shift_size
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, window_size), got {shift_size}")
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, (window_size, window_size), num_heads, qkv_bias, qk_scale,
                                    attn_drop, drop, fused_attn)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        # Shifted blocks keep the mask of the training size as a persistent
        # buffer, like LTE (its key is in released checkpoints); None -> no key.
        mask = shifted_window_mask(*self.input_resolution, window_size, shift_size) if shift_size > 0 else None
        self.register_buffer("attn_mask", mask)

    def forward(self, x: torch.Tensor, x_size: Tuple[int, int], mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x (B, H*W, C)``; ``mask`` is this size's shift mask (computed here if None)."""
        h, w = x_size
        b, _, c = x.shape
        ws, shift = self.window_size, self.shift_size
        y = self.norm1(x).view(b, h, w, c)
        if shift > 0:
            if mask is None:
                mask = self.attn_mask if tuple(x_size) == self.input_resolution else \
                    shifted_window_mask(h, w, ws, shift, device=x.device)
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
        else:
            mask = None
        y = self.attn(window_partition(y, ws), mask=mask)
        y = window_reverse(y, ws, h, w)
        if shift > 0:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        x = x + self.drop_path(y.reshape(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BasicLayer(nn.Module):
    """``depth`` Swin blocks, alternately regular and shifted by ``window_size // 2``."""

    def __init__(self, dim: int, input_resolution, depth: int, num_heads: int, window_size: int,
                 drop_path: Sequence[float], use_checkpoint: bool = False, **block_kwargs):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(dim, input_resolution, num_heads, window_size,
                                 shift_size=0 if i % 2 == 0 else window_size // 2,
                                 drop_path=drop_path[i], **block_kwargs)
            for i in range(depth)
        ])

    def forward(self, x: torch.Tensor, x_size, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        for blk in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = checkpoint.checkpoint(blk, x, x_size, mask, use_reentrant=False)
            else:
                x = blk(x, x_size, mask)
        return x


class RSTB(nn.Module):
    """Residual Swin Transformer block: x + conv3x3(SwinLayers(x)) ('1conv' connection)."""

    def __init__(self, dim: int, input_resolution, depth: int, num_heads: int, window_size: int,
                 drop_path: Sequence[float], use_checkpoint: bool = False, **block_kwargs):
        super().__init__()
        self.residual_group = BasicLayer(dim, input_resolution, depth, num_heads, window_size,
                                         drop_path, use_checkpoint, **block_kwargs)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor, x_size, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, _, c = x.shape
        y = self.residual_group(x, x_size, mask)
        y = self.conv(y.transpose(1, 2).reshape(b, c, *x_size))
        return y.flatten(2).transpose(1, 2) + x


class PatchEmbed(nn.Module):
    """Patch size 1: ``(B, C, H, W) -> (B, H*W, C)``, then the optional layer norm."""

    def __init__(self, embed_dim: int, patch_norm: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x) if self.norm is not None else x


@EXTRACTORS.register("swinir")
class SwinIR(nn.Module):
    """SwinIR encoder: ``(B, 3, H, W) -> (B, out_dim, H, W)`` for any H x W.

    ``img_size`` is the training patch size; it only sets the stored masks of
    the shifted blocks (LTE: 48), not the sizes the model accepts.
    """

    scale_aware = False

    def __init__(self, img_size: int = 48, in_chans: int = 3, embed_dim: int = 180,
                 depths: Sequence[int] = (6, 6, 6, 6, 6, 6), num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
                 window_size: int = 8, mlp_ratio: float = 2.0, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1, patch_norm: bool = True, out_dim: int = 64,
                 fused_attn: bool = True, use_checkpoint: bool = False, no_upsampling: bool = True):
        super().__init__()
        check_no_upsampling(no_upsampling)
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} differ in length")
        if img_size <= window_size:
            raise ValueError(f"img_size ({img_size}) must exceed window_size ({window_size})")
        resolution = (img_size, img_size)
        self.window_size = window_size
        self.out_dim = out_dim
        self.embed_dim = embed_dim
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim, patch_norm)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # stochastic depth decay rule
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            start = sum(depths[:i])
            self.layers.append(RSTB(
                embed_dim, resolution, depth, heads, window_size, dpr[start:start + depth], use_checkpoint,
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate,
                attn_drop=attn_drop_rate, fused_attn=fused_attn))
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, out_dim, 3, 1, 1),
                                                  nn.LeakyReLU(0.01, inplace=True))
        self._train_resolution = resolution
        self.apply(partial(init_linear_and_norm, trunc_normal=partial(trunc_normal_, std=0.02)))

    def set_fused_attn(self, enabled: bool) -> None:
        """Switch every block between SDPA and the explicit attention."""
        for m in self.modules():
            if isinstance(m, WindowAttention):
                m.fused_attn = enabled

    def forward(self, x: torch.Tensor, scale=None) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = pad_reflect_to_multiple(x, self.window_size)
        x_size = tuple(x.shape[-2:])
        # One shift mask per forward, shared by all shifted blocks (they use
        # their stored buffer when the size is the training size).
        mask = None
        if x_size != self._train_resolution:
            mask = shifted_window_mask(*x_size, self.window_size, self.window_size // 2, device=x.device)
        x = self.conv_first(x)
        t = self.pos_drop(self.patch_embed(x))
        for layer in self.layers:
            t = layer(t, x_size, mask)
        t = self.norm(t)
        x = self.conv_after_body(t.transpose(1, 2).reshape(x.shape)) + x
        x = self.conv_before_upsample(x)
        return x[..., :h, :w]
