"""FLOPs of extractors and models, in the paper's convention (fvcore's).

Convention
----------
The paper's FLOPs are those of ``fvcore.nn.FlopCountAnalysis``: one
multiply-add is one flop, and normalisation layers are counted (fvcore's norm
handle: 5 per element with an affine transform, 4 without). fvcore traces the
model, so a routed TADT is counted along the path it took. Every operator our
models use has a decision (:mod:`harness.flops.handles`, with the table).

What fvcore's trace sees
------------------------
fvcore counts the traced graph, which keeps only ops that the output depends
on. Two consequences for TADT, both kept (they are fvcore's count, hence the
paper's convention): a group whose four branches are all off has its first
layer norm dropped as dead code; and the TARC is dropped from the count of
``forward(x, scale)``, because its result only steers Python control flow
(which branches run). :func:`count_extractor` therefore reports the TARC's own
count apart (``routing_flops``), counted by fvcore on the TARC alone.

Layout
------
- :mod:`~harness.flops.handles`: operator handles and zero decisions;
- :mod:`~harness.flops.tracing`: one fvcore count of one call (the code that
  relies on private torch/fvcore APIs, pinned by ``tests/test_flops_internals.py``);
- :mod:`~harness.flops.sizefit`: the exact size fit (:class:`SizeFit`), which
  makes counting a full-size image a few small traces plus arithmetic;
- :mod:`~harness.flops.routed`: routed extractors (Baseline, TADT), the routed
  fit and the per-extractor cache;
- this module: the public API (:func:`count_extractor` and its shorthands).

Routing strings and tensors are parsed by :mod:`tadt.routing`, the same code
the models use.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from harness.flops.handles import HANDLES, ZERO_OPS
from harness.flops.routed import (backbone_flops, canonical_routing, decide_routing, default_routing, is_routed,
                                  plain_flops, routing_bits, routing_flops, routing_info)
from harness.flops.sizefit import SizeFit, fit_extractor, padded
from harness.flops.tracing import count_flops, probe_input
from tadt.routing import RoutingInfo


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


def count_extractor(extractor: nn.Module, h: int, w: int, scale=None, routing=None,
                    image: torch.Tensor | None = None, direct: bool = False) -> FlopsCount:
    """FLOPs of ``extractor`` on one ``h x w`` LR image, without running it at that size.

    Plain extractors: ``extractor(x)``. Routed extractors (Baseline, TADT):

    - ``routing`` a forced path (``"all"``, ``"none"``, bits, 0/1 tensor): the
      backbone along it, as ``extractor(x, routing=routing)`` runs it (no TARC);
    - ``routing`` a :class:`tadt.routing.RoutingInfo` (what ``routing_for``
      returned, e.g. the routing evaluation used,
      :func:`harness.evaluate.evaluation_routing`): the backbone along its
      path; when a TARC decided it (``p`` set), its cost is in ``routing_flops``;
    - else ``image`` (the normalised LR image, ``h x w``) and ``scale``: the
      TARC decides on that image, as ``extractor(image, scale)`` does in eval
      mode (``flops`` equals fvcore's count of ``extractor(image, scale)``);
    - neither: the extractor's default path if it does not depend on the
      image (Baseline: all branches); TADT raises ``ValueError``.

    ``direct``: count ``flops`` with fvcore at full size instead
    (:func:`direct_extractor_flops`; slow, for checks).
    """
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {h}x{w}")
    if not is_routed(extractor):
        flops = direct_extractor_flops(extractor, h, w, scale) if direct else plain_flops(extractor, h, w, scale)
        return FlopsCount(flops, h, w)
    s = float(scale) if scale is not None else 2.0
    if routing is None and image is not None:
        ih, iw = image.shape[-2:]
        if (ih, iw) != (h, w):
            raise ValueError(f"image is {ih}x{iw}, not {h}x{w}")
        routing = routing_info(extractor, image, s)
    tarc = 0
    if isinstance(routing, RoutingInfo):
        bits = canonical_routing(extractor, routing.r)
        source = "tarc" if routing.p is not None else "default"
        tarc = routing_flops(extractor, h, w, s) if routing.p is not None else 0
    elif routing is not None:
        bits, source = canonical_routing(extractor, routing), "given"
    else:
        bits, source = default_routing(extractor, s), "default"
    if direct:
        flops = direct_extractor_flops(extractor, h, w, s, bits)
    else:
        flops = backbone_flops(extractor, bits, h, w, s)
    return FlopsCount(flops, h, w, bits, tarc, source)


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
    x = image if image is not None else probe_input(extractor, h, w)
    x = x if x.dim() == 4 else x.unsqueeze(0)
    kwargs: dict = {"scale": float(scale) if scale is not None else 2.0}
    if is_routed(extractor) and routing is not None:
        kwargs["routing"] = canonical_routing(extractor, routing)
    total, _, _ = count_flops(extractor, (x,), kwargs)
    return total


__all__ = [
    "count_flops", "count_extractor", "extractor_flops", "extractor_gflops", "direct_extractor_flops",
    "decide_routing", "default_routing", "routing_info", "routing_flops", "canonical_routing",
    "routing_bits", "is_routed", "fit_extractor",
    "FlopsCount", "SizeFit", "HANDLES", "ZERO_OPS", "padded",
]
