"""The exact size fit: FLOPs of one model and routing as a function of the input size.

Counting by execution at full size is slow (minutes for SwinIR on a 768x1020
image). For a fixed model and routing, every operator costs a sum of terms
proportional to the number of pixels of the map it runs on: the input size
``H*W``, or the size padded internally to the window multiple, ``Hp*Wp``
(``Hp`` = ``H`` rounded up to a multiple of ``window_size``), plus constants
(RCAN's channel attention on 1x1 maps, the TARC's scale MLP).
:func:`fit_verified` counts with fvcore at a few small sizes, solves exactly
(rational arithmetic) for the coefficients of a size basis, and *verifies* the
solution on sizes it was not fitted on (for window models one exact multiple of
the window in both directions, so a wrong padding rule cannot pass, and one
that pads differently in each direction). The bases tried, smallest first:
``[Hp*Wp]``, ``[Hp*Wp, H*W, 1]``, ``[H*W, Hp*Wp, H*Wp, Hp*W, H, W, Hp, Wp, 1]``
(convnets: ``[H*W]``, ``[H*W, 1]``, ``[H*W, H, W, 1]``). Evaluating a
:class:`SizeFit` at any size is then arithmetic.

An extractor whose costs follow other size terms declares them:
``flops_terms(h, w) -> {name: int}`` (NLSA: pixels, pixels padded to whole
attention chunks, pixels times hash rotations, whose number steps with the
size). :func:`fit_terms` fits those at the smallest independent sizes of
:data:`TERM_SIDES` and verifies at :data:`TERM_CHECKS`, sizes beyond the fitted
ones where the stepped terms take other values.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable, Sequence

import torch.nn as nn

from harness.flops.tracing import probe_input, quick_count, threads

# Size bases tried in turn (the first that verifies wins): window models, then convnets.
_WINDOW_LADDER = (("HpWp",), ("HpWp", "HW", "1"), ("HW", "HpWp", "HWp", "HpW", "H", "W", "Hp", "Wp", "1"))
_PLAIN_LADDER = (("HW",), ("HW", "1"), ("HW", "H", "W", "1"))
# An extractor's own size terms (its ``flops_terms``): sides to fit on, sizes to verify on.
Terms = Callable[[int, int], dict]
TERM_SIDES = (8, 9, 10, 11, 12, 13, 14, 16, 20, 24, 28, 32)
TERM_CHECKS = ((15, 13), (37, 29))


def padded(n: int, window: int | None) -> int:
    """Size after the internal padding of window models (to the next multiple, 0 if already)."""
    if not window or window <= 1:
        return n
    return -(-n // window) * window


def _basis(names: Sequence[str], h: int, w: int, window: int | None, terms: Terms | None = None) -> list[int]:
    if terms is not None:
        vals = terms(h, w)
        return [vals[n] for n in names]
    hp, wp = padded(h, window), padded(w, window)
    vals = {"HW": h * w, "HpWp": hp * wp, "HWp": h * wp, "HpW": hp * w,
            "H": h, "W": w, "Hp": hp, "Wp": wp, "1": 1}
    return [vals[n] for n in names]


def ladder(window: int | None) -> tuple[tuple[str, ...], ...]:
    """The size bases to try, smallest first."""
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


def pick_sizes(names: Sequence[str], window: int | None):
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

    def __init__(self, names: Sequence[str], coef: Sequence[Fraction], window: int | None,
                 terms: Terms | None = None):
        self.names = tuple(names)
        self.coef = tuple(Fraction(c) for c in coef)
        self.window = window
        self.terms = terms

    def flops(self, h: int, w: int) -> int:
        val = sum(c * b for c, b in zip(self.coef, _basis(self.names, h, w, self.window, self.terms)))
        return int(round(val))

    def combine(self, other: "SizeFit", weight: Fraction) -> "SizeFit":
        """``self + weight * other`` on the union of their bases."""
        names = list(self.names) + [n for n in other.names if n not in self.names]
        a = dict(zip(self.names, self.coef))
        b = dict(zip(other.names, other.coef))
        return SizeFit(names, [a.get(n, 0) + weight * b.get(n, 0) for n in names], self.window, self.terms)

    def __sub__(self, other: "SizeFit") -> "SizeFit":
        return self.combine(other, Fraction(-1))

    def __repr__(self) -> str:
        terms = " + ".join(f"{c}*{n}" for c, n in zip(self.coef, self.names) if c)
        return f"SizeFit({terms or '0'}; window={self.window})"


class SmallCounts:
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
            with threads(1):
                total = quick_count(self.module, (probe_input(self.probe, h, w),), kwargs or None)
            self.memo[key] = total
        return self.memo[key]

    @property
    def calls(self) -> int:
        return len(self.memo)


def fit_sizes(count: Callable[[int, int], int], window: int | None, names: Sequence[str],
              verify: bool = True) -> SizeFit | None:
    """Solve for the coefficients of ``names`` at independent small sizes; with
    ``verify``, None unless the fit also predicts the verification sizes exactly."""
    sizes, checks = pick_sizes(names, window)
    rows = [_basis(names, *s, window) for s in sizes]
    coef = _solve(rows, [count(*s) for s in sizes])
    if coef is None:
        return None
    fit = SizeFit(names, coef, window)
    if verify and any(fit.flops(*s) != count(*s) for s in checks):
        return None
    return fit


def fit_verified(count: Callable[[int, int], int], window: int | None, what: str) -> SizeFit:
    """The first basis of :func:`ladder` whose fit verifies; ``RuntimeError`` if none does."""
    for names in ladder(window):
        fit = fit_sizes(count, window, names)
        if fit is not None:
            return fit
    raise RuntimeError(f"FLOPs of {what} are not linear in the size basis {ladder(window)[-1]}; "
                       f"count it directly with count_flops")


def fit_terms(count: Callable[[int, int], int], terms: Terms, what: str) -> SizeFit:
    """Fit on an extractor's own size terms; ``RuntimeError`` if the fit does not verify."""
    names = tuple(terms(1, 1))
    sizes, rows = [], []
    for s in sorted(((h, w) for h in TERM_SIDES for w in TERM_SIDES), key=lambda s: (s[0] * s[1], s)):
        row = _basis(names, *s, None, terms)
        if len(rows) < len(names) and _rank(rows + [row]) > len(rows):
            sizes.append(s)
            rows.append(row)
    coef = _solve(rows, [count(*s) for s in sizes]) if len(rows) == len(names) else None
    fit = SizeFit(names, coef, None, terms) if coef is not None else None
    if fit is None or any(fit.flops(*s) != count(*s) for s in TERM_CHECKS):
        raise RuntimeError(f"FLOPs of {what} are not linear in its size terms {names}; "
                           f"count it directly with count_flops")
    return fit


def fit_extractor(extractor: nn.Module, routing: str | None = None, scale=None) -> SizeFit:
    """Fit (and verify) the size dependence of ``extractor(x, scale, routing)``."""
    window = getattr(extractor, "window_size", None)
    counter = SmallCounts(extractor, {"scale": scale if scale is not None else 2.0})
    what = f"{type(extractor).__name__} (routing {routing})"
    terms = getattr(extractor, "flops_terms", None)
    if terms is not None:
        return fit_terms(lambda h, w: counter(h, w, routing), terms, what)
    return fit_verified(lambda h, w: counter(h, w, routing), window, what)


__all__ = ["SizeFit", "SmallCounts", "padded", "ladder", "pick_sizes", "fit_sizes", "fit_verified",
           "fit_terms", "fit_extractor"]
