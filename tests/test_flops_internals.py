"""The private torch/fvcore internals that harness/flops relies on, pinned.

``harness/flops/tracing.py`` and ``handles.py`` use ``torch.jit._get_trace_graph``,
the ``torch._C`` graph/node/value API and fvcore's ``FlopCountAnalysis._op_handles``
(see tracing.py's docstring). None of them is a public, stable API. Each test
here checks one of them and fails with a message naming it, so a torch or
fvcore upgrade that removes or changes one fails in this file, not silently in
a FLOPs table.
"""
from __future__ import annotations

import inspect
import warnings
from collections import Counter
from numbers import Number

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.flops import HANDLES, ZERO_OPS
from harness.flops.tracing import count_flops, quick_count


def versions() -> str:
    import fvcore

    return f"torch {torch.__version__}, fvcore {getattr(fvcore, '__version__', '?')}"


def require(ok: bool, what: str) -> None:
    if not ok:
        pytest.fail(f"private API changed ({versions()}): {what}. harness/flops/tracing.py relies on it; "
                    f"fix the tracer before trusting any FLOPs count.", pytrace=False)


class _Double(torch.autograd.Function):
    """A Python autograd function: traced as ``prim::PythonOp`` with a ``pyname``."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return g * 2


class Probe(nn.Module):
    """Uses one op of each kind the tracer treats specially."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 4)

    def forward(self, x, grid):
        y = self.conv(x)                                       # aten::_convolution (fvcore handle)
        t = self.fc(self.norm(y.permute(0, 2, 3, 1)))          # aten::layer_norm, aten::linear
        q = t.reshape(1, 1, -1, 4)
        a = F.scaled_dot_product_attention(q, q, q)            # our SDPA handle
        z = F.grid_sample(y, grid, mode="bicubic", align_corners=False)  # our grid_sampler handle
        z = F.avg_pool2d(z, 2)                                 # our per-input handle
        return _Double.apply(z).sum() + a.sum() + torch.sin(t).sum()     # PythonOp; sin: a zero decision


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 6, 8, generator=g), torch.rand(1, 4, 6, 2, generator=g) * 2 - 1


def _trace_graph():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph, _ = torch.jit._get_trace_graph(Probe().eval(), _inputs())
    return graph


def test_torch_jit_get_trace_graph_exists_with_its_signature():
    fn = getattr(torch.jit, "_get_trace_graph", None)
    require(callable(fn), "torch.jit._get_trace_graph is gone")
    params = list(inspect.signature(fn).parameters)
    require(params[:2] == ["f", "args"], f"torch.jit._get_trace_graph(f, args, ...) now takes {params}")
    require(issubclass(getattr(torch.jit, "TracerWarning", type(None)), Warning),
            "torch.jit.TracerWarning is gone (the tracer silences it)")
    out = fn(nn.Identity(), (torch.zeros(1),))
    require(isinstance(out, tuple) and len(out) == 2, "torch.jit._get_trace_graph no longer returns (graph, outputs)")


def test_torch_graph_node_and_value_api():
    graph = _trace_graph()
    require(hasattr(graph, "nodes"), "torch._C.Graph.nodes() is gone")
    nodes = list(graph.nodes())
    for attr in ("kind", "inputs", "outputs", "pyname"):
        require(all(hasattr(n, attr) for n in nodes), f"torch._C.Node.{attr}() is gone")
    kinds = [n.kind() for n in nodes]
    for kind in ("aten::_convolution", "aten::layer_norm", "aten::linear", "aten::scaled_dot_product_attention",
                 "aten::grid_sampler", "aten::avg_pool2d", "aten::sin", "prim::PythonOp"):
        require(kind in kinds, f"a traced graph no longer holds {kind} (its kinds: {sorted(set(kinds))})")
    python_ops = [n for n in nodes if n.kind() == "prim::PythonOp"]
    require(python_ops[0].pyname() == "_Double", "torch._C.Node.pyname() no longer names a PythonOp's function")
    conv = next(n for n in nodes if n.kind() == "aten::_convolution")
    value = list(conv.outputs())[0]
    for attr in ("isCompleteTensor", "type", "toIValue"):
        require(hasattr(value, attr), f"torch._C.Value.{attr}() is gone")
    require(value.isCompleteTensor(), "torch._C.Value.isCompleteTensor() is False on a traced conv output")
    require(list(value.type().sizes()) == [1, 4, 6, 8], "torch._C.Value.type().sizes() no longer gives the shape")
    grid = next(n for n in nodes if n.kind() == "aten::grid_sampler")
    require(list(grid.inputs())[2].toIValue() == 2,
            "aten::grid_sampler's 3rd input (mode) is no longer a constant 2 for bicubic via toIValue()")


def test_fvcore_flop_count_analysis_internals():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis
    for name in ("set_op_handle", "unsupported_ops_warnings", "uncalled_modules_warnings", "tracer_warnings",
                 "total", "by_operator", "unsupported_ops"):
        require(callable(getattr(FlopCountAnalysis, name, None)), f"fvcore FlopCountAnalysis.{name} is gone")
    fca = FlopCountAnalysis(Probe(), _inputs())
    handles = getattr(fca, "_op_handles", None)
    require(isinstance(handles, dict), "fvcore FlopCountAnalysis._op_handles is no longer a dict")
    for kind in ("aten::_convolution", "aten::linear", "aten::layer_norm", "aten::matmul", "aten::bmm"):
        require(callable(handles.get(kind)), f"fvcore has no default handle for {kind} in _op_handles")
    mine = HANDLES["aten::grid_sampler"]
    fca.set_op_handle("aten::grid_sampler", mine)
    require(fca._op_handles.get("aten::grid_sampler") is mine, "set_op_handle no longer stores into _op_handles")
    fca.set_op_handle("aten::sin", None)
    require(fca._op_handles.get("aten::sin") is None,
            "set_op_handle(name, None) now leaves a handle in _op_handles (the tracer reads None as 'ignored')")
    # what a handle returns: a number or a Counter (the tracer sums either)
    graph = _trace_graph()
    linear = next(n for n in graph.nodes() if n.kind() == "aten::linear")
    out = handles["aten::linear"](list(linear.inputs()), list(linear.outputs()))
    require(isinstance(out, (Number, Counter)), f"fvcore handles now return {type(out).__name__}")


def test_quick_count_equals_fvcore_analysis_on_every_special_case():
    model, inputs = Probe().eval(), _inputs()
    total, by_op, unsupported = count_flops(model, inputs)
    # a Python autograd function is named "prim::PythonOp.<pyname>" (no decision here: counted 0)
    require(unsupported == {"prim::PythonOp._Double": 1},
            f"fvcore no longer reports a PythonOp by its pyname, or a new op appeared: {unsupported}")
    require(quick_count(model, inputs) == total,
            "the fast count (torch.jit trace + fvcore's _op_handles) no longer equals FlopCountAnalysis")
    assert {"conv", "linear", "layer_norm", "scaled_dot_product_attention", "grid_sampler", "avg_pool2d"} <= set(by_op)
    assert "aten::sin" in ZERO_OPS and "sin" not in by_op
