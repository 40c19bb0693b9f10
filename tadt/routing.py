"""Routing vectors of the routed backbones (Baseline, TADT): parsing and canonical form.

A routing says which of the ``4N`` attention branches run (``N`` groups of
four). It is given as ``"all"``, ``"none"``, a string of ``4N`` characters
``0``/``1`` (``_`` and spaces ignored, so ``"1011_0110"`` reads group by
group), or a 0/1 tensor or sequence of shape ``(4N,)`` or ``(B, 4N)``.

This module is the one place that reads those forms: the models
(:meth:`tadt.model.Baseline.forward`) turn them into a ``(B, 4N)`` tensor with
:func:`routing_tensor`, the FLOPs counter and the evaluation CSVs write one
image's routing as its canonical bit string (:func:`routing_string`,
``4N`` characters, no separators).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

RoutingArg = Union[None, str, torch.Tensor, Sequence[int]]


@dataclass
class RoutingInfo:
    """What the last forward pass used.

    ``r``: ``(B, 4N)`` routing vector (0/1 values; during training it carries
    the straight-through gradient of Eq. 4). ``p``: ``(B, 4N)`` task-aware
    probabilities of Eq. 3, ``beta``: ``(B,)`` intensity scalar; both are None
    for the Baseline and for forced routings. ``beta`` keeps its autograd
    graph so the trainer can add ``intensity_loss(beta, scale)``.
    """

    r: torch.Tensor
    p: Optional[torch.Tensor] = None
    beta: Optional[torch.Tensor] = None

    @property
    def active(self) -> torch.Tensor:
        """Number of active branches per sample, ``(B,)``."""
        return (self.r.detach() != 0).sum(1)

    def bits(self, i: int = 0) -> str:
        """Routing of sample ``i`` as a bit string (groups separated by ``_``)."""
        b = bit_string(self.r[i])
        return "_".join(b[k:k + 4] for k in range(0, len(b), 4))


def bit_string(r: torch.Tensor) -> str:
    """A 0/1 vector ``(4N,)`` as ``4N`` characters ``0``/``1`` (nonzero = 1)."""
    return "".join("1" if v else "0" for v in (r.detach() != 0).tolist())


def parse_routing_text(text: str, n: int) -> str:
    """``"all"``, ``"none"`` or ``n`` bits (``_``/spaces ignored) -> ``n`` characters ``0``/``1``.

    Raises ``ValueError`` (one line) for anything else.
    """
    key = text.strip().lower()
    if key == "all":
        return "1" * n
    if key == "none":
        return "0" * n
    bits = key.replace("_", "").replace(" ", "")
    if len(bits) != n or set(bits) - {"0", "1"}:
        raise ValueError(f"routing must be 'all', 'none' or {n} bits of 0/1 ('_' allowed between groups), "
                         f"got {text!r}")
    return bits


def routing_tensor(routing: RoutingArg, n: int, batch: int = 1, device=None) -> torch.Tensor:
    """A forced routing as a float ``(batch, n)`` tensor of 0/1.

    ``routing``: a string (see :func:`parse_routing_text`), or a 0/1 tensor or
    sequence of shape ``(n,)``, ``(1, n)`` or ``(batch, n)``. Raises ``ValueError``.
    """
    if isinstance(routing, str):
        r = torch.tensor([float(c) for c in parse_routing_text(routing, n)], device=device)
    else:
        try:
            r = torch.as_tensor(routing, device=device).detach().float()
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"routing must be 'all', 'none', a bit string or a 0/1 tensor, "
                             f"not {type(routing).__name__}") from None
    if r.dim() == 1:
        r = r.unsqueeze(0)
    if r.dim() != 2 or r.shape[1] != n or r.shape[0] not in (1, batch):
        shapes = f"({n},) or (1, {n})" if batch == 1 else f"({n},) or ({batch}, {n})"
        raise ValueError(f"routing tensor must have shape {shapes}, got {tuple(r.shape)}")
    if bool(((r != 0) & (r != 1)).any()):
        raise ValueError("routing tensor must hold only 0 and 1")
    return r.expand(batch, n).to(device)


def routing_string(routing: RoutingArg, n: int) -> str:
    """One image's routing in canonical form: ``n`` characters ``0``/``1``.

    Accepts every form of :func:`routing_tensor` with one row. Raises ``ValueError``.
    """
    if isinstance(routing, str):
        return parse_routing_text(routing, n)
    return bit_string(routing_tensor(routing, n, 1, "cpu")[0])


__all__ = ["RoutingArg", "RoutingInfo", "bit_string", "parse_routing_text", "routing_tensor", "routing_string"]
