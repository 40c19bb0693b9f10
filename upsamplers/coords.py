"""Pixel-centre coordinates, the one helper every upsampler and sampler uses.

A grid of n pixels along an axis spans [-1, 1]; pixel i has centre
``-1 + r + 2 r i`` with ``r = 1 / n``. Coordinates are in ij order: the first
component is the row (height), the second the column (width). The cell of a
query on an ``H x W`` HR grid is ``(2 / H, 2 / W)``.
"""
from __future__ import annotations

from typing import Sequence

import torch


def make_coord(shape: Sequence[int], flatten: bool = True, device=None,
               dtype=torch.float32) -> torch.Tensor:
    """Centres of an ``shape``-sized grid; ``(prod(shape), len(shape))`` if flatten."""
    axes = []
    for n in shape:
        r = 1.0 / n
        axes.append(-1 + r + 2 * r * torch.arange(n, device=device, dtype=dtype))
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    return grid.reshape(-1, grid.shape[-1]) if flatten else grid


def make_cell(hr_shape: Sequence[int], n: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The cell ``(2 / H, 2 / W)`` repeated for ``n`` queries: ``(n, 2)``."""
    h, w = hr_shape
    cell = torch.tensor([2.0 / h, 2.0 / w], device=device, dtype=dtype)
    return cell.expand(n, 2).clone()
