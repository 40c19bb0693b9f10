"""Routed extractors (Baseline, TADT): their routing, and the routed fit with its cache.

Routing parsing itself lives in :mod:`tadt.routing` (shared with the models);
here are the questions the counter asks an extractor: is it routed, how many
bits is its routing, which bits does its TARC pick for an image.

A routed backbone is counted as ``base + sum_g G(r_g)`` (:class:`RoutedFit`):
``base`` the fit of routing ``none``, ``G(p)`` the extra cost of one MSTG group
whose 4-bit sub-vector is ``p`` (the groups have equal shapes). ``G`` is first
fitted as ``sum_j p_j delta_j + [p != 0] eta`` (branch j's QKV, attention and
slice of the projection, Eq. 2; ``eta`` the group's first layer norm, which
fvcore's trace drops as dead code when no branch of the group reads it) from
six routings; if that does not verify on ``all`` and two random routings, from
all 16 patterns; and if that fails too, one size fit per bit string. The
routing of a real image comes from the extractor's own routing API
(``routing_for``, the TARC only), never from running the backbone.

Every fit is cached per extractor instance (:func:`fits_of`), for as long as
the instance lives.
"""
from __future__ import annotations

import inspect
import random
import weakref
from fractions import Fraction

import torch
import torch.nn as nn

from harness.flops.sizefit import SizeFit, SmallCounts, fit_extractor, fit_sizes, fit_verified, ladder, pick_sizes
from harness.flops.tracing import device_dtype, inference, probe_input
from tadt.routing import routing_string

# --------------------------------------------------------------------------- routing of an extractor


def is_routed(extractor: nn.Module) -> bool:
    """True for extractors whose forward takes ``routing`` (Baseline, TADT)."""
    try:
        return "routing" in inspect.signature(extractor.forward).parameters
    except (TypeError, ValueError):
        return False


def routing_bits(extractor: nn.Module) -> int:
    """Length 4N of the routing vector of a routed extractor."""
    n = getattr(extractor, "n_branches", None)
    if isinstance(n, int):
        return n
    with inference(extractor):
        extractor(probe_input(extractor, 8, 8), scale=2.0, routing="all")
    return int(extractor.last_routing.r.shape[-1])


def canonical_routing(extractor: nn.Module, routing) -> str:
    """``"all"``, ``"none"``, a bit string (``_``/spaces ignored) or a 0/1 tensor -> 4N bits.

    Raises ``ValueError`` (one line) for a malformed routing (:func:`tadt.routing.routing_string`).
    """
    return routing_string(routing, routing_bits(extractor))


def routing_info(extractor: nn.Module, image: torch.Tensor, scale):
    """What ``extractor(image, scale)`` would route (eval mode): the RoutingInfo.

    Runs only the routing controller (``extractor.routing_for``), never the
    backbone. ``image``: normalised LR ``(3, H, W)`` or ``(1, 3, H, W)``.
    """
    x = image if image.dim() == 4 else image.unsqueeze(0)
    device, dtype = device_dtype(extractor)
    with inference(extractor):
        return extractor.routing_for(x.to(device=device, dtype=dtype), scale)


def default_routing(extractor: nn.Module, scale=None) -> str:
    """The routing of an extractor whose path does not depend on the image
    (Baseline: all branches); ``ValueError`` for TADT, whose TARC needs the image."""
    info = routing_info(extractor, probe_input(extractor, 8, 8), scale if scale is not None else 2.0)
    if info.p is not None:
        raise ValueError("the routing of this extractor depends on the image: give routing or image")
    return canonical_routing(extractor, info.r)


def decide_routing(extractor: nn.Module, image: torch.Tensor, scale) -> str:
    """The bit string the extractor's TARC picks for one normalised image and scale."""
    return canonical_routing(extractor, routing_info(extractor, image, scale).r)


class RoutingCall(nn.Module):
    """Traces only the routing decision, ``extractor.routing_for(x, scale).r``."""

    def __init__(self, extractor: nn.Module, scale):
        super().__init__()
        self.extractor = extractor
        self.scale = scale

    def forward(self, x):
        return self.extractor.routing_for(x, self.scale).r


# --------------------------------------------------------------------------- the routed fit


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
        """The size fit of one routing (canonical bit string)."""
        if bits not in self._memo:
            fit = self.base
            for g in range(self.n_groups):
                fit = fit.combine(self.group[bits[4 * g: 4 * g + 4]], Fraction(1))
            self._memo[bits] = fit
        return self._memo[bits]


_AFFINE_PATTERNS = ("0000", "1000", "0100", "0010", "0001", "1100")
_TABLE_PATTERNS = tuple(format(k, "04b") for k in range(16))


def fit_routed(extractor: nn.Module, scale) -> RoutedFit | None:
    """Fit :class:`RoutedFit` (affine form, else table form) and verify it on
    routings it was not fitted on: ``all`` and two random ones, at the
    verification sizes. None if neither form verifies."""
    n_bits = routing_bits(extractor)
    if n_bits % 4:
        return None
    n_groups = n_bits // 4
    window = getattr(extractor, "window_size", None)
    counter = SmallCounts(extractor, {"scale": scale})
    rng = random.Random(n_bits)
    checks = ["1" * n_bits] + ["".join(rng.choice("01") for _ in range(n_bits)) for _ in range(2)]
    for form, patterns in (("affine", _AFFINE_PATTERNS), ("table", _TABLE_PATTERNS)):
        for names in ladder(window):
            sizes, vsizes = pick_sizes(names, window)
            fits = {}
            for pat in patterns:
                fit = fit_sizes(lambda h, w, b=pat * n_groups: counter(h, w, b), window, names, verify=False)
                if fit is None:
                    break
                fits[pat] = fit
            else:
                cand = RoutedFit.from_fits(fits, n_groups, form)
                pairs = [(checks[0], vsizes[0]), (checks[1], vsizes[-1]), (checks[2], sizes[0])]
                if all(cand.for_routing(b).flops(*s) == counter(*s, b) for b, s in pairs):
                    return cand
    return None


# --------------------------------------------------------------------------- cache and counts


class Fits:
    """The fits of one extractor instance: plain, routed (or per routing), the TARC's."""

    def __init__(self):
        self.plain: SizeFit | None = None
        self.routed: RoutedFit | None = None
        self.routed_failed = False
        self.per_routing: dict[str, SizeFit] = {}
        self.tarc: SizeFit | None = None


_FITS: "weakref.WeakKeyDictionary[nn.Module, Fits]" = weakref.WeakKeyDictionary()


def fits_of(extractor: nn.Module) -> Fits:
    """The cached fits of ``extractor`` (created empty on first use)."""
    fits = _FITS.get(extractor)
    if fits is None:
        fits = _FITS[extractor] = Fits()
    return fits


def plain_flops(extractor: nn.Module, h: int, w: int, scale=None) -> int:
    """FLOPs of ``extractor(x, scale)`` on ``h x w`` for an extractor without routing."""
    fits = fits_of(extractor)
    if fits.plain is None:
        fits.plain = fit_extractor(extractor, None, scale)
    return fits.plain.flops(h, w)


def backbone_flops(extractor: nn.Module, bits: str, h: int, w: int, scale) -> int:
    """FLOPs of a routed extractor's backbone along ``bits`` on ``h x w``."""
    fits = fits_of(extractor)
    if fits.routed is None and not fits.routed_failed:
        fits.routed = fit_routed(extractor, scale)
        fits.routed_failed = fits.routed is None
    if fits.routed is not None:
        return fits.routed.for_routing(bits).flops(h, w)
    if bits not in fits.per_routing:
        fits.per_routing[bits] = fit_extractor(extractor, bits, scale)
    return fits.per_routing[bits].flops(h, w)


def routing_flops(extractor: nn.Module, h: int, w: int, scale) -> int:
    """FLOPs of ``extractor.routing_for`` (the TARC) on an ``h x w`` image.

    Shapes do not depend on the scale's value, so one fit serves every scale.
    """
    fits = fits_of(extractor)
    if fits.tarc is None:
        counter = SmallCounts(RoutingCall(extractor, float(scale)), probe=extractor)
        # the TARC runs on the image as given: no window
        fits.tarc = fit_verified(counter, None, "the routing controller")
    return fits.tarc.flops(h, w)


__all__ = ["is_routed", "routing_bits", "canonical_routing", "routing_info", "default_routing",
           "decide_routing", "RoutingCall", "RoutedFit", "fit_routed", "Fits", "fits_of", "plain_flops",
           "backbone_flops", "routing_flops"]
