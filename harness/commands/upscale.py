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
are reduced to 8 bits. The output is always 8-bit RGB.

Memory: --tile N runs the extractor on N x N LR tiles (for large images on
small machines); queries are decoded --chunk at a time.

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
                        help="overlap around each tile (default: the extractor's, see harness/evaluate.py)")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, metavar="Q",
                        help=f"queries decoded at once (default {DEFAULT_CHUNK})")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    # Every argument is checked before anything is loaded or written.
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

    import numpy as np
    import torch

    from harness.bicubic import to_uint8
    from harness.checkpoint import load_model
    from harness.data import read_image, write_png
    from harness.evaluate import output_size, super_resolve
    from harness.device import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    arr = read_image(args.image)                     # unreadable: HarnessError naming the file
    h, w = arr.shape[:2]
    if size is None:
        size = output_size(h, w, scale)
    else:
        scale = math.sqrt(size[0] / h * size[1] / w)
    device = resolve_device(args.device)
    model, meta = load_model(args.checkpoint, map_location=device)
    lr = torch.from_numpy(arr.astype(np.float32).transpose(2, 0, 1) / 255.0)
    sr = super_resolve(model, lr, scale, out_shape=size, chunk=args.chunk, tile=args.tile,
                       tile_overlap=args.tile_overlap)
    img = to_uint8(sr.permute(1, 2, 0).cpu().numpy().astype(np.float64) * 255.0)
    write_png(out, img)
    print(f"{args.image} ({h}x{w}) -> {out} ({size[0]}x{size[1]}, x{scale:.4g}, "
          f"{meta['spec']['extractor']}-{meta['spec']['upsampler']})", file=sys.stderr)
    return 0
