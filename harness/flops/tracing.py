"""Counting one call of a module with fvcore: the full analysis, and a fast total.

:func:`count_flops` is fvcore's ``FlopCountAnalysis`` with our operator
decisions (:mod:`harness.flops.handles`). :func:`quick_count` is the same
total, computed faster for the size fits: it traces with ``torch.jit`` alone
and applies fvcore's handle table node by node, skipping the per-module scope
hooks fvcore adds for ``by_module`` (which make its trace 1.5-3x slower). The
tests check that both give the same totals.

Private internals this module relies on (``tests/test_flops_internals.py``
checks each of them, so a torch or fvcore upgrade that changes one fails there,
with a message naming it, instead of silently changing a table):

- ``torch.jit._get_trace_graph(module, inputs)`` -> ``(graph, outputs)``;
- the graph API of ``torch._C``: ``graph.nodes()``, ``node.kind()``,
  ``node.pyname()`` (for ``prim::PythonOp``), ``node.inputs()``,
  ``node.outputs()``, and on values ``type().sizes()``,
  ``isCompleteTensor()`` and ``toIValue()`` (used by the handles);
- fvcore's ``FlopCountAnalysis._op_handles``: the dict operator -> handle that
  ``set_op_handle`` fills (a handle of None goes to ``_ignored_ops`` instead);
  handles return an int or a ``collections.Counter``.
"""
from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from typing import Iterator

import torch
import torch.nn as nn

from harness.flops.handles import HANDLES, ZERO_OPS


def _analysis(module: nn.Module, inputs: tuple):
    """fvcore's ``FlopCountAnalysis`` of ``module(*inputs)`` with our decisions, quiet."""
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


class Call(nn.Module):
    """Traces ``module(*inputs, **kwargs)`` where kwargs are not tensors (routing strings)."""

    def __init__(self, module: nn.Module, kwargs: dict):
        super().__init__()
        self.module = module
        self.kwargs = kwargs

    def forward(self, *inputs):
        return self.module(*inputs, **self.kwargs)


@contextlib.contextmanager
def inference(module: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients; every submodule's own mode is restored after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode


@contextlib.contextmanager
def _quiet_trace() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[None]:
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


def _as_inputs(inputs) -> tuple:
    return (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)


def count_flops(module: nn.Module, inputs, call_kwargs: dict | None = None):
    """Count ``module(*inputs, **call_kwargs)`` with fvcore and our handles.

    Runs the module once (in eval mode, without gradients; the mode is
    restored). Returns ``(total, by_operator, unsupported)``: the total flops
    (one multiply-add = one flop), a dict operator -> flops, and fvcore's
    ``unsupported_ops()`` (operator -> number of occurrences counted as zero
    without a decision; empty for every model in this repository).
    """
    inputs = _as_inputs(inputs)
    target = Call(module, call_kwargs) if call_kwargs else module
    with inference(module), _quiet_trace():
        fca = _analysis(target, inputs)
        total = int(fca.total())
        by_op = {k: int(v) for k, v in fca.by_operator().items()}
        unsupported = dict(fca.unsupported_ops())
    return total, by_op, unsupported


def quick_count(module: nn.Module, inputs, call_kwargs: dict | None = None) -> int:
    """:func:`count_flops`'s total through fvcore's own handles and ignore rules,
    applied to a plain ``torch.jit`` trace (see the module docstring)."""
    inputs = _as_inputs(inputs)
    target = Call(module, call_kwargs) if call_kwargs else module
    handles = _analysis(target, inputs)._op_handles  # fvcore's table, with ours; ignored ops absent
    with inference(module), _quiet_trace():
        graph, _ = torch.jit._get_trace_graph(target, inputs)
    total = 0
    for node in graph.nodes():
        kind = node.kind()
        if kind == "prim::PythonOp":
            kind = kind + "." + node.pyname()
        handle = handles.get(kind)
        if handle is None:  # ignored, or unsupported (= 0, as in fvcore)
            continue
        out = handle(list(node.inputs()), list(node.outputs()))
        total += sum(out.values()) if isinstance(out, Counter) else out
    return int(total)


def device_dtype(module: nn.Module):
    """Device and dtype of the module's first parameter (CPU float32 without any)."""
    for p in module.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def probe_input(module: nn.Module, h: int, w: int) -> torch.Tensor:
    """A seeded random normalised image ``(1, 3, h, w)`` on the module's device."""
    device, dtype = device_dtype(module)
    gen = torch.Generator().manual_seed(h * 10007 + w)
    return (torch.rand(1, 3, h, w, generator=gen) * 2 - 1).to(device=device, dtype=dtype)


__all__ = ["count_flops", "quick_count", "Call", "inference", "threads", "device_dtype", "probe_input"]
