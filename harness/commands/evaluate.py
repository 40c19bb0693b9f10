"""``python -m harness evaluate``: per-image PSNR of a checkpoint (or bicubic) on one dataset."""
from __future__ import annotations

import argparse
import csv
import sys

from harness.errors import HarnessError
from harness.scales import format_scale, parse_scales, scale_label

HELP = "PSNR of a checkpoint (or the bicubic floor) on a dataset at given scales, per image"
DESCRIPTION = """\
Super-resolve every image of one dataset at each scale and write one CSV row per
(scale, image):  run,dataset,scale,image,psnr,active_branches,beta,routing
(active_branches and beta only for the scale-aware TADT: the number of the 4N
attention branches its router turned on for that task, and the intensity beta;
routing for Baseline and TADT: the 4N bits of the path run, which `flops`
counts for the same image and scale).

The protocol (docs/architecture.md, harness/protocol.py): MATLAB-bicubic LR at
x2/x3/x4, PIL-bicubic LR made on the fly at other scales; predictions clamped to
[0, 1], not rounded; DIV2K scored on RGB with a shave of s + 6, the benchmarks
on Y with a shave of s; window models mirror-padded; the cell clipped to the x4
cell above x4. Checkpoints are ours or released LIIF/LTE files.

--released RUN (with --checkpoint; the released tier, profile released) first
checks that the file is a LIIF/LTE release of RUN at the configuration's widths
(harness/released.py) and stops with one line otherwise; RUN names the CSV rows.

--bicubic (instead of --checkpoint) gives the floor row, run name "bicubic":
the LR upscaled to the HR size with MATLAB-compatible bicubic (harness.bicubic),
on floats, clamped, not rounded.

Memory: queries are decoded evaluation.chunk at a time; evaluation.tile > 0 (or
--tile) runs the extractor on LR tiles (see harness/tiling.py for the overlap
each extractor needs and what tiling costs in accuracy).

The CSV is written atomically: it appears, complete, only when every row is in.

Example:
  python -m harness evaluate --config config/default.yaml \\
      --checkpoint results/checkpoints/edsr-baseline-liif.pth \\
      --dataset div2k-valid --scales 2,3,4,6 --out results/eval/edsr-baseline-liif/div2k-valid.csv
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", metavar="CFG.yaml",
                        help="configuration file(s); later ones override earlier ones "
                             "(default: config/default.yaml). Data from 'data', chunk/tile from "
                             "'evaluation'")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", metavar="CKPT.pth", help="our checkpoint or a released LIIF/LTE one")
    what.add_argument("--bicubic", action="store_true", help="the bicubic floor instead of a model")
    parser.add_argument("--dataset", required=True,
                        help="div2k-valid, set5, set14, b100, urban100 or manga109")
    parser.add_argument("--scales", required=True, metavar="S,S,...", help="e.g. 2,3,4,6 (each >= 1)")
    parser.add_argument("--out", required=True, metavar="CSV", help="per-image CSV to write")
    parser.add_argument("--run", metavar="NAME",
                        help="run name in the CSV (default: the checkpoint's run, else "
                             "{extractor}-{upsampler}; 'bicubic' with --bicubic)")
    parser.add_argument("--released", metavar="RUN",
                        help="the checkpoint must be a released LIIF/LTE file of RUN (a run of the "
                             "config's `released` section) at the config's widths; RUN names the rows")
    parser.add_argument("--max-images", type=int, metavar="N",
                        help="only the first N images of the set (default: evaluation.max_images; 0 = all)")
    parser.add_argument("--chunk", type=int, metavar="Q", help="queries per chunk (default: evaluation.chunk)")
    parser.add_argument("--tile", type=int, metavar="N",
                        help="LR tile size for feature extraction, 0 = whole image (default: evaluation.tile)")
    parser.add_argument("--tile-overlap", type=int, metavar="N",
                        help="overlap around each tile in LR pixels (default: the extractor's, "
                             "see harness/tiling.py)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"],
                        help="where to run (default: the config's 'device')")
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    parser.add_argument("--progress", choices=["auto", "bar", "none"], default="auto",
                        help="tqdm bar on stderr (auto: when stderr is a terminal, else one line per scale)")


def _positive(value, name: str, minimum: int) -> None:
    if value is not None and value < minimum:
        raise HarnessError(f"{name} must be >= {minimum}, got {value}")


def run_name(meta: dict) -> str:
    run = meta.get("run")
    if isinstance(run, dict) and run.get("name"):
        return str(run["name"])
    spec = meta["spec"]
    return f"{spec['extractor']}-{spec['upsampler']}"


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from harness.config import DEFAULT_CONFIG, load_config
    from harness.data import hr_files, is_benchmark
    from harness.evaluate import EVAL_COLUMNS, evaluate_rows
    from harness.io import atomic_path, check_writable
    from harness.metrics import average
    from harness.device import resolve_device

    cfg = load_config(*(args.config or [DEFAULT_CONFIG]))
    ev = cfg["evaluation"]
    scales = parse_scales(args.scales)
    for value, name, minimum in ((args.max_images, "--max-images", 0), (args.chunk, "--chunk", 1),
                                 (args.tile, "--tile", 0), (args.tile_overlap, "--tile-overlap", 0),
                                 (args.threads, "--threads", 1)):
        _positive(value, name, minimum)
    y_channel = is_benchmark(args.dataset)          # unknown dataset: one clear error, now
    check_writable(args.out, "--out CSV")
    max_images = ev["max_images"] if args.max_images is None else args.max_images
    chunk = ev["chunk"] if args.chunk is None else args.chunk
    tile = ev["tile"] if args.tile is None else args.tile
    # The config's tile_overlap is used as given; --tile-overlap wins over it.
    overlap = ev.get("tile_overlap") if args.tile_overlap is None else args.tile_overlap
    if args.threads:
        torch.set_num_threads(args.threads)

    model = None
    if args.released and (args.bicubic or (args.run and args.run != args.released)):
        raise HarnessError("--released RUN goes with --checkpoint, and names the rows itself "
                           "(no other --run)")
    if args.bicubic:
        name = args.run or "bicubic"
    else:
        from harness.checkpoint import load_model
        from harness.released import expectation

        expect = expectation(cfg, args.released) if args.released else None
        device = resolve_device(args.device or cfg.get("device", "auto"))
        model, meta = load_model(args.checkpoint, map_location=device, expect=expect)
        name = args.released or args.run or run_name(meta)

    n_images = len(hr_files(cfg["data"], args.dataset))   # missing dataset: one clear error, now
    if max_images:
        n_images = min(n_images, max_images)
    bar_on = args.progress == "bar" or (args.progress == "auto" and sys.stderr.isatty())
    bar = tqdm(total=n_images * len(scales), desc=f"{name} {args.dataset}", unit="img",
               file=sys.stderr, disable=not bar_on, dynamic_ncols=True)
    done: dict[str, list[float]] = {}

    def on_image(s, image):
        bar.update(1)
        key = format_scale(s)
        if not bar_on and len(done.get(key, ())) == n_images:
            print(f"{name} {args.dataset} {scale_label(s)}: {n_images} images, mean PSNR "
                  f"{average(done[key]):.4f} dB", file=sys.stderr, flush=True)

    with atomic_path(args.out) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(EVAL_COLUMNS))
            writer.writeheader()
            for row in evaluate_rows(model, cfg["data"], args.dataset, scales, name, chunk=chunk,
                                     tile=tile, tile_overlap=overlap, max_images=max_images,
                                     on_image=on_image):
                done.setdefault(row["scale"], []).append(row["psnr"])
                row = dict(row, psnr=repr(float(row["psnr"])))
                writer.writerow(row)
                fh.flush()
        bar.close()
    metric = "Y, shave s" if y_channel else "RGB, shave s+6"
    print(f"{name} on {args.dataset} ({metric}), mean PSNR per scale:", file=sys.stderr)
    for s in scales:
        vals = done.get(format_scale(s), [])
        mean = f"{average(vals):.4f} dB" if vals else "no images"
        print(f"  {scale_label(s)}: {mean} ({len(vals)} images)", file=sys.stderr)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
