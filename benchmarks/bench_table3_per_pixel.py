"""Extractor FLOPs per LR pixel on the known DIV2K validation sizes, against Table 3.

Table 3 gives each extractor's GFLOPs (LIIF, fvcore convention) averaged over
the 100 DIV2K validation images, whose sizes are not all known offline.
``div2k_valid_sizes_known.csv`` (beside this script) lists the 39 sizes found in
public sources, each with its source. RDN is a pure convnet (FLOPs exactly linear
in the LR pixels, parameters equal to the paper's), so the paper's RDN figure
divided by our RDN count per pixel gives the mean LR area the paper averaged
over; another extractor's Table 3 figure divided by that area is the per-pixel
cost the paper implies. This script prints, per extractor and scale, ours
(``harness.flops.extractor_flops``, the fast counter, at paper widths: total
FLOPs over total unpadded LR pixels of the 39 sizes, LR = floor(HR / s)), the
implied figure and the residual.

  python benchmarks/bench_table3_per_pixel.py                         # nlsa, cat-r-2 at x2, x3, x4
  python benchmarks/bench_table3_per_pixel.py --extractors swinir,rcan --scales 3
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def known_sizes(path: Path) -> list[tuple[int, int]]:
    """``(H, W)`` of each known DIV2K validation image."""
    with open(path, newline="") as f:
        return [(int(r["height"]), int(r["width"])) for r in csv.DictReader(f)]


def paper_gflops(path: Path) -> dict[tuple[str, int], float]:
    """``(extractor, scale) -> GFLOPs`` of the published Table 3 ("-" cells left out)."""
    out = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            for s in (2, 3, 4):
                v = r.get(f"gflops_x{s}", "-")
                if v not in ("-", ""):
                    out[(r["extractor"], s)] = float(v)
    return out


def per_pixel(name: str, scale: int, sizes: list[tuple[int, int]]) -> float:
    """Our FLOPs per unpadded LR pixel of ``name`` at ``scale``, over ``sizes``."""
    from extractors import create_extractor
    from harness.data.lr import lr_size
    from harness.flops import extractor_flops

    model = create_extractor(name).eval()
    flops = pixels = 0
    for hr in sizes:
        h, w = lr_size(hr, scale)
        flops += extractor_flops(model, h, w, scale=scale)
        pixels += h * w
    return flops / pixels


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--extractors", default="nlsa,cat-r-2", help="comma-separated (default: nlsa,cat-r-2)")
    p.add_argument("--scales", default="2,3,4", help="comma-separated integer scales (default: 2,3,4)")
    p.add_argument("--sizes", type=Path, default=HERE / "div2k_valid_sizes_known.csv")
    p.add_argument("--paper", type=Path, default=ROOT / "paper" / "table3.csv")
    a = p.parse_args(argv)
    from extractors import extractor_names

    names = [e for e in a.extractors.split(",") if e]
    unknown = [e for e in names if e not in extractor_names()]
    bad_scales = [s for s in a.scales.split(",") if s and s not in ("2", "3", "4")]
    missing = [str(f) for f in (a.sizes, a.paper) if not f.is_file()]
    if unknown or bad_scales or missing or not names:
        p.error(f"unknown extractor(s) {', '.join(unknown)}" if unknown else
                f"scales are 2, 3 or 4, got {', '.join(bad_scales)}" if bad_scales else
                f"no such file: {', '.join(missing)}" if missing else "no extractor given")
    sizes, paper = known_sizes(a.sizes), paper_gflops(a.paper)
    scales = [int(s) for s in a.scales.split(",") if s]
    rdn = {s: per_pixel("rdn", s, sizes) for s in scales}
    print(f"{len(sizes)} sizes; M FLOPs per LR pixel (fast counter, paper widths); RDN {rdn[scales[0]] / 1e6:.4f}")
    print(f"{'extractor':10} {'scale':5} {'ours':>9} {'implied':>9} {'residual':>9}")
    for name in names:
        for s in scales:
            ours = per_pixel(name, s, sizes)
            if (name, s) in paper and ("rdn", s) in paper:
                implied = paper[(name, s)] / paper[("rdn", s)] * rdn[s]
                tail = f"{implied / 1e6:9.4f} {100 * (ours / implied - 1):+8.3f}%"
            else:
                tail = f"{'-':>9} {'-':>9}"
            print(f"{name:10} x{s:<4} {ours / 1e6:9.4f} {tail}", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
