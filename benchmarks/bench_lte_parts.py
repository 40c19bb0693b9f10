"""Where LTE's fast path spends its time: each step of one block of ``LTE._query_banded``.

Times the steps the fast path runs per block of N queries x 4 corners (paper
width: a 512-channel band row per corner, 128 phases, a 256-wide MLP), on random
data, and prints each step's share of the total and the nanoseconds per corner:

- gather: reading each corner's row of the band (``index_select``)
- phase: the two fused multiply-adds that make the 128 phases x, and x - pi/2
- trig: one in-place cos over [x, x - pi/2], i.e. [cos x, sin x]
- mulcoef: the amplitude product
- mlp: the MLP's matrix products (``upsamplers.bands.run_mlp``)
- blend: the area-weighted sum of the four corners

and, side by side in the same run, the trigonometry as it was before: ``cos`` and
``sin`` of the 128 phases written into the two halves of each row (outputs that
are not contiguous), which ran ~10x slower on two threads.

With ``--compile``, the steps from the gather to the amplitude product are also
timed as one ``torch.compile``d function (inductor's C++ kernels: needs a C++
compiler; the compilation's seconds are printed apart), the fused bound the
harness does not take (benchmarks/README.md says why).

  python benchmarks/bench_lte_parts.py                 # 2 threads, blocks of 1024, 2048, 4096 queries
  python benchmarks/bench_lte_parts.py --threads 1 --blocks 512,2048
  python benchmarks/bench_lte_parts.py --blocks 4096 --compile

Shares are robust to other load on the machine; the nanoseconds are not.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def parts(n: int, corners: int = 4, half: int = 128, total_corners: int = 800_000) -> dict:
    """Seconds of each step over ``total_corners`` corners, in blocks of ``n`` queries,
    and of the trigonometry's earlier form (``old_trig``, not in the total)."""
    import math

    import torch

    import upsamplers.bands as bands
    from upsamplers import create_model

    model = create_model("lte", "edsr-baseline").eval()
    g = torch.Generator().manual_seed(0)
    table = torch.randn(20000, 4 * half, generator=g) * 0.3
    idx = torch.randint(0, 20000, (corners * n,), generator=g)
    rel = torch.rand(corners, n, 2, generator=g) * 2
    phase = torch.rand(1, n, half, generator=g)
    weight = torch.rand(corners, n, 1, generator=g)
    bufs = bands.Scratch(rel)
    t = dict(gather=0.0, phase=0.0, trig=0.0, mulcoef=0.0, mlp=0.0, blend=0.0, old_trig=0.0)
    reps = max(1, total_corners // (corners * n))
    with torch.no_grad():
        for _ in range(reps):
            t0 = time.perf_counter()
            rows = torch.index_select(table, 0, idx, out=bufs.get("g", corners * n, 4 * half)).view(corners, n, -1)
            t1 = time.perf_counter()
            coef, f_y, f_x = rows[..., :2 * half], rows[..., 2 * half:3 * half], rows[..., 3 * half:]
            basis = bufs.get("basis", corners, n, 2, half)
            x = torch.addcmul(phase, f_y, rel[..., :1], out=basis[:, :, 0])
            x.addcmul_(f_x, rel[..., 1:])
            torch.sub(x, math.pi / 2, out=basis[:, :, 1])
            t2 = time.perf_counter()
            b = basis.view(corners, n, 2 * half).cos_()
            t3 = time.perf_counter()
            b = b.mul_(coef).view(corners * n, -1)
            t4 = time.perf_counter()
            y = bands.run_mlp(model.imnet.layers, b).view(corners, n, -1)
            t5 = time.perf_counter()
            torch.sum(y.mul_(weight), dim=0)
            t6 = time.perf_counter()
            old = bufs.get("old", corners, n, 2 * half)
            torch.cos(x, out=old[..., :half])
            torch.sin(x, out=old[..., half:])
            t7 = time.perf_counter()
            for k, (a, z) in zip(t, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6), (t6, t7))):
                t[k] += z - a
    return {"block": n, "corners": reps * corners * n, "seconds": t}


def fused(n: int, corners: int = 4, half: int = 128, total_corners: int = 800_000) -> dict:
    """Seconds of the gather-to-amplitude steps as one ``torch.compile``d function."""
    import math

    import torch

    def basis(table, idx, rel, phase):
        rows = table.index_select(0, idx).view(corners, -1, 4 * half)
        coef, f_y, f_x = rows[..., :2 * half], rows[..., 2 * half:3 * half], rows[..., 3 * half:]
        x = phase + f_y * rel[..., :1] + f_x * rel[..., 1:]
        return torch.cat([x, x - math.pi / 2], dim=-1).cos() * coef

    g = torch.Generator().manual_seed(0)
    args = (torch.randn(20000, 4 * half, generator=g) * 0.3, torch.randint(0, 20000, (corners * n,), generator=g),
            torch.rand(corners, n, 2, generator=g) * 2, torch.rand(1, n, half, generator=g))
    reps = max(1, total_corners // (corners * n))
    with torch.no_grad():
        t0 = time.perf_counter()
        compiled = torch.compile(basis, dynamic=False)
        out = compiled(*args)
        compile_s = time.perf_counter() - t0
        assert torch.allclose(out, basis(*args), atol=1e-5)
        t0 = time.perf_counter()
        for _ in range(reps):
            compiled(*args)
        seconds = time.perf_counter() - t0
    return {"compile_s": compile_s, "seconds": seconds, "corners": reps * corners * n}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", default="1024,2048,4096", help="queries per block (comma-separated)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (the decoder benchmark's 2)")
    p.add_argument("--compile", action="store_true",
                   help="also time the gather-to-amplitude steps fused by torch.compile")
    a = p.parse_args(argv)
    try:
        sizes = [int(x) for x in a.blocks.split(",") if x]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        p.error(f"--blocks must be positive whole numbers separated by commas, got {a.blocks!r}")
    if a.threads < 1:
        p.error(f"--threads must be at least 1, got {a.threads}")
    import torch

    torch.set_num_threads(a.threads)
    for n in sizes:
        r = parts(n)
        sec = dict(r["seconds"])
        old = sec.pop("old_trig")
        total = sum(sec.values())
        shares = " ".join(f"{k} {v / total:4.0%}" for k, v in sec.items())
        per = 1e9 / r["corners"]
        print(f"block {n:5d}, {a.threads} threads: {shares}; {total * per:.0f} ns/corner, of which "
              f"{(total - sec['mlp']) * per:.0f} outside the MLP; trig {sec['trig'] * per:.0f} ns/corner, "
              f"before (cos, sin into row halves) {old * per:.0f}", flush=True)
        if a.compile:
            f = fused(n)
            print(f"block {n:5d}, {a.threads} threads: gather to amplitude fused by torch.compile "
                  f"{f['seconds'] / f['corners'] * 1e9:.0f} ns/corner, eager "
                  f"{(total - sec['mlp'] - sec['blend']) * per:.0f}; compiling took {f['compile_s']:.1f} s",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
