"""Common interface of the arbitrary-scale upsamplers, and the pieces LIIF/LTE share.

Every upsampler owns its extractor as ``self.encoder`` and exposes::

    feat = model.gen_feat(inp, scale)              # runs the encoder once
    rgb  = model.query_rgb(inp, feat, coord, cell)  # any number of times
    rgb  = model(inp, coord, cell, scale=None)      # both at once (training)
    rgb  = model.predict(inp, coord, cell, scale=None, chunk=DEFAULT_CHUNK)  # inference

``inp`` is the normalised LR image ``(B, 3, h, w)``; ``coord`` and ``cell`` are
``(B, Q, 2)`` in the ij order of :mod:`upsamplers.coords`; the result is
normalised RGB ``(B, Q, 3)``. ``feat`` is whatever ``gen_feat`` returned and is
only meant to be handed back to ``query_rgb``: ``gen_feat`` is ``encode`` then
``prepare``, which sets up the per-image decoder work -- for LIIF the MLP's
first layer on every LR pixel, for LTE the coefficient and frequency
convolutions (:class:`~upsamplers.lte.LTEFeatures`), for MetaSR the encoder's
map itself. Without autograd (inference) ``prepare`` returns instead a
:class:`~upsamplers.bands.BandedMap` that computes those per-pixel maps (for
MetaSR: its last layer folded into the map) a band of LR rows at a time, as the
chunks of queries need them, and ``query_rgb`` takes the fast paths of
:mod:`upsamplers.bands`; with autograd (training) the per-query forms run, so
training numerics never depend on the fast paths. Nothing is stored on the
module between calls, unlike the reference code, so one model can serve
interleaved images and threads.

Scale. The extractor is always called as ``encoder(inp, scale=scale)``;
scale-agnostic extractors ignore it, TADT needs it. ``scale`` is a float or a
``(B,)`` tensor. When ``forward``/``predict`` get ``scale=None`` they derive it
from the cell and the input height (:func:`scale_from_cell`):
``s = 2 / (cell[..., 0] * h)``, averaged over the queries of each batch item.
That is the true scale only if the cell is the true HR cell: an evaluator that
enlarges the cell beyond x4 (LTE's ``cell * max(s / 4, 1)``) must pass ``scale``
explicitly. ``gen_feat`` has no cell, so it passes ``scale`` on as given.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harness.registry import count_parameters
from upsamplers import DEFAULT_CHUNK
from upsamplers.coords import make_coord

Scale = float | torch.Tensor | None

# The local ensemble of LIIF/LTE: shifts of half an LR pixel towards the four
# neighbouring feature centres, nudged by EPS_SHIFT so that a query exactly on
# a pixel border picks a deterministic side, and clamped inside the image.
EPS_SHIFT = 1e-6
CLAMP = 1 - 1e-6
AREA_EPS = 1e-9


def scale_from_cell(cell: torch.Tensor, h: int) -> torch.Tensor:
    """Per-item scale ``2 / (cell_y * h)`` averaged over queries: ``(B, Q, 2) -> (B,)``."""
    return (2.0 / (cell[..., 0] * h)).mean(dim=-1)


def sample_nearest(x: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """Value of the pixel of ``x (B, C, h, w)`` containing each ``coord (B, Q, 2)``: ``(B, Q, C)``.

    ``grid_sample`` takes xy order, hence the flip; nearest, align_corners=False
    (pixel ``i`` covers ``[-1 + 2i/h, -1 + 2(i+1)/h]``).
    """
    out = F.grid_sample(x, coord.flip(-1).unsqueeze(1), mode="nearest", align_corners=False)
    return out[:, :, 0, :].permute(0, 2, 1)


def feature_grid(batch: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """Pixel-centre coordinates of an ``h x w`` map as a ``(B, 2, h, w)`` image."""
    grid = make_coord((h, w), flatten=False, device=like.device, dtype=like.dtype)
    return grid.permute(2, 0, 1).unsqueeze(0).expand(batch, 2, h, w)


def corner_queries(coord: torch.Tensor, h: int, w: int, local_ensemble: bool = True
                   ) -> list[torch.Tensor]:
    """The query coordinates moved half an LR pixel towards each of the four corners.

    Order: (up, left), (up, right), (down, left), (down, right) -- row shift in
    the outer loop, as in LIIF. Without the ensemble: the query itself, once.
    """
    shifts, eps = ((-1, 1), EPS_SHIFT) if local_ensemble else ((0,), 0.0)
    ry, rx = 1.0 / h, 1.0 / w  # half an LR pixel in [-1, 1] units
    out = []
    for vy in shifts:
        for vx in shifts:
            c = coord.clone()
            c[..., 0] += vy * ry + eps
            c[..., 1] += vx * rx + eps
            out.append(c.clamp_(-CLAMP, CLAMP))
    return out


def area_weights(rel_coords: Sequence[torch.Tensor], local_ensemble: bool = True
                 ) -> list[torch.Tensor]:
    """Blend weights of the corner predictions, ``(B, Q)`` each, summing to 1.

    ``rel_coords`` are the query-minus-feature-centre offsets (any unit). The
    weight of a corner is the area of the rectangle between the query and the
    diagonally opposite corner's centre (bilinear weights in the interior):
    corner areas are computed, then swapped 0<->3 and 1<->2.
    """
    areas = [(r[..., 0] * r[..., 1]).abs() + AREA_EPS for r in rel_coords]
    total = torch.stack(areas).sum(dim=0)
    if local_ensemble:
        areas = areas[::-1]
    return [a / total for a in areas]


def ensemble_query(coord: torch.Tensor, h: int, w: int, local_ensemble: bool,
                   predict_corner: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                   ) -> torch.Tensor:
    """LIIF's local ensemble: blend ``predict_corner(shifted_coord, rel_coord)`` over corners.

    ``predict_corner`` receives the shifted, clamped query coordinate (which LR
    pixel to read) and the relative coordinate ``(coord - centre) * (h, w)`` of
    the query to that pixel's centre -- the reference's unit, half an LR pixel,
    so in the interior each component lies in [-2, 2] -- and returns ``(B, Q, 3)``.
    """
    grid = feature_grid(coord.shape[0], h, w, coord)
    hw = coord.new_tensor([h, w])
    preds, rels = [], []
    for shifted in corner_queries(coord, h, w, local_ensemble):
        rel = (coord - sample_nearest(grid, shifted)) * hw
        preds.append(predict_corner(shifted, rel))
        rels.append(rel)
    out = 0
    for pred, weight in zip(preds, area_weights(rels, local_ensemble)):
        out = out + pred * weight.unsqueeze(-1)
    return out


def decode_in_chunks(model: nn.Module, inp: torch.Tensor, feat: Any, n: int,
                     queries: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
                     chunk: int = DEFAULT_CHUNK) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Decode ``n`` queries ``chunk`` at a time: yields ``(i, j, rgb)`` for queries ``i..j-1``.

    ``queries(i, j)`` returns that slice's ``coord`` and ``cell`` ``(B, j - i, 2)``
    (made on demand, so no caller needs all ``n`` coordinates at once); ``rgb`` is
    ``model.query_rgb(inp, feat, coord, cell)``, ``(B, j - i, 3)``. Decoder memory
    grows with ``chunk``, not with ``n``; queries are independent, so the
    pieces equal one unchunked ``query_rgb``.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    for i in range(0, n, chunk):
        j = min(i + chunk, n)
        coord, cell = queries(i, j)
        yield i, j, model.query_rgb(inp, feat, coord, cell)


class ArbitraryScaleUpsampler(nn.Module):
    """Base class: an extractor (``self.encoder``) plus a coordinate-queried decoder."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    # -- features --------------------------------------------------------
    def encode(self, inp: torch.Tensor, scale: Scale = None) -> torch.Tensor:
        """The extractor's feature map ``(B, C, h, w)``."""
        return self.encoder(inp, scale=scale)

    def prepare(self, feat: torch.Tensor) -> Any:
        """Per-image decoder work done once (default: none)."""
        return feat

    def gen_feat(self, inp: torch.Tensor, scale: Scale = None) -> Any:
        """Run the encoder once; the result is what :meth:`query_rgb` takes."""
        return self.prepare(self.encode(inp, scale))

    def query_rgb(self, inp: torch.Tensor, feat: Any, coord: torch.Tensor,
                  cell: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- whole passes ----------------------------------------------------
    @staticmethod
    def resolve_scale(inp: torch.Tensor, cell: torch.Tensor, scale: Scale) -> Scale:
        return scale_from_cell(cell, inp.shape[-2]) if scale is None else scale

    def forward(self, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor,
                scale: Scale = None) -> torch.Tensor:
        feat = self.gen_feat(inp, self.resolve_scale(inp, cell, scale))
        return self.query_rgb(inp, feat, coord, cell)

    @torch.no_grad()
    def predict(self, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor,
                scale: Scale = None, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
        """Inference without autograd: features once, then :func:`decode_in_chunks`.

        Peak decoder memory grows with ``chunk``, not with the number of
        queries; the result equals :meth:`forward`'s (queries are independent).
        """
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        feat = self.gen_feat(inp, self.resolve_scale(inp, cell, scale))
        parts = [rgb for _, _, rgb in decode_in_chunks(
            self, inp, feat, coord.shape[1], lambda i, j: (coord[:, i:j], cell[:, i:j]), chunk)]
        if not parts:
            return coord.new_zeros(coord.shape[0], 0, 3)
        return torch.cat(parts, dim=1)

    def decoder_parameters(self) -> int:
        """Parameters of the upsampler's own layers (everything but the encoder)."""
        return count_parameters(self, skip="encoder")
