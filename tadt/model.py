"""TADT and its Baseline backbone (paper section 3.3), registered as extractors.

``Baseline`` is the multi-scale transformer backbone with every attention branch
on; ``TADT`` is the same backbone plus the Task-Aware Routing Controller (TARC),
which picks, per input image and scale, which of the 4N branches run.

Layout: tokens travel between blocks as ``(B, H, W, C)`` (channels last), so a
branch reads its ``C/4`` channels as a slice and the group convolutions work on
a channels-last view without copies. Every choice the paper leaves open is
listed, with its reasons, in ``tadt/README.md``.

A branch whose routing bit is 0 for every sample of the batch is not run at
all: no QKV linear, no window partition, no attention, and its rows of the
projection are sliced away (Eq. 2). fvcore therefore counts the FLOPs of the
path actually taken, and wall time falls with it.
"""
from __future__ import annotations

from functools import partial
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from extractors import EXTRACTORS
from extractors.blocks import Mlp, init_linear_and_norm, relative_position_index, window_grid, window_partition
from extractors.layers import pad_reflect_to_multiple
from tadt.routing import RoutingArg, RoutingInfo, routing_tensor
from tadt.tarc import BETA_MODES, TaskAwareRoutingController

EVAL_ROUTINGS = ("topk", "threshold")


# ---------------------------------------------------------------------------
# attention branches


def _trunc_normal_(t: torch.Tensor, std: float = 0.02) -> torch.Tensor:
    return nn.init.trunc_normal_(t, std=std, a=-2 * std, b=2 * std)


class _AttentionBranch(nn.Module):
    """Shared parts of LSA and GSA: a linear ``C/4 -> 3C/4`` for Q, K, V, a
    relative position bias per head, and scaled-dot-product attention.

    ``forward(x, out=None)`` reads ``x (B, H, W, C/4)`` (H, W multiples of the
    window) and writes ``(B, H, W, C/4)`` into ``out`` when given (a slice of
    the projection's input buffer), which saves one copy per branch.
    """

    def __init__(self, dim: int, window: int, pooled: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"branch width {dim} is not divisible by {heads} heads")
        self.dim, self.window, self.pooled, self.heads = dim, window, pooled, heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        index, table = relative_position_index(window, pooled)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table, heads))
        self.register_buffer("relative_position_index", index, persistent=False)
        _trunc_normal_(self.relative_position_bias_table)
        self._bias_cache = None

    def _gather_bias(self, table: torch.Tensor) -> torch.Tensor:
        idx = self.relative_position_index
        bias = table[idx.reshape(-1)].view(idx.shape[0], idx.shape[1], self.heads)
        return bias.permute(2, 0, 1).unsqueeze(0)  # 4-D lets SDPA take its fused CPU kernel

    def position_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """``(1, heads, window^2, pooled^2)`` additive attention bias.

        Without autograd the gathered bias is cached (keyed by the table's
        version, device and dtype), so inference does not re-gather it per call."""
        table = self.relative_position_bias_table
        if (torch.is_grad_enabled() and table.requires_grad) or torch.jit.is_tracing() or table.is_inference():
            return self._gather_bias(table).to(dtype)
        key = (table._version, table.data_ptr(), table.device, dtype, torch.is_inference_mode_enabled())
        if self._bias_cache is None or self._bias_cache[0] != key:
            self._bias_cache = (key, self._gather_bias(table.detach()).to(dtype))
        return self._bias_cache[1]

    def _heads(self, t: torch.Tensor, parts: int) -> torch.Tensor:
        """``(n, L, parts*dim)`` -> ``(parts, n, heads, L, head_dim)`` (a view)."""
        n, length, _ = t.shape
        return t.view(n, length, parts, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def _attend(self, q, k, v) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.position_bias(q.dtype))

    def _merge(self, o: torch.Tensor, b: int, h: int, w: int, out: Optional[torch.Tensor]) -> torch.Tensor:
        """``(B*nW, heads, m*m, head_dim)`` -> ``(B, H, W, dim)``, written into ``out``."""
        m = self.window
        o = window_grid(o.transpose(1, 2), m, h, w)  # (B, H/m, m, W/m, m, heads, head_dim), a view
        if out is None:
            return o.reshape(b, h, w, self.dim)
        out.view(o.shape).copy_(o)
        return out

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window={self.window}, pooled={self.pooled}, heads={self.heads}"


class LocalSelfAttention(_AttentionBranch):
    """LSA (Fig. 4a): attention inside non-overlapping ``m x m`` windows."""

    def __init__(self, dim: int, window: int, heads: int):
        super().__init__(dim, window, window, heads)

    def forward(self, x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, h, w, _ = x.shape
        q, k, v = self._heads(self.qkv(window_partition(x, self.window)), 3)
        return self._merge(self._attend(q, k, v), b, h, w, out)


class GlobalSelfAttention(_AttentionBranch):
    """GSA (Fig. 4b): queries in ``m x m`` windows attend to keys and values
    max-pooled from ``m x m`` to ``d x d`` inside the same window."""

    def forward(self, x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, h, w, _ = x.shape
        m, d = self.window, self.pooled
        qkv = self.qkv(window_partition(x, m))  # (B*nW, m*m, 3*dim)
        n = qkv.shape[0]
        q = self._heads(qkv[..., : self.dim], 1)[0]
        kv = qkv[..., self.dim:].view(n, m, m, 2 * self.dim).permute(0, 3, 1, 2)  # channels-last view
        kv = F.max_pool2d(kv, kernel_size=m // d).permute(0, 2, 3, 1).reshape(n, d * d, 2 * self.dim)
        k, v = self._heads(kv, 2)
        return self._merge(self._attend(q, k, v), b, h, w, out)


class SliceableLinear(nn.Linear):
    """Output projection whose input rows can be sliced away (Eq. 2).

    ``forward(o_active, active)`` computes ``O_cat @ W^T + b`` where ``O_cat``
    has zeros in the groups not listed in ``active``, without multiplying them:
    only the columns of ``W`` of the active groups are used.
    """

    def __init__(self, dim: int, groups: int = 4):
        super().__init__(dim, dim)
        self.groups = groups
        self.group_dim = dim // groups

    def forward(self, x: torch.Tensor, active: Optional[Sequence[int]] = None) -> torch.Tensor:
        if active is None or len(active) == self.groups:
            return F.linear(x, self.weight, self.bias)
        g = self.group_dim
        cols = torch.cat([self.weight[:, j * g:(j + 1) * g] for j in active], dim=1)
        return F.linear(x, cols, self.bias)


class MultiScaleTransformerBlock(nn.Module):
    """MSTB (Fig. 3b): ``C`` channels split into four ``C/4`` groups, three LSA
    branches (windows m1, m2, m3) and one GSA branch (window m, pooled to d),
    slice-able projection, residual; then pre-norm MLP with residual."""

    def __init__(self, dim: int, windows: Sequence[int], global_window: int, pooled: int,
                 heads: Sequence[int], mlp_ratio: float):
        super().__init__()
        if dim % 4:
            raise ValueError(f"channels {dim} are not divisible into four branches")
        bd = dim // 4
        self.branch_dim = bd
        self.norm1 = nn.LayerNorm(dim)
        self.branches = nn.ModuleList(
            [LocalSelfAttention(bd, m, hh) for m, hh in zip(windows, heads[:3])]
            + [GlobalSelfAttention(bd, global_window, pooled, heads[3])]
        )
        self.proj = SliceableLinear(dim, 4)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(round(dim * mlp_ratio)))

    def forward(self, x: torch.Tensor, r: Optional[torch.Tensor], on: Sequence[bool],
                scale_by_r: Sequence[bool]) -> torch.Tensor:
        """``x (B, H, W, C)``; ``r (B, 4)`` routing of this group (or None = all on);
        ``on[j]``: branch j runs (its bit is 1 for some sample); ``scale_by_r[j]``:
        multiply its output by ``r[:, j]`` (mixed batch, or STE gradient needed)."""
        active = [j for j in range(4) if on[j]]
        bd = self.branch_dim
        if active:
            y = self.norm1(x)  # only the branches read it
            # Eq. 1/2: skipped branches compute nothing; the active ones write
            # side by side into the input of the sliced projection.
            cat = y.new_empty(*y.shape[:-1], bd * len(active))
            for slot, j in enumerate(active):
                dst = cat[..., slot * bd:(slot + 1) * bd]
                if scale_by_r[j]:
                    o = self.branches[j](y[..., j * bd:(j + 1) * bd])
                    dst.copy_(o * r[:, j].to(o.dtype).view(-1, 1, 1, 1))
                else:
                    self.branches[j](y[..., j * bd:(j + 1) * bd], out=dst)
            x = x + self.proj(cat, active)
        else:
            x = x + self.proj.bias  # O_cat = 0: the projection reduces to its bias
        return x + self.mlp(self.norm2(x))


class MultiScaleTransformerGroup(nn.Module):
    """MSTG: MSTBs sharing one 4-bit routing sub-vector, a 3x3 conv, and a
    residual connection around the group (as SwinIR's RSTB)."""

    def __init__(self, dim: int, depth: int, **block_args):
        super().__init__()
        self.blocks = nn.ModuleList([MultiScaleTransformerBlock(dim, **block_args) for _ in range(depth)])
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor, r, on, scale_by_r) -> torch.Tensor:
        y = x
        for blk in self.blocks:
            y = blk(y, r, on, scale_by_r)
        y = self.conv(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + y


# ---------------------------------------------------------------------------
# backbone


def _as_scale(scale, batch: int, device, dtype=torch.float32) -> torch.Tensor:
    s = torch.as_tensor(scale, dtype=dtype, device=device).reshape(-1)
    if s.numel() == 1:
        s = s.expand(batch)
    if s.numel() != batch:
        raise ValueError(f"scale has {s.numel()} values for a batch of {batch}")
    if bool((s <= 0).any()):
        raise ValueError("scale must be positive")
    return s


@EXTRACTORS.register("baseline")
class Baseline(nn.Module):
    """The TADT feature-extraction backbone with every branch on (paper: "Baseline").

    ``forward(x, scale=None, routing=None)``: ``x (B, 3, H, W)`` normalised, any
    H x W (reflect-padded to a multiple of ``window_size`` and cropped back);
    returns ``(B, out_dim, H, W)``. ``routing`` forces a path: ``"all"``,
    ``"none"``, a ``4N``-character bit string (``_`` and spaces ignored), or a
    0/1 tensor ``(4N,)`` / ``(B, 4N)`` (parsed by :func:`tadt.routing.routing_tensor`);
    None means all on.
    """

    scale_aware = False

    def __init__(self, in_chans: int = 3, embed_dim: int = 224, num_groups: int = 8,
                 blocks_per_group: int = 2, windows: Sequence[int] = (4, 8, 16),
                 global_window: int = 48, pooled_size: int = 12,
                 heads: Union[int, Sequence[int]] = 2, mlp_ratio: float = 2.0, out_dim: int = 64):
        super().__init__()
        windows = tuple(int(m) for m in windows)
        if len(windows) != 3:
            raise ValueError("an MSTB has exactly three local windows")
        for m in windows:
            if global_window % m:
                raise ValueError(f"local window {m} does not divide the global window {global_window}")
        heads = (int(heads),) * 4 if isinstance(heads, int) else tuple(int(h) for h in heads)
        if len(heads) != 4:
            raise ValueError("heads: one int, or one per branch (4)")
        self.embed_dim, self.num_groups = embed_dim, num_groups
        self.n_branches = 4 * num_groups
        self.out_dim = out_dim
        self.window_size = global_window
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.norm_first = nn.LayerNorm(embed_dim)
        self.groups = nn.ModuleList([
            MultiScaleTransformerGroup(embed_dim, blocks_per_group, windows=windows, global_window=global_window,
                                       pooled=pooled_size, heads=heads, mlp_ratio=mlp_ratio)
            for _ in range(num_groups)
        ])
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.conv_out = nn.Sequential(nn.Conv2d(embed_dim, out_dim, 3, 1, 1), nn.LeakyReLU(0.01, inplace=True))
        self.apply(partial(init_linear_and_norm, trunc_normal=_trunc_normal_))
        self.last_routing: Optional[RoutingInfo] = None

    # -- routing --------------------------------------------------------------

    def routing_for(self, x: torch.Tensor, scale=None) -> RoutingInfo:
        """The routing a ``forward(x, scale)`` with ``routing=None`` would use."""
        return RoutingInfo(torch.ones(x.shape[0], self.n_branches, device=x.device))

    def _resolve(self, x: torch.Tensor, scale, routing: RoutingArg) -> RoutingInfo:
        if routing is None:
            return self.routing_for(x, scale)
        return RoutingInfo(routing_tensor(routing, self.n_branches, x.shape[0], x.device))

    # -- forward --------------------------------------------------------------

    def forward_backbone(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Backbone along routing ``r (B, 4N)``; ``x`` normalised, any size."""
        h, w = x.shape[-2:]
        x = pad_reflect_to_multiple(x, self.window_size)
        # One host sync decides the whole path: which branches run at all and
        # which need their output scaled by r (mixed batch or STE gradient).
        rb = r.detach() != 0
        on = rb.any(0).tolist()
        partial = (rb.any(0) & ~rb.all(0)).tolist()
        scale_by = [o and (p or r.requires_grad) for o, p in zip(on, partial)]
        f0 = self.conv_first(x)
        t = self.norm_first(f0.permute(0, 2, 3, 1))
        for i, group in enumerate(self.groups):
            sl = slice(4 * i, 4 * i + 4)
            t = group(t, r[:, sl], on[sl], scale_by[sl])
        t = self.norm(t)
        f = self.conv_after_body(t.permute(0, 3, 1, 2)) + f0
        out = self.conv_out(f)
        return out[..., :h, :w].contiguous(memory_format=torch.contiguous_format)

    def forward(self, x: torch.Tensor, scale=None, routing: RoutingArg = None) -> torch.Tensor:
        info = self._resolve(x, scale, routing)
        out = self.forward_backbone(x, info.r)
        self.last_routing = info
        return out


@EXTRACTORS.register("tadt")
class TADT(Baseline):
    """Task-Aware Dynamic Transformer: Baseline backbone + TARC.

    Backbone keys are exactly the Baseline's; TADT adds only the keys under
    ``added_key_prefixes`` (the TARC). A trained Baseline state dict therefore
    loads with ``load_state_dict(sd, strict=False)`` leaving only ``tarc.*``
    missing; ``harness.checkpoint.load_baseline_weights`` does that and checks it.

    Routing with ``routing=None``: training samples ``r ~ Bernoulli(p)`` with
    the straight-through gradient ``dL/dr = dL/dp`` (Eq. 4); eval is
    deterministic: ``eval_routing='topk'`` (default) keeps the ``round(sum p)``
    branches of largest ``p`` (ties: lower index first), ``'threshold'`` keeps
    ``p >= 0.5``.
    """

    scale_aware = True
    added_key_prefixes = ("tarc.",)  # state-dict keys a Baseline lacks: the TARC

    def __init__(self, *args, beta_mode: str = "learned", eval_routing: str = "topk",
                 tarc_width: int = 32, tarc_scale_hidden: int = 16, **kwargs):
        super().__init__(*args, **kwargs)
        if eval_routing not in EVAL_ROUTINGS:
            raise ValueError(f"eval_routing must be one of {EVAL_ROUTINGS}, got {eval_routing!r}")
        self.eval_routing = eval_routing
        self.beta_mode = beta_mode
        self.tarc = TaskAwareRoutingController(self.n_branches, tarc_width, tarc_scale_hidden, beta_mode)

    def decide(self, p: torch.Tensor) -> torch.Tensor:
        """Routing vector from probabilities ``p (B, 4N)`` (mode-dependent)."""
        if self.training:
            p_hat = p.detach()
            # value: exactly the sample (p - p_hat is exactly 0); gradient: dL/dr = dL/dp (Eq. 4)
            return torch.bernoulli(p_hat) + (p - p_hat)
        if self.eval_routing == "threshold":
            return (p >= 0.5).to(p.dtype)
        k = torch.round(p.sum(1, keepdim=True))
        order = torch.argsort(p, dim=1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(p.shape[1], device=p.device).expand_as(order))
        return (rank < k).to(p.dtype)

    def routing_for(self, x: torch.Tensor, scale=None) -> RoutingInfo:
        """Runs only the TARC: ``RoutingInfo(r, p, beta)`` for ``forward(x, scale)``."""
        if scale is None:
            raise ValueError("TADT needs the SR scale to route (pass scale=..., or force a routing)")
        s = _as_scale(scale, x.shape[0], x.device)
        _, beta, p = self.tarc(x, s)
        return RoutingInfo(self.decide(p), p, beta)
