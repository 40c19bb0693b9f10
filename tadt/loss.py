"""The intensity penalty of TADT (paper section 3.4, Eqs. 5-7).

``L = L1 + LAMBDA_BETA * intensity_loss(beta, scale)``; the Baseline is trained
with lambda = 0, TADT fine-tuned with ``LAMBDA_BETA`` (the "w/o L_beta"
ablation of Table 5 is TADT fine-tuned with lambda = 0). The trainer adds the
term; ``beta`` comes from ``encoder.last_routing.beta``.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch

LAMBDA_BETA = 2e-4
"""lambda of Eq. 5."""

ALPHA = (0.25, 0.25, 0.5)
"""(alpha_1, alpha_2, alpha_3) of Eq. 6."""


def intensity_threshold(scale: Union[float, torch.Tensor], alpha: Sequence[float] = ALPHA):
    """``alpha_1 + alpha_2 * s ** alpha_3`` (Eq. 6): 0.75 at s = 4, 1.0 at s = 9.
    A float for a float scale, a tensor for a tensor."""
    a1, a2, a3 = alpha
    return a1 + a2 * scale ** a3


def intensity_loss(beta: torch.Tensor, scale: Union[float, torch.Tensor],
                   alpha: Sequence[float] = ALPHA) -> torch.Tensor:
    """``L_beta = mean over the batch of beta * M`` with ``M = [beta >= alpha_1 + alpha_2 s^alpha_3]``
    (Eqs. 6-7). ``beta (B,)``; ``scale`` a float or ``(B,)``. The mask carries
    no gradient: only a beta at or above its scale's threshold is pushed down.
    """
    if beta is None:
        raise ValueError("no beta: the Baseline (or a forced routing) has no intensity to penalise")
    beta = beta.reshape(-1)
    s = torch.as_tensor(scale, dtype=beta.dtype, device=beta.device).reshape(-1)
    thr = intensity_threshold(s, alpha).to(beta.dtype)
    mask = (beta.detach() >= thr).to(beta.dtype)
    return (beta * mask).mean()
