"""``upscale`` of images of any size in bounded memory: the output in row bands, the
features in LR bands, and the memory estimated before any work.

Bands. :func:`super_resolve_bands` yields the output ``band_rows`` rows at a time
(``harness.evaluate.decode_rows``), so the output never exists whole, as floats or
at all: ``upscale`` writes each band to the PNG (``harness.data.write_png_rows``).
Without tiles the features are those of the whole image, computed once, exactly as
``evaluate`` computes them. With ``tile > 0`` they are computed per band of ``tile``
LR rows: the band plus :data:`DECODER_MARGIN` rows (and, for downscaling, half an
output pixel) on each side, as one row of tiles of ``harness.tiling.extract_features``
(each reading the tile overlap around it). A query reads the LR pixel holding it and
its neighbours (LIIF/LTE's four corners, MetaSR's top-left corner), and the decoders'
3x3 convolutions/unfolds one pixel further: two rows, so every query of a band sees
the same prepared features as with the whole map (tests/test_upscaling.py), and
feature memory is that of a band. What tiling costs in accuracy is the tiles'
(``harness.tiling``: exact for EDSR-baseline and RDN up to float order).

Memory. :func:`estimate` adds up what one super-resolution holds at its peak: the
input (uint8, float, padded), then the largest of the feature phase (the encoder's
working set on what it sees at once, the TARC's on the whole image, the feature map),
the prepare phase and the decode phase (prepared features, ``chunk`` queries, one
output band as floats and uint8 plus the PNG filter's scratch). Per-pixel and
per-query costs are measured once per model (:func:`probe_costs`) by running the
encoder, ``prepare`` and ``query_rgb`` on a small input under a dispatch mode that
tracks the bytes of every tensor alive (on the meta device: no memory, no compute,
where the model allows; else on a real 96 x 96 input). Measured peak RSS against the
estimate: docs/upscale-memory.md.
"""
from __future__ import annotations

import copy
import math
import os
import weakref
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from harness.data.images import PNG_FILTER_BYTES, PNG_SCRATCH_BYTES
from harness.evaluate import check_sr_args, decode_rows, eval_mode, evaluation_input
from harness.protocol import window_pad_amount
from harness.tiling import ceil_to, default_tile_overlap, extract_features, routing_of, window_of
from upsamplers import DEFAULT_CHUNK

__all__ = ["DECODER_MARGIN", "BAND_BYTES", "super_resolve_bands", "band_rows_for", "Costs",
           "probe_costs", "estimate", "available_memory", "format_bytes"]

#: LR rows beyond a band that its queries may read (see the module docstring), plus one spare.
DECODER_MARGIN = 3
#: Output floats decoded per band (rows = BAND_BYTES / (12 W), at least one row).
BAND_BYTES = 16 << 20
#: Host bytes per output pixel of a band: its floats (12), their uint8 conversion
#: (``harness.bicubic.to_uint8`` on float64, ~100 at its peak) and the uint8 rows (3).
BAND_HOST_PX = 115
#: Side of the probe input (a multiple of every window in use: 8, 16, 48).
PROBE_SIDE = 96
#: Queries of the decoder probe.
PROBE_QUERIES = 4096


def band_rows_for(width: int) -> int:
    """Output rows per band: :data:`BAND_BYTES` of float RGB, at least one row."""
    return max(1, BAND_BYTES // (12 * int(width)))


def _margin(h: int, H: int) -> int:
    return DECODER_MARGIN + math.ceil(h / (2 * H))


def _first_output_row(a: int, h: int, H: int) -> int:
    """The first output row whose centre lies at or below LR row ``a``: ``(Y + 0.5) h / H >= a``."""
    return min(H, max(0, -((h - 2 * a * H) // (2 * h))))


@torch.no_grad()
def super_resolve_bands(model: nn.Module, lr: torch.Tensor, scale: float, out_shape=None,
                        chunk: int = DEFAULT_CHUNK, tile: int = 0, tile_overlap: Optional[int] = None,
                        band_rows: Optional[int] = None) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield ``(y0, y1, rows (3, y1 - y0, W))`` of ``super_resolve(model, lr, scale, out_shape)``
    from the top, ``band_rows`` rows at a time (default :func:`band_rows_for`), on the CPU.

    ``tile == 0``: whole-image features, the same numbers as ``super_resolve``. ``tile > 0``:
    features per band of ``tile`` LR rows, tiled (see the module docstring).
    """
    s, H, W = check_sr_args(lr, scale, chunk, out_shape)
    h, w = int(lr.shape[1]), int(lr.shape[2])
    band_rows = band_rows_for(W) if band_rows is None else max(1, int(band_rows))
    with eval_mode(model):
        inp = evaluation_input(model.encoder, lr)
        hp = inp.shape[-2]
        routing = routing_of(model.encoder, inp, s)
        ws = window_of(model.encoder)
        step = hp if tile <= 0 else ceil_to(tile, ws)
        overlap = default_tile_overlap(model.encoder) if tile_overlap is None else int(tile_overlap)
        margin = _margin(h, H)
        for a in range(0, h, step):
            b = min(a + step, h)
            ya, yb = _first_output_row(a, h, H), (H if b == h else _first_output_row(b, h, H))
            if ya >= yb:
                continue
            if step >= hp:
                r0, r1 = 0, hp
                raw = extract_features(model, inp, s, tile, overlap, routing)
            else:
                r0 = max(0, a - margin) // ws * ws
                r1 = min(hp, ceil_to(b + margin, ws))
                raw = extract_features(model, inp, s, step, overlap, routing, rows=(r0, r1))
            feat = model.prepare(raw)
            del raw
            band_inp = inp[..., r0:r1, :]
            for y0 in range(ya, yb, band_rows):
                y1 = min(y0 + band_rows, yb)
                yield y0, y1, decode_rows(model, band_inp, feat, (h, w), (H, W), (y0, y1), s, chunk,
                                          row0=r0).cpu()
            del feat


# ------------------------------------------------------------------------------ memory

#: A CPU convolution's scratch memory, per output position: its wider side (input or output
#: channels) rounded up to 32 (oneDNN's blocked layouts) in float32, times this factor
#: (measured at 3..256 channels: 0.9 .. 1.1 times the rounded side).
CONV_SCRATCH = 1.15


class _PeakBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages created inside the mode and still alive (the
    storages of ``skip``, e.g. parameters and inputs, excluded), with each convolution's
    scratch memory (:data:`CONV_SCRATCH`) counted while it runs."""

    def __init__(self, skip=()):
        super().__init__()
        self.skip = {t.untyped_storage()._cdata for t in skip}
        self.live: dict[int, list[int]] = {}
        self.now = self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                self.now -= entry[0]
                del self.live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage._cdata
                if key in self.skip:
                    continue
                entry = self.live.get(key)
                if entry is None:
                    self.live[key] = [storage.nbytes(), 1]
                    self.now += storage.nbytes()
                    self.peak = max(self.peak, self.now)
                else:
                    entry[1] += 1
                weakref.finalize(t, self._release, key)
        if func is torch.ops.aten.convolution.default and isinstance(out, torch.Tensor):
            wide = ceil_to(max(args[0].shape[1], out.shape[1]), 32)
            scratch = CONV_SCRATCH * 4 * wide * out[:, 0].numel()
            self.peak = max(self.peak, self.now + int(scratch))
        return out


@dataclass(frozen=True)
class Costs:
    """Measured memory costs of one model (bytes)."""
    encoder_px: float     # encoder peak per input pixel (its output included)
    route_px: float       # routing controller (TARC) peak per pixel, 0 without one
    feat_px: float        # the encoder's feature map per pixel
    prepare_px: float     # ``prepare``'s peak per pixel (its output included)
    prepared_px: float    # ``prepare``'s output per pixel
    query: float          # ``query_rgb`` peak per query
    params: int           # parameters and buffers


def _storage_bytes(obj: Any) -> int:
    seen, total = set(), 0
    for t in tree_flatten(obj)[0]:
        if isinstance(t, torch.Tensor) and t.untyped_storage()._cdata not in seen:
            seen.add(t.untyped_storage()._cdata)
            total += t.untyped_storage().nbytes()
    return total


def _probe(model: nn.Module, scale: float, device) -> Costs:
    enc = model.encoder
    side = PROBE_SIDE
    px = side * side
    x = torch.rand(1, 3, side, side, device=device) * 2 - 1
    fixed = list(model.parameters()) + list(model.buffers())
    route_px = 0.0
    routing = None
    if callable(getattr(enc, "routing_for", None)):
        with _PeakBytes(fixed + [x]) as pk:
            routing = enc.routing_for(x, scale)
        route_px = pk.peak / px
    with _PeakBytes(fixed + [x]) as pk:
        feat = enc(x, scale=scale) if routing is None else enc(x, scale=scale, routing=routing.r)
    encoder_px = pk.peak / px
    with _PeakBytes(fixed + [feat]) as pk:
        prepared = model.prepare(feat)
    prepare_px, prepared_px = pk.peak / px, _storage_bytes(prepared) / px
    ys = torch.linspace(-0.99, 0.99, PROBE_QUERIES, device=device)
    coord = torch.stack([ys, ys.flip(0)], dim=-1).unsqueeze(0)
    cell = torch.full_like(coord, 2.0 / (side * scale))
    with _PeakBytes(fixed + [x, feat, coord, cell] + tree_flatten(prepared)[0]) as pk:
        model.query_rgb(x, prepared, coord, cell)
    params = sum(t.numel() * t.element_size() for t in fixed)
    return Costs(encoder_px, route_px, feat.numel() * feat.element_size() / px, prepare_px,
                 prepared_px, pk.peak / PROBE_QUERIES, params)


@torch.no_grad()
def probe_costs(model: nn.Module, scale: float, spec: Optional[dict] = None) -> Costs:
    """Measure ``model``'s memory costs (see the module docstring): on a meta-device copy
    built from ``spec`` (or copied) when the model runs there, else on its own device."""
    with eval_mode(model):
        try:
            if spec is not None:
                from upsamplers import create_model

                with torch.device("meta"):
                    meta = create_model(spec["upsampler"], spec["extractor"], spec["extractor_args"],
                                        spec["upsampler_args"]).eval()
            else:
                meta = copy.deepcopy(model).to("meta")
            return _probe(meta, scale, "meta")
        except (NotImplementedError, RuntimeError):   # data-dependent code (TADT's routing)
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            return _probe(model, scale, device)


def estimate(costs: Costs, model: nn.Module, h: int, w: int, H: int, W: int, tile: int = 0,
             tile_overlap: Optional[int] = None, chunk: int = DEFAULT_CHUNK) -> dict[str, int]:
    """Peak memory (bytes) of ``upscale`` of an ``h x w`` image to ``H x W`` (see the module
    docstring): ``host`` (the image arrays, the output band, the PNG writer), ``device``
    (parameters, padded input, the largest of the feature, prepare and decode phases),
    the phases themselves (``features``, ``decode``) and ``total`` = host + device."""
    ws = window_of(model.encoder)
    hp, wp = (h + window_pad_amount(h, ws), w + window_pad_amount(w, ws)) if ws > 1 else (h, w)
    overlap = default_tile_overlap(model.encoder) if tile_overlap is None else int(tile_overlap)
    if tile <= 0 or (tile >= hp and tile >= wp):
        rows, seen = hp, hp * wp                  # feature rows held, pixels encoded at once
    else:
        t, ov = ceil_to(tile, ws), ceil_to(overlap, ws)
        rows = min(hp, t + 2 * ceil_to(_margin(h, H), ws))
        seen = min(hp, rows + 2 * ov) * min(wp, t + 2 * ov)
    held = rows * wp
    band = min(H, band_rows_for(W)) * W
    features = max(costs.route_px * hp * wp,
                   costs.encoder_px * seen + (costs.feat_px * held if seen < held else 0),
                   (costs.feat_px + costs.prepare_px) * held)
    decode = costs.prepared_px * held + costs.query * min(chunk, band) + 12 * band
    png = PNG_SCRATCH_BYTES * min(1.0, 3 * band / PNG_FILTER_BYTES)
    host = 15 * h * w + BAND_HOST_PX * band + png            # uint8 + float image, one band
    device = costs.params + 12 * hp * wp + max(features, decode)
    return {"host": int(host), "device": int(device), "features": int(features),
            "decode": int(decode), "total": int(host + device)}


def available_memory(device: Any = "cpu") -> int:
    """Bytes that can still be allocated: CUDA free memory for a CUDA device; else
    ``MemAvailable`` of ``/proc/meminfo``, capped by the cgroup (v2) limit."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    if avail is None:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        if limit != "max":
            used = int(open("/sys/fs/cgroup/memory.current").read())
            avail = min(avail, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(0, int(avail))


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
