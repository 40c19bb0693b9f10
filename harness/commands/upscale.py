"""``python -m harness upscale``: one user image at any scale or output size."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from harness.errors import HarnessError
from harness.scales import parse_scale, parse_size
from upsamplers import DEFAULT_CHUNK

HELP = "super-resolve one image at any scale (or to a given size) with a checkpoint"
DESCRIPTION = """\
Super-resolve IMAGE (any size, any format PIL reads) with a checkpoint (ours or
a released LIIF/LTE one) and write OUT as PNG (atomically: a failed run leaves
no file).

Size: --scale S gives round(h * S) x round(w * S), each side rounded half up
(a 10 x 15 image at x3.7 gives 37 x 56: 37.0 and 55.5 -> 56). --size HxW asks
for an exact size (any aspect ratio); the model is then told the scale
sqrt((H / h) * (W / w)) (what the scale-aware TADT routes on and what the cell
rule above x4 uses), while the query grid and the cell are exactly those of
H x W.

Colour: grey images are stacked to three identical channels and the alpha
channel of RGBA / grey+alpha images is dropped (not composited); 16-bit images
are reduced to 8 bits; 32-bit images are taken only in range (float in [0, 1],
integers in 0..65535) and refused otherwise (harness/data/images.py). The output is
always 8-bit RGB; a model whose output is not finite (NaN weights) writes nothing.

Memory: the output is decoded and written as PNG in row bands (it never exists
whole), queries --chunk at a time. Without --tile the features of the whole image
are computed once (the numbers of 'evaluate'); --tile N computes them per band of N
LR rows, in N-wide tiles, so that feature memory no longer grows with the image
(harness/upscaling.py). Before any work the peak memory is estimated (costs
measured on the model, see docs/upscale-memory.md); when it exceeds the memory
available the command stops and names a --tile that fits.

Example:
  python -m harness upscale photo.jpg --scale 3.7 \\
      --checkpoint results/checkpoints/edsr-baseline-liif.pth -o photo_x3.7.png
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", help="input image (png, jpg, bmp, tif, ...)")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--scale", metavar="S", help="upscaling factor (> 0), e.g. 3.7")
    size.add_argument("--size", metavar="HxW", help="output size in pixels, e.g. 1080x1920")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT.pth",
                        help="our checkpoint or a released LIIF/LTE one")
    parser.add_argument("-o", "--out", required=True, metavar="OUT.png", help="output PNG")
    parser.add_argument("--tile", type=int, default=0, metavar="N",
                        help="LR tile size for feature extraction (0 = whole image)")
    parser.add_argument("--tile-overlap", type=int, metavar="N",
                        help="overlap around each tile (default: the extractor's, see harness/tiling.py)")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, metavar="Q",
                        help=f"queries decoded at once (default {DEFAULT_CHUNK})")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")


_MARGIN = 0.9        # at most this share of the available memory is planned for


def _need(est: dict, params: int, device) -> tuple[int, int]:
    """``(needed, available)`` bytes of the tighter memory, host or GPU (the model is loaded
    already, so its parameters are not needed again)."""
    import torch

    from harness.upscaling import available_memory

    if torch.device(device).type != "cuda":
        return est["total"] - params, available_memory("cpu")
    gpu = (est["device"] - params, available_memory(device))
    host = (est["host"], available_memory("cpu"))
    return max(gpu, host, key=lambda need_avail: need_avail[0] / max(need_avail[1], 1))


def _plan(model, costs, h: int, w: int, size, args, device) -> dict:
    """The estimate of the requested run; a HarnessError naming a --tile that fits if it does not."""
    from harness.upscaling import estimate, format_bytes

    def try_(tile, chunk):
        est = estimate(costs, model, h, w, size[0], size[1], tile, args.tile_overlap, chunk)
        need, avail = _need(est, costs.params, device)
        return est, need, avail, need <= _MARGIN * avail

    est, need, avail, ok = try_(args.tile, args.chunk)
    if ok:
        return est
    advice = ("no --tile makes it fit (the input and the output's row bands alone are too large): "
              "use a smaller image or output, or a machine with more memory")
    smaller = [t for t in (2048, 1024, 512, 256, 128, 64, 32) if t < (args.tile or max(h, w))]
    for tile, chunk in [(t, args.chunk) for t in smaller] + [(t, min(args.chunk, 5000)) for t in smaller]:
        _, need_t, _, ok = try_(tile, chunk)
        if ok:
            advice = (f"use --tile {tile}" + (f" --chunk {chunk}" if chunk != args.chunk else "")
                      + f" (estimated {format_bytes(need_t)})")
            break
    raise HarnessError(
        f"upscaling {h}x{w} to {size[0]}x{size[1]} needs an estimated {format_bytes(need)} of memory "
        f"(features {format_bytes(est['features'])}, decoding {format_bytes(est['decode'])}), more than "
        f"the {format_bytes(avail)} available; {advice}")


def run(args: argparse.Namespace) -> int:
    from harness.io import check_writable

    # Every argument and the output path are checked before anything is loaded or written.
    scale = parse_scale(args.scale) if args.scale is not None else None
    size = parse_size(args.size) if args.size is not None else None
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise HarnessError(f"output {out} must be a .png file (the output is written as PNG)")
    for value, name, minimum in ((args.tile, "--tile", 0), (args.tile_overlap, "--tile-overlap", 0),
                                 (args.chunk, "--chunk", 1), (args.threads, "--threads", 1)):
        if value is not None and value < minimum:
            raise HarnessError(f"{name} must be >= {minimum}, got {value}")
    if not Path(args.image).is_file():
        raise HarnessError(f"cannot read image {args.image}: no such file")
    check_writable(out, "output image")

    import numpy as np
    import torch

    from harness.bicubic import to_uint8
    from harness.checkpoint import load_model
    from harness.data import read_image
    from harness.data.images import image_size, write_png_rows
    from harness.device import resolve_device
    from harness.evaluate import output_size
    from harness.upscaling import format_bytes, probe_costs, super_resolve_bands

    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = image_size(args.image)                    # unreadable: HarnessError naming the file
    if size is None:
        size = output_size(h, w, scale)
    else:
        scale = math.sqrt(size[0] / h * size[1] / w)
    if max(size) >= 2 ** 31:
        raise HarnessError(f"output {size[0]}x{size[1]} is too large for a PNG (sides < 2^31)")
    device = resolve_device(args.device)
    model, meta = load_model(args.checkpoint, map_location=device)
    costs = probe_costs(model, scale, meta.get("spec"))
    est = _plan(model, costs, h, w, size, args, device)

    arr = read_image(args.image)
    if arr.shape[:2] != (h, w):
        raise HarnessError(f"image {args.image} changed while being read")
    lr = torch.from_numpy(arr.astype(np.float32).transpose(2, 0, 1) / 255.0)
    del arr
    bands = super_resolve_bands(model, lr, scale, out_shape=size, chunk=args.chunk, tile=args.tile,
                                tile_overlap=args.tile_overlap)
    write_png_rows(out, size[0], size[1],
                   (to_uint8(band.permute(1, 2, 0).numpy().astype(np.float64) * 255.0)
                    for _, _, band in bands))
    print(f"{args.image} ({h}x{w}) -> {out} ({size[0]}x{size[1]}, x{scale:.4g}, "
          f"{meta['spec']['extractor']}-{meta['spec']['upsampler']}; estimated peak memory "
          f"{format_bytes(est['total'])})", file=sys.stderr)
    return 0
