"""Peak RSS of ``python -m harness upscale`` against the estimate it plans with.

For each case the command runs in a subprocess (``--threads 2``) and its peak RSS
(``ru_maxrss``) is read; the same command on an 8 x 8 image gives the fixed part
(Python, torch, the model), which is subtracted. The estimate is
``harness.upscaling.estimate`` of the case less that of the 8 x 8 image. Models:
EDSR-baseline-LIIF at the embedded widths (24 features, MLP 64-64) and at the
paper's, and TADT-LIIF at the embedded widths, with fresh weights.

    PYTHONPATH=. python benchmarks/bench_upscale_memory.py /tmp/upscale-bench

Results: docs/upscale-memory.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

from harness.checkpoint import save_checkpoint
from harness.evaluate import output_size
from harness.upscaling import estimate, probe_costs
from upsamplers import create_model

MODELS = {
    "edsr-liif-embedded": ("liif", "edsr-baseline", {"n_resblocks": 2, "n_feats": 24}, {"hidden_list": [64, 64]}),
    "edsr-liif-paper": ("liif", "edsr-baseline", {}, {}),
    "tadt-liif-embedded": ("liif", "tadt", {"embed_dim": 24, "num_groups": 2, "blocks_per_group": 1, "heads": 1,
                                            "out_dim": 24, "windows": [2, 4, 8], "global_window": 16,
                                            "pooled_size": 4, "tarc_width": 8, "tarc_scale_hidden": 8},
                           {"hidden_list": [64, 64]}),
}
# (model, LR side, scale, tile)
CASES = [
    ("edsr-liif-embedded", 2000, 0.25, 0), ("edsr-liif-embedded", 2000, 0.25, 256),
    ("edsr-liif-paper", 1000, 0.5, 0), ("edsr-liif-paper", 1000, 0.5, 128),
    ("tadt-liif-embedded", 1000, 0.5, 0), ("edsr-liif-embedded", 200, 6, 0),
]


def checkpoint(work: str, name: str) -> tuple[str, dict]:
    up, ext, ea, ua = MODELS[name]
    spec = {"upsampler": up, "extractor": ext, "extractor_args": ea, "upsampler_args": ua}
    path = os.path.join(work, f"{name}.pth")
    if not os.path.exists(path):
        torch.manual_seed(0)
        save_checkpoint(path, create_model(up, ext, ea, ua), spec, step=0)
    return path, spec


def image(work: str, side: int) -> str:
    path = os.path.join(work, f"img{side}.png")
    if not os.path.exists(path):
        import skimage.data
        import skimage.transform

        img = skimage.transform.resize(skimage.data.astronaut(), (side, side), order=1, preserve_range=True)
        Image.fromarray(img.astype(np.uint8)).save(path)
    return path


def peak_rss(work: str, ckpt: str, side: int, scale: float, tile: int) -> tuple[int, float]:
    cmd = [sys.executable, "-m", "harness", "upscale", image(work, side), "--scale", str(scale),
           "--checkpoint", ckpt, "-o", os.path.join(work, "out.png"), "--threads", "2", "--tile", str(tile)]
    t = time.time()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise RuntimeError(proc.stderr.read())
    return usage.ru_maxrss * 1024, time.time() - t


def main(work: str) -> None:
    os.makedirs(work, exist_ok=True)
    base: dict[str, int] = {}
    for name, side, scale, tile in CASES:
        ckpt, spec = checkpoint(work, name)
        model = create_model(spec["upsampler"], spec["extractor"], spec["extractor_args"], spec["upsampler_args"])
        costs = probe_costs(model.eval(), scale, spec)
        if name not in base:
            base[name] = peak_rss(work, ckpt, 8, 1, 0)[0]
        est = (estimate(costs, model, side, side, *output_size(side, side, scale), tile)["total"]
               - estimate(costs, model, 8, 8, 8, 8)["total"])
        rss, wall = peak_rss(work, ckpt, side, scale, tile)
        print(json.dumps({"model": name, "lr": f"{side}x{side}", "scale": scale, "tile": tile,
                          "measured_mib": round((rss - base[name]) / 2 ** 20),
                          "estimate_mib": round(est / 2 ** 20), "wall_s": round(wall, 1)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/upscale-bench")
