"""Transformer pieces shared by the window-attention extractors (SwinIR, Baseline/TADT).

- :class:`Mlp`: the feed-forward layer of a transformer block, ``fc1 -> GELU ->
  fc2`` (keys ``fc1.*``, ``fc2.*``, as in Swin/SwinIR), with optional dropout.
- :func:`window_partition` / :func:`window_reverse`: a channels-last map cut into
  non-overlapping square windows and put back; :func:`window_grid` is the view
  under ``window_reverse``, for callers that write the result into a buffer.
- :func:`relative_position_index`: the index into a relative-position bias table,
  for Swin's window-to-window attention and for TADT's global branch, whose
  keys are pooled cells of the window.
- :func:`init_linear_and_norm`: Swin's weight initialisation of linears and layer norms.
- :func:`inference_pieces`: the slices that token-wise layers run on one at a
  time without autograd, so that a large image's transient activations (the MLP's
  hidden layer, the attention's q, k, v and bias) are held a piece at a time.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn as nn

__all__ = ["Mlp", "inference_pieces", "window_partition", "window_grid", "window_reverse", "relative_position_index",
           "init_linear_and_norm"]


#: Tokens per piece of :func:`inference_pieces`. SwinIR-LTE at paper width on a
#: DIV2K-sized image at x4 (CPU, 2 threads) peaked at 2597 MiB in one call, 2053 MiB
#: with pieces of 65536 tokens, 1990 with 16384 and 1786 with 4096, the encoder no
#: slower (``bench_decoders.py --inference-tokens N``; benchmarks/README.md).
INFERENCE_TOKENS = 4096


def inference_pieces(n: int, tokens_per_item: int, device: torch.device | str = "cpu"
                     ) -> list[slice] | None:
    """Slices of ``n`` items (tokens, or windows of ``tokens_per_item`` tokens) to run
    one at a time, or None to run all at once.

    Pieces only on the CPU (a GPU wants few, large kernels, and evaluates a whole
    DIV2K image in one call within 8 GB: README), without autograd and outside the
    JIT tracer (training and FLOP counts see one call), and only where the items
    hold more than :data:`INFERENCE_TOKENS` tokens. Each item is computed alone
    (row-wise linears, layer norms, attention inside a window), so the result is
    the same function, equal within float rounding; small inputs run unchanged.
    """
    if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.device(device).type != "cpu" \
            or n * tokens_per_item <= INFERENCE_TOKENS:
        return None
    step = max(1, INFERENCE_TOKENS // tokens_per_item)
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


class Mlp(nn.Module):
    """``fc2(drop(GELU(fc1(x))))`` then ``drop``; ``drop = 0`` applies no dropout layer at all."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (..., L, dim)``; without autograd a long ``L`` runs in :func:`inference_pieces`."""
        pieces = inference_pieces(x.shape[-2], math.prod(x.shape[:-2]), x.device) if x.dim() >= 2 else None
        if pieces is None:
            return self._forward(x)
        out = x.new_empty(*x.shape[:-1], self.fc2.out_features)
        for p in pieces:
            out[..., p, :] = self._forward(x[..., p, :])
        return out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """``(B, H, W, C) -> (B * nW, ws * ws, C)``, windows in row-major order per image.

    H and W must be multiples of ``ws``; ``x`` may be a strided view (a channel
    slice). When one window covers ``x`` no window order is needed, and a
    channel slice of a contiguous map comes back as a view, not a copy.
    """
    b, h, w, c = x.shape
    if h == ws and w == ws:
        return x.reshape(b, ws * ws, c)
    x = x.reshape(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_grid(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """``(B * nW, ws * ws, *C) -> (B, H / ws, ws, W / ws, ws, *C)``: a view in image order.

    Reshaping it to ``(B, H, W, *C)`` is :func:`window_reverse`; copying it into a
    buffer viewed the same way writes the image without an intermediate copy.
    """
    rest = windows.shape[2:]
    x = windows.view(-1, h // ws, w // ws, ws, ws, *rest)
    return x.permute(0, 1, 3, 2, 4, *range(5, x.dim()))


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, ws * ws, C) -> (B, H, W, C)``."""
    return window_grid(windows, ws, h, w).reshape(-1, h, w, *windows.shape[2:])


def relative_position_index(window: int, pooled: int | None = None) -> tuple[torch.Tensor, int]:
    """Index ``(window^2, pooled^2)`` into a relative-position bias table, and the table's rows.

    Queries are the pixels of a ``window x window`` window; keys are a
    ``pooled x pooled`` grid of cells ``stride = window / pooled`` pixels wide
    (``pooled`` None: the window's own pixels, stride 1). The offset runs from a
    query pixel to the top-left pixel of a key cell, ``[-(window - stride),
    window - 1]`` per axis, so the table has ``(2 window - stride)^2`` rows; with
    stride 1 this is Swin's ``(2 window - 1)^2`` table and its index
    ``(dy + window - 1) (2 window - 1) + (dx + window - 1)`` (query minus key).
    Rows and columns are in row-major pixel / cell order; the dtype is int64.
    """
    pooled = window if pooled is None else pooled
    if window % pooled:
        raise ValueError(f"pooled size {pooled} does not divide window {window}")
    stride = window // pooled
    qc = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    kc = torch.stack(torch.meshgrid(torch.arange(pooled), torch.arange(pooled), indexing="ij")).flatten(1) * stride
    rel = qc[:, :, None] - kc[:, None, :] + (window - stride)  # (2, Lq, Lk), >= 0
    side = 2 * window - stride
    return rel[0] * side + rel[1], side * side


def init_linear_and_norm(m: nn.Module, trunc_normal: Callable[[torch.Tensor], Any]) -> None:
    """Swin's initialisation, for ``model.apply(partial(init_linear_and_norm, trunc_normal=...))``:
    a Linear's weight drawn by ``trunc_normal`` (each model passes its own truncation), its bias 0;
    a LayerNorm's weight 1 and bias 0. Other modules are left alone."""
    if isinstance(m, nn.Linear):
        trunc_normal(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
