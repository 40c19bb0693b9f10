"""fvcore operator handles: the FLOPs decision of every operator our models use.

fvcore knows only some operators. It silently ignores a list of cheap ones
(``relu``, ``max``, ``clamp``, views, copies, ...) and counts every *other* op
it does not know as zero after a warning ("unsupported operator"). Here every
operator that our models use has a decision: :data:`HANDLES` are registered
and :data:`ZERO_OPS` ignored on every analysis (:mod:`harness.flops.tracing`),
and :func:`~harness.flops.tracing.count_flops` returns fvcore's list of
unsupported operators, which a test requires to be empty for every registered
extractor and upsampler model, so an op added later without a decision fails.

Decisions (the paper's numbers come from fvcore's defaults, so ops that only
move data or act elementwise stay at zero, as they were in the paper's count;
ops that hide multiply-adds fvcore would have counted, had they been written
out, are counted as their explicit form):

========================================  ==========================================  ==========================
operator                                  count                                       why
========================================  ==========================================  ==========================
``aten::_convolution``, ``linear``,       fvcore's handles (multiply-adds; bias not   fvcore default
``addmm``, ``matmul``, ``mm``, ``bmm``,   counted)
``einsum``
``aten::layer_norm``, ``group_norm``      5 per input element (4 without affine)      fvcore default
``aten::batch_norm``                      fvcore's handle                             fvcore default
``aten::scaled_dot_product_attention``    ``B*heads*Lq*Lk*d + B*heads*Lq*Lk*dv``      = the two matmuls
                                                                                      ``q@k^T`` and ``attn@v``
                                                                                      that fvcore counts when
                                                                                      attention is written out
                                                                                      (SwinIR); softmax, scale
                                                                                      and mask count 0 as there
``aten::baddbmm``                         the ``bmm`` part                            = ``bmm`` + elementwise add
``aten::upsample_nearest2d``              1 per output element                        fvcore default
``aten::upsample_bilinear2d``             4 per output element                        fvcore default
``aten::upsample_bicubic2d``              16 per output element                       fvcore's bilinear rule,
                                                                                      4x4 taps
``aten::grid_sampler``                    per output element: nearest 1, bilinear 4,  fvcore assumes bilinear (4)
                                          bicubic 16 (read from the mode argument)    for every mode; we read it
``aten::adaptive_avg_pool2d``             1 per input element                         fvcore default
``aten::avg_pool2d``                      1 per input element                         as adaptive_avg_pool2d
``aten::max_pool2d``,                     0                                           comparisons, like fvcore's
``aten::adaptive_max_pool2d``                                                         ignored ``max``/``relu``
elementwise arithmetic and activations    0                                           fvcore convention
(``add``, ``sub``, ``mul``, ``div``,                                                  (unsupported = 0 in the
``rsub``, ``neg``, ``pow``, ``sqrt``,                                                 paper's count); SwinIR's
``exp``, ``sin``, ``cos``, ``abs``,                                                   9733.65 G needs these at 0
``sigmoid``, ``tanh``, ``softmax``,
``gelu``, ``silu``, ``leaky_relu``, ...)
reductions ``sum``, ``mean``, ``norm``    0                                           fvcore convention
comparisons and sorting (``lt``, ``ne``,  0                                           like fvcore's ignored
``round``, ``argsort``, ``topk``; TARC's                                              ``ge``, ``eq``, ``max``
top-k decision)
data movement (``pad``, ``im2col``        0                                           no arithmetic
(unfold), ``pixel_shuffle``, ``repeat``,
``flip``, ``clone``, ``where``, ...)
random draws (``bernoulli``, ``rand``)    0                                           no arithmetic
========================================  ==========================================  ==========================
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence


def _shape(val) -> list[int] | None:
    return val.type().sizes() if val.isCompleteTensor() else None


def _numel(val) -> int:
    shape = _shape(val)
    return int(math.prod(shape)) if shape is not None else 0


def _broadcast_batch(a: Sequence[int], b: Sequence[int]) -> list[int]:
    a, b = list(a), list(b)
    n = max(len(a), len(b))
    a = [1] * (n - len(a)) + a
    b = [1] * (n - len(b)) + b
    return [max(x, y) for x, y in zip(a, b)]


def sdpa_flop_jit(inputs: list, outputs: list) -> int:
    """``scaled_dot_product_attention(q, k, v, ...)``: the matmuls q@k^T and attn@v."""
    q, k, v = (_shape(x) for x in inputs[:3])
    batch = _broadcast_batch(q[:-2], k[:-2])
    lq, d = q[-2], q[-1]
    lk, dv = k[-2], v[-1]
    return int(math.prod(batch)) * lq * lk * (d + dv)


def baddbmm_flop_jit(inputs: list, outputs: list) -> int:
    """``baddbmm(input, b1, b2)``: the batched product b1 @ b2 (the add counts 0)."""
    b1, b2 = _shape(inputs[1]), _shape(inputs[2])
    return b1[0] * b1[1] * b1[2] * b2[2]


def per_output(n: int) -> Callable[[list, list], int]:
    def handle(inputs: list, outputs: list) -> int:
        return n * _numel(outputs[0])

    return handle


def per_input(n: int) -> Callable[[list, list], int]:
    def handle(inputs: list, outputs: list) -> int:
        return n * _numel(inputs[0])

    return handle


_GRID_MODE_COST = {0: 4, 1: 1, 2: 16}  # torch's enum: 0 bilinear, 1 nearest, 2 bicubic


def grid_sampler_flop_jit(inputs: list, outputs: list) -> int:
    """``grid_sampler(input, grid, mode, padding, align_corners)``: taps per output element."""
    try:
        mode = int(inputs[2].toIValue())
    except Exception:  # mode not a constant in the trace: assume bilinear, as fvcore does
        mode = 0
    return _GRID_MODE_COST.get(mode, 4) * _numel(outputs[0])


# Ops whose count is a decision of zero (see the module docstring's table).
ZERO_OPS: tuple[str, ...] = tuple(f"aten::{name}" for name in (
    # elementwise arithmetic and activations
    "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "reciprocal",
    "pow", "sqrt", "rsqrt", "exp", "log", "sin", "cos", "abs", "sign", "square",
    "sigmoid", "sigmoid_", "tanh", "softmax", "log_softmax", "gelu", "silu", "silu_",
    "leaky_relu", "leaky_relu_", "hardtanh", "hardtanh_", "elu", "prelu", "lerp",
    "round", "ceil", "trunc", "frac", "fmod", "clamp_min", "clamp_max", "minimum", "maximum",
    "lt", "le", "ne", "logical_and", "logical_or", "logical_not", "where", "masked_fill_",
    "fill_", "zero_",
    # reductions
    "sum", "mean", "norm", "linalg_vector_norm", "amax", "amin", "argmax", "argmin", "min",
    "cumsum", "topk", "sort", "argsort", "std", "var",
    # pooling by comparison
    "max_pool2d", "adaptive_max_pool2d", "max_pool2d_with_indices", "adaptive_max_pool1d",
    # data movement / creation
    "pad", "reflection_pad2d", "replication_pad2d", "im2col", "col2im", "unfold",
    "pixel_shuffle", "pixel_unshuffle", "repeat", "repeat_interleave", "flip", "clone",
    "expand_as", "view_as", "reshape_as", "new_ones", "ones_like", "empty_like", "rand_like",
    "randn_like", "linspace", "meshgrid", "scalar_tensor", "tensor", "alias", "lift_fresh",
    "detach_", "numel", "dim", "index_select", "masked_select", "tile", "movedim", "unflatten",
    "as_strided", "resolve_conj", "resolve_neg", "diag", "tril", "triu", "one_hot",
    "true_divide", "bitwise_and", "bitwise_or", "_shape_as_tensor", "rand", "randn", "bernoulli", "bernoulli_", "randint", "uniform_", "normal_",
    "dropout_", "feature_dropout", "masked_scatter", "scatter", "scatter_", "scatter_add",
    "gather",
))

HANDLES: dict[str, Callable[[list, list], Any]] = {
    "aten::scaled_dot_product_attention": sdpa_flop_jit,
    "aten::baddbmm": baddbmm_flop_jit,
    "aten::upsample_bicubic2d": per_output(16),
    "aten::grid_sampler": grid_sampler_flop_jit,
    "aten::avg_pool2d": per_input(1),
}


__all__ = ["HANDLES", "ZERO_OPS", "sdpa_flop_jit", "baddbmm_flop_jit", "grid_sampler_flop_jit",
           "per_output", "per_input"]
