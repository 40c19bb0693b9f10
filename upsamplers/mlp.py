"""The per-query MLP ("imnet") shared by MetaSR, LIIF and LTE.

Linear layers with ReLU between them, held in ``self.layers`` (an
``nn.Sequential``) so that state-dict keys are ``layers.<i>.weight|bias`` with
Linear layers at even indices, as in the released LIIF/LTE checkpoints.
An empty ``hidden_list`` gives a single Linear layer.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden_list: Sequence[int]):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for hidden in hidden_list:
            layers += [nn.Linear(width, int(hidden)), nn.ReLU()]
            width = int(hidden)
        layers.append(nn.Linear(width, out_dim))
        self.layers = nn.Sequential(*layers)
        self.in_dim = in_dim
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_dim) -> (..., out_dim)``."""
        lead = x.shape[:-1]
        y = self.layers(x.reshape(-1, x.shape[-1]))
        return y.reshape(*lead, y.shape[-1])
