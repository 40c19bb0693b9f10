"""Where LTE's fast path spends its time: each step of one block of ``LTE._query_banded``.

Times, on one thread, the steps the fast path runs per block of N queries x 4
corners (paper width: a 512-channel band row per corner, 128 phases, a 256-wide
MLP), on random data, and prints each step's share of the total and the
microseconds per corner:

- gather: reading each corner's row of the band (``index_select``)
- phase: the two fused multiply-adds that make the 128 phases
- trig: cos and sin of the phases
- mulcoef: the amplitude product
- mlp: the MLP's matrix products (``upsamplers.bands.run_mlp``)
- blend: the area-weighted sum of the four corners

  python benchmarks/bench_lte_parts.py                 # blocks of 256, 1024, 4096 queries
  python benchmarks/bench_lte_parts.py --blocks 512,2048

Shares are robust to other load on the machine; the microseconds are not.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def parts(n: int, corners: int = 4, half: int = 128, total_corners: int = 800_000) -> dict:
    """Seconds of each step over ``total_corners`` corners, in blocks of ``n`` queries."""
    import torch

    import upsamplers.bands as bands
    from upsamplers import create_model

    model = create_model("lte", "edsr-baseline").eval()
    g = torch.Generator().manual_seed(0)
    table = torch.randn(20000, 4 * half, generator=g)
    idx = torch.randint(0, 20000, (corners * n,), generator=g)
    rel = torch.rand(corners, n, 2, generator=g)
    phase = torch.rand(1, n, half, generator=g)
    weight = torch.rand(corners, n, 1, generator=g)
    bufs = bands.Scratch(rel)
    t = dict(gather=0.0, phase=0.0, trig=0.0, mulcoef=0.0, mlp=0.0, blend=0.0)
    reps = max(1, total_corners // (corners * n))
    with torch.no_grad():
        for _ in range(reps):
            t0 = time.perf_counter()
            rows = torch.index_select(table, 0, idx, out=bufs.get("g", corners * n, 4 * half)).view(corners, n, -1)
            t1 = time.perf_counter()
            coef, f_y, f_x = rows[..., :2 * half], rows[..., 2 * half:3 * half], rows[..., 3 * half:]
            x = torch.addcmul(phase, f_y, rel[..., :1], out=bufs.get("x", corners, n, half))
            x = x.addcmul_(f_x, rel[..., 1:])
            t2 = time.perf_counter()
            basis = bufs.get("basis", corners, n, 2 * half)
            torch.cos(x, out=basis[..., :half])
            torch.sin(x, out=basis[..., half:])
            t3 = time.perf_counter()
            b = basis.mul_(coef).view(corners * n, -1)
            t4 = time.perf_counter()
            y = bands.run_mlp(model.imnet.layers, b).view(corners, n, -1)
            t5 = time.perf_counter()
            torch.sum(y.mul_(weight), dim=0)
            t6 = time.perf_counter()
            for k, (a, z) in zip(t, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6))):
                t[k] += z - a
    return {"block": n, "corners": reps * corners * n, "seconds": t}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", default="256,1024,4096", help="queries per block (comma-separated)")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    for n in (int(x) for x in a.blocks.split(",") if x):
        r = parts(n)
        total = sum(r["seconds"].values())
        shares = " ".join(f"{k} {v / total:4.0%}" for k, v in r["seconds"].items())
        print(f"block {n:5d}: {shares}; {total / r['corners'] * 1e6:.2f} us/corner", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
