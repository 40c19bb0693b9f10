"""Building blocks shared by the extractors (timm-style ``layers``).

Only small, generic pieces live here: the ``same``-padded convolution of the
EDSR family, the frozen RGB mean-shift layer whose weights the released
EDSR/RCAN checkpoints carry, and the internal reflect padding that window
models use so that any ``H x W`` input works.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# DIV2K RGB mean used by EDSR/RCAN's mean-shift layers (values in [0, 1]).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def same_conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> nn.Conv2d:
    """A stride-1 convolution that keeps the spatial size (odd kernels)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class MeanShift(nn.Conv2d):
    """1x1 conv adding ``sign * rgb_range * mean / std`` per channel.

    The LIIF encoders keep ``sub_mean`` / ``add_mean`` in their state dict but
    never apply them when used without an upsampling tail (the calls are
    commented out in yinboc/liif ``models/edsr.py`` and ``models/rcan.py``).
    We keep them for state-dict compatibility only; their parameters are frozen.
    """

    def __init__(self, rgb_range: float = 1.0, rgb_mean=DIV2K_RGB_MEAN, rgb_std=(1.0, 1.0, 1.0), sign: int = -1):
        super().__init__(3, 3, kernel_size=1)
        std = torch.tensor(rgb_std, dtype=torch.float32)
        mean = torch.tensor(rgb_mean, dtype=torch.float32)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1) / std.view(3, 1, 1, 1))
            self.bias.copy_(sign * rgb_range * mean / std)
        self.requires_grad_(False)


class HeadBodyTrunk(nn.Module):
    """The EDSR/RCAN no-upsampling trunk: head conv, body (blocks + conv), global skip.

    Subclasses build their blocks and call ``_build_trunk``; registration order
    (``sub_mean``, ``add_mean``, ``head``, ``body``) gives the reference's
    state-dict key order. The mean-shift layers are kept for checkpoint
    compatibility only and never applied (see :class:`MeanShift`).
    """

    scale_aware = False
    window_size = None

    def _build_trunk(self, blocks, n_feats: int, kernel_size: int, rgb_range: float,
                     n_colors: int) -> None:
        self.out_dim = n_feats
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Sequential(same_conv(n_colors, n_feats, kernel_size))
        self.body = nn.Sequential(*blocks, same_conv(n_feats, n_feats, kernel_size))

    def forward(self, x: torch.Tensor, scale=None) -> torch.Tensor:
        x = self.head(x)
        return self.body(x) + x


def check_no_upsampling(no_upsampling: bool) -> None:
    """Accept the ``no_upsampling`` argument of released LIIF/LTE encoder specs.

    Released checkpoints store ``encoder_spec.args = {'no_upsampling': True}``;
    taking it lets those args be passed straight to our constructors. The
    upsampling tails themselves are not part of this harness.
    """
    if not no_upsampling:
        raise ValueError("extractors have no upsampling tail; only no_upsampling=True is supported")


def pad_reflect_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad ``(B, C, H, W)`` at the bottom/right so H and W are multiples of ``multiple``.

    Adds 0 pixels where the size already is a multiple (as SwinIR's
    ``check_image_size``): 0..multiple-1 pixels per side, torch's 'reflect'
    (``a b c | b a``, the edge pixel not repeated). Reflect padding needs
    ``pad < size``; inputs smaller than that are reflected repeatedly, which
    equals a single reflect pad whenever the latter is defined. (The evaluation
    protocol's padding is another rule: ``harness.protocol.pad_symmetric_past_multiple``.)
    """
    h, w = x.shape[-2:]
    pad_h = (-h) % multiple
    pad_w = (-w) % multiple
    while pad_h > 0 or pad_w > 0:
        cur_h, cur_w = x.shape[-2:]
        step_h = min(pad_h, cur_h - 1)
        step_w = min(pad_w, cur_w - 1)
        if step_h <= 0 and step_w <= 0:
            # a 1-pixel-wide dimension cannot be reflected: repeat its pixel
            return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        x = F.pad(x, (0, max(step_w, 0), 0, max(step_h, 0)), mode="reflect")
        pad_h -= max(step_h, 0)
        pad_w -= max(step_w, 0)
    return x
