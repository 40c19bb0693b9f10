"""The Task-Aware Routing Controller (TARC, paper section 3.3, Fig. 3c, Eqs. 3-4).

From the LR image and the scale it predicts which of the backbone's 4N
attention branches an inference task needs: an image branch gives per-branch
logits, a scale branch the intensity beta, and Eq. 3 turns both into branch
probabilities. ``tadt.model.TADT`` owns one and decides the routing from them.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

BETA_MODES = ("learned", "fixed", "linear")


class TaskAwareRoutingController(nn.Module):
    """TARC (Fig. 3c, Eqs. 3-4).

    Image branch: two 3x3 convs, global average pool, linear -> logits ``e``
    ``(B, 4N)``. Scale branch: three linear layers on ``log s`` -> ``beta``
    (sigmoid output, in (0, 1)); replaced by ``0.5`` (``beta_mode='fixed'``) or
    ``0.25 s`` (``'linear'``) for the Table 4 ablations.
    """

    def __init__(self, n_branches: int, width: int = 32, scale_hidden: int = 16,
                 beta_mode: str = "learned", beta_init: float = 0.88):
        super().__init__()
        if beta_mode not in BETA_MODES:
            raise ValueError(f"beta_mode must be one of {BETA_MODES}, got {beta_mode!r}")
        self.n_branches = n_branches
        self.beta_mode = beta_mode
        self.image_branch = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(width, width, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(width, n_branches),
        )
        if beta_mode == "learned":
            self.scale_branch = nn.Sequential(
                nn.Linear(1, scale_hidden), nn.ReLU(inplace=True),
                nn.Linear(scale_hidden, scale_hidden), nn.ReLU(inplace=True),
                nn.Linear(scale_hidden, 1),
            )
            # Start near "most branches on": TADT is fine-tuned from a Baseline
            # trained with every branch active.
            with torch.no_grad():
                self.scale_branch[-1].bias.fill_(math.log(beta_init / (1 - beta_init)))
        else:
            self.scale_branch = None

    def intensity(self, scale: torch.Tensor) -> torch.Tensor:
        """``beta (B,)`` from ``scale (B,)``."""
        if self.beta_mode == "fixed":
            return torch.full_like(scale, 0.5)
        if self.beta_mode == "linear":
            return 0.25 * scale
        return torch.sigmoid(self.scale_branch(torch.log(scale).unsqueeze(1))).squeeze(1)

    @staticmethod
    def task_probability(e: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """Eq. 3: ``p = min(beta * 4N * sigmoid(e) / sum(sigmoid(e)), 1)``."""
        s = torch.sigmoid(e)
        return torch.clamp(beta.unsqueeze(1) * e.shape[1] * s / s.sum(1, keepdim=True), max=1.0)

    def forward(self, x: torch.Tensor, scale: torch.Tensor):
        """Returns ``(e, beta, p)``."""
        e = self.image_branch(x)
        beta = self.intensity(scale.to(e.dtype))
        return e, beta, self.task_probability(e, beta)
