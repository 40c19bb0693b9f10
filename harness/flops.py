"""FLOPs of extractors and models, in the paper's convention (fvcore's).

Convention
----------
The paper's FLOPs are those of ``fvcore.nn.FlopCountAnalysis``: one
multiply-add is one flop, and normalisation layers are counted (fvcore's norm
handle: 5 per element with an affine transform, 4 without). fvcore traces the
model, so a routed TADT is counted along the path it took.

fvcore knows only some operators. It silently ignores a list of cheap ones
(``relu``, ``max``, ``clamp``, views, copies, ...) and counts every *other* op
it does not know as zero after a warning ("unsupported operator"). Here every
operator that our models use has a decision: the handles below are registered
on every analysis, and :func:`count_flops` returns fvcore's list of
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

What fvcore's trace sees
------------------------
fvcore counts the traced graph, which keeps only ops that the output depends
on. Two consequences for TADT, both kept (they are fvcore's count, hence the
paper's convention): a group whose four branches are all off has its first
layer norm dropped as dead code; and the TARC is dropped from the count of
``forward(x, scale)``, because its result only steers Python control flow
(which branches run). :func:`count_extractor` therefore reports the TARC's own
count apart (``routing_flops``), counted by fvcore on the TARC alone.

Fast counting
-------------
Counting by execution is slow (412 s for SwinIR on one 768x1020 image on 2
cores). For a fixed model and routing, every op above costs a sum of terms
proportional to the number of pixels of the map it runs on: the input size
``H*W``, or the size padded internally to the window multiple, ``Hp*Wp``
(``Hp`` = ``H`` rounded up to a multiple of ``window_size``), plus constants
(RCAN's channel attention on 1x1 maps, the TARC's scale MLP).
:func:`extractor_flops` counts with fvcore at a few small sizes, solves exactly
(rational arithmetic) for the coefficients of a size basis, and *verifies* the
solution on sizes it was not fitted on (for window models one exact multiple of
the window in both directions, so a wrong padding rule cannot pass, and one
that pads differently in each direction). The bases tried, smallest first:
``[Hp*Wp]``, ``[Hp*Wp, H*W, 1]``, ``[H*W, Hp*Wp, H*Wp, Hp*W, H, W, Hp, Wp, 1]``
(convnets: ``[H*W]``, ``[H*W, 1]``, ``[H*W, H, W, 1]``). The coefficients are
cached per extractor instance (and routing); evaluating at any size is then
arithmetic.

Routed extractors (Baseline, TADT) are counted as ``base + sum_g G(r_g)``:
``base`` the fit of routing ``none``, ``G(p)`` the extra cost of one MSTG group
whose 4-bit sub-vector is ``p`` (the groups have equal shapes). ``G`` is first
fitted as ``sum_j p_j delta_j + [p != 0] eta`` (branch j's QKV, attention and
slice of the projection, Eq. 2; ``eta`` the group's layer norm, see above) from
six routings; if that does not verify on ``all`` and two random routings, from
all 16 patterns; and if that fails too, one fit per bit string. The routing of
a real image comes from the extractor's own routing API (``routing_for``, the
TARC only), never from running the backbone.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import random
import warnings
import weakref
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn

# --------------------------------------------------------------------------- handles


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


def _analysis(module: nn.Module, inputs: tuple):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # fvcore.nn scripts two losses on import
        from fvcore.nn import FlopCountAnalysis

    fca = FlopCountAnalysis(module, inputs)
    fca.set_op_handle(**HANDLES)
    for name in ZERO_OPS:
        if name not in HANDLES:
            fca.set_op_handle(name, None)
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    fca.tracer_warnings("none")
    return fca


class _Call(nn.Module):
    """Traces ``module(*inputs, **kwargs)`` where kwargs are not tensors (routing strings)."""

    def __init__(self, module: nn.Module, kwargs: dict):
        super().__init__()
        self.module = module
        self.kwargs = kwargs

    def forward(self, *inputs):
        return self.module(*inputs, **self.kwargs)


def count_flops(module: nn.Module, inputs, call_kwargs: dict | None = None):
    """Count ``module(*inputs, **call_kwargs)`` with fvcore and our handles.

    Runs the module once (in eval mode, without gradients; the mode is
    restored). Returns ``(total, by_operator, unsupported)``: the total flops
    (one multiply-add = one flop), a dict operator -> flops, and fvcore's
    ``unsupported_ops()`` (operator -> number of occurrences counted as zero
    without a decision; empty for every model in this repository).
    """
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    inputs = tuple(inputs)
    target = _Call(module, call_kwargs) if call_kwargs else module
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            fca = _analysis(target, inputs)
            total = int(fca.total())
            by_op = {k: int(v) for k, v in fca.by_operator().items()}
            unsupported = dict(fca.unsupported_ops())
    finally:
        for m, mode in modes:
            m.training = mode
    return total, by_op, unsupported


def _quick_count(module: nn.Module, inputs: tuple, call_kwargs: dict | None = None) -> int:
    """:func:`count_flops`'s total through fvcore's own handles and ignore rules,
    applied to a plain ``torch.jit`` trace.

    fvcore's analysis adds per-module scope hooks (for ``by_module``), which
    make its trace 1.5-3x slower; the fits only need totals. The tests check
    that the fast count, built on this, equals ``FlopCountAnalysis`` run directly.
    """
    target = _Call(module, call_kwargs) if call_kwargs else module
    fca = _analysis(target, inputs)  # only for its handle table and ignore rules
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            graph, _ = torch.jit._get_trace_graph(target, inputs)
    finally:
        for m, mode in modes:
            m.training = mode
    total = 0
    for node in graph.nodes():
        kind = node.kind()
        if kind == "prim::PythonOp":
            kind = kind + "." + node.pyname()
        handle = fca._op_handles.get(kind)
        if handle is None:  # ignored, or unsupported (= 0, as in fvcore)
            continue
        out = handle(list(node.inputs()), list(node.outputs()))
        total += sum(out.values()) if isinstance(out, Counter) else out
    return int(total)


# --------------------------------------------------------------------------- routing


def is_routed(extractor: nn.Module) -> bool:
    """True for extractors whose forward takes ``routing`` (Baseline, TADT)."""
    try:
        return "routing" in inspect.signature(extractor.forward).parameters
    except (TypeError, ValueError):
        return False


def _device_dtype(module: nn.Module):
    for p in module.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def _probe_input(module: nn.Module, h: int, w: int) -> torch.Tensor:
    """A seeded random normalised image ``(1, 3, h, w)`` on the module's device."""
    device, dtype = _device_dtype(module)
    gen = torch.Generator().manual_seed(h * 10007 + w)
    return (torch.rand(1, 3, h, w, generator=gen) * 2 - 1).to(device=device, dtype=dtype)


@contextlib.contextmanager
def _threads(n: int | None):
    """Small traces are dominated by per-op overhead: one thread avoids contention."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def _eval(module: nn.Module):
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def routing_bits(extractor: nn.Module) -> int:
    """Length 4N of the routing vector of a routed extractor."""
    n = getattr(extractor, "n_branches", None)
    if isinstance(n, int):
        return n
    with _eval(extractor):
        extractor(_probe_input(extractor, 8, 8), scale=2.0, routing="all")
    return int(extractor.last_routing.r.shape[-1])


def canonical_routing(extractor: nn.Module, routing) -> str:
    """``"all"``, ``"none"``, a bit string (``_``/spaces ignored) or a 0/1 tensor -> 4N bits.

    Raises ``ValueError`` (one line) for a malformed routing.
    """
    n = routing_bits(extractor)
    if isinstance(routing, torch.Tensor):
        r = routing.detach()
        if r.dim() == 2 and r.shape[0] == 1:
            r = r[0]
        if r.dim() != 1:
            raise ValueError(f"routing tensor must be (4N,) or (1, 4N) to count one image, got {tuple(routing.shape)}")
        vals = r.tolist()
        if any(v not in (0, 1) for v in vals):
            raise ValueError("routing tensor must hold only 0 and 1")
        routing = "".join("1" if v else "0" for v in vals)
    if not isinstance(routing, str):
        raise ValueError(f"routing must be 'all', 'none', a bit string or a tensor, not {type(routing).__name__}")
    text = routing.strip().lower()
    if text == "all":
        return "1" * n
    if text == "none":
        return "0" * n
    bits = text.replace("_", "").replace(" ", "")
    if len(bits) != n or set(bits) - {"0", "1"}:
        raise ValueError(f"routing must be 'all', 'none' or {n} bits of 0/1 ('_' allowed between groups), "
                         f"got {routing!r}")
    return bits


def routing_info(extractor: nn.Module, image: torch.Tensor, scale):
    """What ``extractor(image, scale)`` would route (eval mode): the RoutingInfo.

    Runs only the routing controller (``extractor.routing_for``), never the
    backbone. ``image``: normalised LR ``(3, H, W)`` or ``(1, 3, H, W)``.
    """
    x = image if image.dim() == 4 else image.unsqueeze(0)
    device, dtype = _device_dtype(extractor)
    with _eval(extractor):
        return extractor.routing_for(x.to(device=device, dtype=dtype), scale)


def default_routing(extractor: nn.Module, scale=None) -> str:
    """The routing of an extractor whose path does not depend on the image
    (Baseline: all branches); ``ValueError`` for TADT, whose TARC needs the image."""
    info = routing_info(extractor, _probe_input(extractor, 8, 8), scale if scale is not None else 2.0)
    if info.p is not None:
        raise ValueError("the routing of this extractor depends on the image: give routing or image")
    return canonical_routing(extractor, info.r)


def decide_routing(extractor: nn.Module, image: torch.Tensor, scale) -> str:
    """The bit string the extractor's TARC picks for one LR image and scale."""
    return canonical_routing(extractor, routing_info(extractor, image, scale).r)


# --------------------------------------------------------------------------- size fits

# Size bases tried in turn (the first that verifies wins): window models, then convnets.
_WINDOW_LADDER = (("HpWp",), ("HpWp", "HW", "1"), ("HW", "HpWp", "HWp", "HpW", "H", "W", "Hp", "Wp", "1"))
_PLAIN_LADDER = (("HW",), ("HW", "1"), ("HW", "H", "W", "1"))


def padded(n: int, window: int | None) -> int:
    """Size after the internal padding of window models (to the next multiple, 0 if already)."""
    if not window or window <= 1:
        return n
    return -(-n // window) * window


def _basis(names: Sequence[str], h: int, w: int, window: int | None) -> list[int]:
    hp, wp = padded(h, window), padded(w, window)
    vals = {"HW": h * w, "HpWp": hp * wp, "HWp": h * wp, "HpW": hp * w,
            "H": h, "W": w, "Hp": hp, "Wp": wp, "1": 1}
    return [vals[n] for n in names]


def _ladder(window: int | None) -> tuple[tuple[str, ...], ...]:
    return _PLAIN_LADDER if not window or window <= 1 else _WINDOW_LADDER


def _solve(rows: list[list[int]], rhs: list[int]) -> list[Fraction] | None:
    """Exact solution of a square system (None if singular)."""
    n = len(rows)
    a = [[Fraction(v) for v in row] + [Fraction(b)] for row, b in zip(rows, rhs)]
    for col in range(n):
        piv = next((r for r in range(col, n) if a[r][col] != 0), None)
        if piv is None:
            return None
        a[col], a[piv] = a[piv], a[col]
        for r in range(n):
            if r != col and a[r][col] != 0:
                f = a[r][col] / a[col][col]
                a[r] = [x - f * y for x, y in zip(a[r], a[col])]
    return [a[i][n] / a[i][i] for i in range(n)]


def _rank(rows: list[list[int]]) -> int:
    import numpy as np

    return int(np.linalg.matrix_rank(np.array(rows, dtype=float))) if rows else 0


def _candidate_sizes(window: int | None) -> list[tuple[int, int]]:
    m = window if window and window > 1 else 1
    if m == 1:
        hs = [8, 9, 10, 11, 12, 13, 14]
    else:
        hs = sorted({max(5, m // 2 + 1), max(5, m - 3), m, m + 1, m + 3, 2 * m - 1, 2 * m, 2 * m + 2})
    sizes = [(h, w) for h in hs for w in hs]
    return sorted(sizes, key=lambda s: (padded(s[0], m) * padded(s[1], m), s[0] * s[1], s))


def _pick_sizes(names: Sequence[str], window: int | None):
    """Small sizes whose basis rows are independent, then sizes to verify on.

    For window models the verification sizes are one exact multiple of the
    window in both directions (a wrong padding rule cannot pass) and one that
    pads differently in each direction; for convnets one size.
    """
    fit, rows = [], []
    cands = _candidate_sizes(window)
    for s in cands:
        row = _basis(names, *s, window)
        if _rank(rows + [row]) > len(rows):
            fit.append(s)
            rows.append(row)
        if len(rows) == len(names):
            break
    if len(rows) < len(names):
        raise RuntimeError(f"cannot find independent sizes for basis {names}")
    m = window if window and window > 1 else 1
    if m == 1:
        return fit, [(15, 13)]
    verify = [(2 * m, m)]
    for s in cands:
        if (s not in fit and s[0] != s[1] and s[0] % m and s[1] % m
                and (s[0] - m) * (s[1] - m) < 0 and s not in verify):
            verify.append(s)
            break
    return fit, verify


class SizeFit:
    """FLOPs of one model and routing as an exact linear function of the size basis."""

    def __init__(self, names: Sequence[str], coef: Sequence[Fraction], window: int | None):
        self.names = tuple(names)
        self.coef = tuple(Fraction(c) for c in coef)
        self.window = window

    def flops(self, h: int, w: int) -> int:
        val = sum(c * b for c, b in zip(self.coef, _basis(self.names, h, w, self.window)))
        return int(round(val))

    def combine(self, other: "SizeFit", weight: Fraction) -> "SizeFit":
        """``self + weight * other`` on the union of their bases."""
        names = list(self.names) + [n for n in other.names if n not in self.names]
        a = dict(zip(self.names, self.coef))
        b = dict(zip(other.names, other.coef))
        return SizeFit(names, [a.get(n, 0) + weight * b.get(n, 0) for n in names], self.window)

    def __sub__(self, other: "SizeFit") -> "SizeFit":
        return self.combine(other, Fraction(-1))

    def __repr__(self) -> str:
        terms = " + ".join(f"{c}*{n}" for c, n in zip(self.coef, self.names) if c)
        return f"SizeFit({terms or '0'}; window={self.window})"


class _RoutingCall(nn.Module):
    """Traces only the routing decision, ``extractor.routing_for(x, scale).r``."""

    def __init__(self, extractor: nn.Module, scale):
        super().__init__()
        self.extractor = extractor
        self.scale = scale

    def forward(self, x):
        return self.extractor.routing_for(x, self.scale).r


class _Counter:
    """Direct fvcore counts of one module at small sizes (one thread), memoised."""

    def __init__(self, module: nn.Module, kwargs: dict | None = None, probe: nn.Module | None = None):
        self.module = module
        self.kwargs = kwargs or {}
        self.probe = probe if probe is not None else module
        self.memo: dict = {}

    def __call__(self, h: int, w: int, routing: str | None = None) -> int:
        key = (h, w, routing)
        if key not in self.memo:
            kwargs = dict(self.kwargs)
            if routing is not None:
                kwargs["routing"] = routing
            with _threads(1):
                total = _quick_count(self.module, (_probe_input(self.probe, h, w),), kwargs or None)
            self.memo[key] = total
        return self.memo[key]

    @property
    def calls(self) -> int:
        return len(self.memo)


def _fit_sizes(count: Callable[[int, int], int], window: int | None, names: Sequence[str],
               verify: bool = True) -> SizeFit | None:
    """Solve for the coefficients of ``names`` at independent small sizes; with
    ``verify``, None unless the fit also predicts the verification sizes exactly."""
    fit_sizes, verify_sizes = _pick_sizes(names, window)
    rows = [_basis(names, *s, window) for s in fit_sizes]
    coef = _solve(rows, [count(*s) for s in fit_sizes])
    if coef is None:
        return None
    fit = SizeFit(names, coef, window)
    if verify and any(fit.flops(*s) != count(*s) for s in verify_sizes):
        return None
    return fit


def _fit_verified(count: Callable[[int, int], int], window: int | None, what: str) -> SizeFit:
    for names in _ladder(window):
        fit = _fit_sizes(count, window, names)
        if fit is not None:
            return fit
    raise RuntimeError(f"FLOPs of {what} are not linear in the size basis {_ladder(window)[-1]}; "
                       f"count it directly with count_flops")


def fit_extractor(extractor: nn.Module, routing: str | None = None, scale=None) -> SizeFit:
    """Fit (and verify) the size dependence of ``extractor(x, scale, routing)``."""
    window = getattr(extractor, "window_size", None)
    counter = _Counter(extractor, {"scale": scale if scale is not None else 2.0})
    return _fit_verified(lambda h, w: counter(h, w, routing), window,
                         f"{type(extractor).__name__} (routing {routing})")


class RoutedFit:
    """FLOPs of a routed backbone: ``base + sum over groups g of G(r_g)``.

    ``base`` is the fit of routing ``none``; ``G(p)`` the extra cost of one
    MSTG group whose 4-bit sub-vector is ``p``, the same for every group (they
    have equal shapes). Two forms of ``G``:

    - ``"affine"``: ``G(p) = sum_j p_j delta_j + [p != 0000] eta``. ``eta`` is
      the group's first layer norm, which fvcore's trace drops as dead code
      when no branch of the group reads it; ``delta_j`` is branch j's QKV,
      attention and slice of the projection (Eq. 2). Six routings fit it.
    - ``"table"``: ``G(p)`` fitted for each of the 16 patterns.
    """

    def __init__(self, base: SizeFit, group: dict[str, SizeFit], n_groups: int, form: str):
        self.base = base
        self.group = dict(group)  # pattern -> G(pattern), a SizeFit
        self.n_groups = n_groups
        self.form = form
        self._memo: dict[str, SizeFit] = {}

    @classmethod
    def from_fits(cls, fits: dict[str, SizeFit], n_groups: int, form: str) -> "RoutedFit":
        """``fits[p]`` = fit of the routing with pattern ``p`` in every group."""
        base = fits["0000"]
        per = {p: (f - base).combine(f - base, Fraction(1, n_groups) - 1) for p, f in fits.items()}
        if form == "affine":
            eta = per["1000"].combine(per["0100"], Fraction(1)) - per["1100"]
            delta = [per["".join("1" if i == j else "0" for i in range(4))] - eta for j in range(4)]
            group = {}
            for k in range(16):
                pat = format(k, "04b")
                g = SizeFit(base.names, [0] * len(base.names), base.window)
                for j in range(4):
                    if pat[j] == "1":
                        g = g.combine(delta[j], Fraction(1))
                if "1" in pat:
                    g = g.combine(eta, Fraction(1))
                group[pat] = g
        else:
            group = per
        return cls(base, group, n_groups, form)

    def for_routing(self, bits: str) -> SizeFit:
        if bits not in self._memo:
            fit = self.base
            for g in range(self.n_groups):
                fit = fit.combine(self.group[bits[4 * g: 4 * g + 4]], Fraction(1))
            self._memo[bits] = fit
        return self._memo[bits]


class _Cache:
    def __init__(self):
        self.plain: SizeFit | None = None
        self.routed: RoutedFit | None = None
        self.routed_failed = False
        self.per_routing: dict[str, SizeFit] = {}
        self.tarc: dict = {}
        self.traces = 0


_CACHE: "weakref.WeakKeyDictionary[nn.Module, _Cache]" = weakref.WeakKeyDictionary()


def clear_cache() -> None:
    """Forget every fit (they are kept per extractor instance while it lives)."""
    _CACHE.clear()


def _cache(extractor: nn.Module) -> _Cache:
    cache = _CACHE.get(extractor)
    if cache is None:
        cache = _CACHE[extractor] = _Cache()
    return cache


_AFFINE_PATTERNS = ("0000", "1000", "0100", "0010", "0001", "1100")
_TABLE_PATTERNS = tuple(format(k, "04b") for k in range(16))


def _fit_routed(extractor: nn.Module, scale) -> tuple[RoutedFit | None, int]:
    """Fit :class:`RoutedFit` (affine form, else table form) and verify it on
    routings it was not fitted on: ``all`` and two random ones, at the
    verification sizes. None if neither form verifies."""
    n_bits = routing_bits(extractor)
    if n_bits % 4:
        return None, 0
    n_groups = n_bits // 4
    window = getattr(extractor, "window_size", None)
    counter = _Counter(extractor, {"scale": scale})
    rng = random.Random(n_bits)
    checks = ["1" * n_bits] + ["".join(rng.choice("01") for _ in range(n_bits)) for _ in range(2)]
    for form, patterns in (("affine", _AFFINE_PATTERNS), ("table", _TABLE_PATTERNS)):
        for names in _ladder(window):
            fit_sizes, vsizes = _pick_sizes(names, window)
            fits = {}
            for pat in patterns:
                fit = _fit_sizes(lambda h, w, b=pat * n_groups: counter(h, w, b), window, names, verify=False)
                if fit is None:
                    break
                fits[pat] = fit
            else:
                cand = RoutedFit.from_fits(fits, n_groups, form)
                pairs = [(checks[0], vsizes[0]), (checks[1], vsizes[-1]), (checks[2], fit_sizes[0])]
                if all(cand.for_routing(b).flops(*s) == counter(*s, b) for b, s in pairs):
                    return cand, counter.calls
    return None, counter.calls


@dataclass
class FlopsCount:
    """FLOPs of one extractor on one image.

    ``flops`` is fvcore's count of the forward pass (the backbone along the
    routing it took). ``routing_flops`` is the TARC, counted by fvcore on its
    own when it decided the routing: fvcore's trace of the forward drops it,
    because its result only steers Python control flow (which branches run)
    and never reaches the output tensor. ``total`` adds both.
    """

    flops: int
    h: int
    w: int
    routing: str | None = None         # bit string of the path counted (routed extractors)
    routing_flops: int = 0             # the TARC, when it decided the routing
    routing_source: str | None = None  # "given", "tarc" or "default"

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def total(self) -> int:
        return self.flops + self.routing_flops

    @property
    def active_branches(self) -> int | None:
        return None if self.routing is None else self.routing.count("1")


def _backbone_flops(extractor: nn.Module, bits: str, h: int, w: int, scale) -> int:
    cache = _cache(extractor)
    if cache.routed is None and not cache.routed_failed:
        cache.routed, n = _fit_routed(extractor, scale)
        cache.traces += n
        cache.routed_failed = cache.routed is None
    if cache.routed is not None:
        return cache.routed.for_routing(bits).flops(h, w)
    if bits not in cache.per_routing:
        cache.per_routing[bits] = fit_extractor(extractor, bits, scale)
    return cache.per_routing[bits].flops(h, w)


def routing_flops(extractor: nn.Module, h: int, w: int, scale) -> int:
    """FLOPs of ``extractor.routing_for`` (the TARC) on an ``h x w`` image.

    Shapes do not depend on the scale's value, so one fit serves every scale.
    """
    cache = _cache(extractor)
    if "fit" not in cache.tarc:
        counter = _Counter(_RoutingCall(extractor, float(scale)), probe=extractor)
        # the TARC runs on the unpadded image: no window
        cache.tarc["fit"] = _fit_verified(counter, None, "the routing controller")
    return cache.tarc["fit"].flops(h, w)


def count_extractor(extractor: nn.Module, h: int, w: int, scale=None, routing=None,
                    image: torch.Tensor | None = None) -> FlopsCount:
    """FLOPs of ``extractor`` on one ``h x w`` LR image, without running it at that size.

    Plain extractors: ``extractor(x)``. Routed extractors (Baseline, TADT):
    - ``routing`` given (``"all"``, ``"none"``, bits, 0/1 tensor): the backbone
      along that path, as ``extractor(x, routing=routing)`` runs it (no TARC);
    - else ``image`` (the normalised LR image) and ``scale``: the TARC decides
      on the real image, as ``extractor(image, scale)`` does in eval mode, and
      the backbone is counted along that path (``flops``, equal to fvcore's
      count of ``extractor(image, scale)``); the TARC's own cost is in
      ``routing_flops``;
    - neither: the extractor's default path if it does not depend on the
      image (Baseline: all branches); TADT raises ``ValueError``.
    """
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {h}x{w}")
    if not is_routed(extractor):
        cache = _cache(extractor)
        if cache.plain is None:
            cache.plain = fit_extractor(extractor, None, scale)
        return FlopsCount(cache.plain.flops(h, w), h, w)
    s = float(scale) if scale is not None else 2.0
    if routing is not None:
        bits = canonical_routing(extractor, routing)
        return FlopsCount(_backbone_flops(extractor, bits, h, w, s), h, w, bits, 0, "given")
    if image is None:
        bits = default_routing(extractor, s)
        return FlopsCount(_backbone_flops(extractor, bits, h, w, s), h, w, bits, 0, "default")
    ih, iw = image.shape[-2:]
    if (ih, iw) != (h, w):
        raise ValueError(f"image is {ih}x{iw}, not {h}x{w}")
    info = routing_info(extractor, image, s)
    bits = canonical_routing(extractor, info.r)
    tarc = routing_flops(extractor, h, w, s) if info.p is not None else 0
    return FlopsCount(_backbone_flops(extractor, bits, h, w, s), h, w, bits, tarc,
                      "tarc" if info.p is not None else "default")


def extractor_flops(extractor: nn.Module, h: int, w: int, scale=None, routing=None,
                    image: torch.Tensor | None = None) -> int:
    """:func:`count_extractor`'s ``flops``: fvcore's count of the forward pass
    (for TADT deciding its own routing, without the TARC: see ``routing_flops``)."""
    return count_extractor(extractor, h, w, scale=scale, routing=routing, image=image).flops


def extractor_gflops(extractor: nn.Module, h: int, w: int, scale=None, routing=None,
                     image: torch.Tensor | None = None) -> float:
    """:func:`extractor_flops` in GFLOPs (1e9 flops)."""
    return extractor_flops(extractor, h, w, scale=scale, routing=routing, image=image) / 1e9


def direct_extractor_flops(extractor: nn.Module, h: int = 0, w: int = 0, scale=None, routing=None,
                           image: torch.Tensor | None = None) -> int:
    """fvcore's count by running the extractor once at full size (slow; for checks).

    Counts ``extractor(x, scale=scale[, routing=routing])`` where ``x`` is
    ``image`` or a seeded random ``h x w`` image.
    """
    x = image if image is not None else _probe_input(extractor, h, w)
    x = x if x.dim() == 4 else x.unsqueeze(0)
    kwargs: dict = {"scale": float(scale) if scale is not None else 2.0}
    if is_routed(extractor) and routing is not None:
        kwargs["routing"] = canonical_routing(extractor, routing)
    total, _, _ = count_flops(extractor, (x,), kwargs)
    return total


def param_count(module: nn.Module) -> int:
    """All parameters, frozen ones included (the convention of the reference counts)."""
    return sum(p.numel() for p in module.parameters())


__all__: Iterable[str] = (
    "count_flops", "count_extractor", "extractor_flops", "extractor_gflops", "direct_extractor_flops",
    "decide_routing", "default_routing", "routing_info", "routing_flops", "canonical_routing",
    "routing_bits", "is_routed", "fit_extractor",
    "FlopsCount", "SizeFit", "param_count", "HANDLES", "ZERO_OPS", "clear_cache", "padded",
)
