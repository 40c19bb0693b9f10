"""Does skipping attention branches save real time? (run by hand, not a test)

Times the Baseline against TADT's backbone forced to 4N, 3N, 2N and N active
branches on the same input, and compares each time ratio (vs all branches on)
with the fvcore FLOPs ratio of the same path.

    .venv/bin/python benchmarks/bench_tadt_routing.py                 # 1x3x96x96, paper width, CPU
    .venv/bin/python benchmarks/bench_tadt_routing.py --size 144 --threads 1 --repeats 9
    .venv/bin/python benchmarks/bench_tadt_routing.py --device cuda --size 480
    .venv/bin/python benchmarks/bench_tadt_routing.py --vs-swinir     # FLOPs calibration vs SwinIR

Routings keep k branches in every group, rotating which ones from group to
group (group i keeps branches i, i+1, ..., i+k-1 mod 4), so each branch type
is dropped equally often. Timing interleaves the configurations repeat by
repeat and reports medians; on CPU with one thread it also reports the CPU
time of the thread (``time.thread_time``), which other processes sharing the
machine disturb far less than wall time.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.checkpoint import load_baseline_weights  # noqa: E402
from tadt.model import TADT, Baseline  # noqa: E402


def rotating_routing(k: int, groups: int) -> str:
    return "_".join("".join("1" if (j - i) % 4 < k else "0" for j in range(4)) for i in range(groups))


def fvcore_flops(model: torch.nn.Module, x: torch.Tensor, routing) -> int:
    """fvcore count of one forward along ``routing`` (SDPA counted as two matmuls)."""
    try:  # the harness's counter, when present, is the reference
        from harness.flops import count_flops  # type: ignore

        return int(count_flops(model, x, {"routing": routing})[0])
    except Exception:  # noqa: BLE001 - fall back to a local handle
        pass
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

    def sdpa(inputs, outputs):
        q, k, v = (get_shape(i) for i in inputs[:3])
        return math.prod(q[:-2]) * q[-2] * k[-2] * (q[-1] + v[-1])

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, inp):
            return self.m(inp, routing=routing)

    fa = FlopCountAnalysis(Wrap(model), (x,)).set_op_handle("aten::scaled_dot_product_attention", sdpa)
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    fa.tracer_warnings("none")
    return int(fa.total())


# LR sizes (H x W): Figure 2's image, and DIV2K-like x2/x3/x4 inputs (HR 2040x1356
# and 2040x1344, LR = floor(HR / s)); Table 3's ratios are for the whole DIV2K
# validation set, whose sizes we do not have here.
CALIBRATION_SIZES = [("fig2", [(768, 1020)]),
                     ("x2 1356", [(678, 1020)]), ("x3 1356", [(452, 680)]), ("x4 1356", [(339, 510)]),
                     ("x2 mix", [(678, 1020)] * 3 + [(672, 1020)]),
                     ("x3 mix", [(452, 680)] * 3 + [(448, 680)]),
                     ("x4 mix", [(339, 510)] * 3 + [(336, 510)])]
TABLE3 = {"x2": 0.8440, "x3": 0.8685, "x4": 0.8767}


def vs_swinir() -> int:
    """Baseline/SwinIR FLOPs (fvcore convention, harness.flops) on CALIBRATION_SIZES."""
    from extractors import create_extractor
    from harness.flops import extractor_flops

    base = create_extractor("baseline").eval()
    swin = create_extractor("swinir").eval()
    print(f"{'sizes':<8} {'Baseline G':>11} {'SwinIR G':>10} {'ratio':>7} {'Table 3':>8}")
    for name, sizes in CALIBRATION_SIZES:
        fb = sum(extractor_flops(base, h, w) for h, w in sizes)
        fs = sum(extractor_flops(swin, h, w) for h, w in sizes)
        paper = TABLE3.get(name.split()[0], float("nan"))
        print(f"{name:<8} {fb / len(sizes) / 1e9:>11.2f} {fs / len(sizes) / 1e9:>10.2f} {fb / fs:>7.4f} {paper:>8.4f}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=96, help="input height = width (default 96)")
    ap.add_argument("--height", type=int, help="input height (overrides --size)")
    ap.add_argument("--width", type=int, help="input width (overrides --size)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7, help="timed forwards per configuration")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default 0: all cores)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clock", choices=("auto", "wall", "thread"), default="auto",
                    help="timer: wall clock, or the thread's CPU time (auto: thread on 1-thread CPU runs)")
    ap.add_argument("--stat", choices=("median", "min"), default="median",
                    help="statistic over repeats (min is the least disturbed by other processes)")
    ap.add_argument("--no-flops", action="store_true", help="skip the fvcore counts")
    ap.add_argument("--embed-dim", type=int, default=224, help="C (default: the paper's 224)")
    ap.add_argument("--groups", type=int, default=8, help="N (default: the paper's 8)")
    ap.add_argument("--heads", type=int, default=2, help="attention heads per branch (default: ours, 2)")
    ap.add_argument("--vs-swinir", action="store_true",
                    help="only print Baseline/SwinIR FLOPs (harness.flops) on the calibration sizes")
    args = ap.parse_args(argv)
    if args.vs_swinir:
        return vs_swinir()

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    dev = torch.device(args.device)
    clock = args.clock
    if clock == "auto":
        clock = "thread" if dev.type == "cpu" and threads == 1 else "wall"
    timer = time.thread_time if clock == "thread" else time.perf_counter

    torch.manual_seed(0)
    widths = dict(embed_dim=args.embed_dim, num_groups=args.groups, heads=args.heads)
    baseline = Baseline(**widths).to(dev).eval()
    tadt = TADT(**widths).to(dev).eval()
    load_baseline_weights(tadt, baseline.state_dict())
    h = args.height or args.size
    w = args.width or args.size
    x = torch.randn(args.batch, 3, h, w, device=dev)
    n = args.groups

    configs = [("baseline", baseline, None, 4 * n)]
    for k in (4, 3, 2, 1):
        configs.append((f"tadt {k}N", tadt, rotating_routing(k, n), k * n))

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    times = {name: [] for name, *_ in configs}
    with torch.inference_mode():
        for _ in range(args.warmup):
            for name, model, routing, _ in configs:
                model(x, routing=routing)
        for _ in range(args.repeats):
            for name, model, routing, _ in configs:
                sync()
                t0 = timer()
                model(x, routing=routing)
                sync()
                times[name].append(timer() - t0)

    flops = {}
    if not args.no_flops:
        xc = x[:1].cpu()
        for name, model, routing, _ in configs:
            flops[name] = fvcore_flops(model.cpu(), xc, routing)
        baseline.to(dev)
        tadt.to(dev)

    stat = min if args.stat == "min" else statistics.median
    ref = stat(times["tadt 4N"])
    print(f"input {args.batch}x3x{h}x{w}, C={args.embed_dim}, N={n}, device {args.device}, "
          f"threads {threads}, clock {clock}, {args.repeats} repeats ({args.stat})")
    head = f"{'config':<10} {'active':>6} {'time ms':>9} {'time ratio':>10}"
    if flops:
        head += f" {'GFLOPs':>9} {'FLOPs ratio':>11} {'diff':>7}"
    print(head)
    for name, _, routing, active in configs:
        t = stat(times[name])
        line = f"{name:<10} {active:>6} {t * 1e3:>9.1f} {t / ref:>10.3f}"
        if flops:
            fr = flops[name] / flops["tadt 4N"]
            line += f" {flops[name] / 1e9:>9.2f} {fr:>11.3f} {t / ref - fr:>+7.3f}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
