"""Each decoder's evaluation time next to its matrix-product limit, and one training step.

Evaluation (default): for each decoder (MetaSR, LIIF, LTE on EDSR-baseline, paper
widths, random weights: speed does not depend on training) and scale, a fresh
subprocess runs ``harness.evaluate.super_resolve`` (the evaluation's own path,
default chunk) on a random LR image of a 2040 x 1356 HR image (LR 1020 x 678 at
x2, 170 x 113 at x12; the HR grid is 1356 x 2040 at x2, x4 and x12) and reports:

- seconds of the whole call, and of the encoder within it (hooks on ``model.encoder``);
- the matrix-product limit: seconds that plain ``torch.nn.functional.linear`` (+
  in-place ReLU, fp32) takes for the decoder MLP's own shapes on every query
  (LIIF: 4 corners x [4 -> 256, 256 -> 256 x3, 256 -> 3], the first layer's
  feature part being per LR pixel; LTE: 4 corners x [256 -> 256 x3, 256 -> 3];
  MetaSR: the reference's per-query weight predictor [3 -> 256, 256 -> 1728]),
  in blocks of ``--limit-block`` rows (30000: the reference's eval_bsize). It is
  measured in the same process, half of it just before the decoder and half
  just after, each half on ``--limit-fraction`` of the rows and scaled up, so
  that the ratio compares like with like under the same load;
- mlp s: seconds the decoder spent in its own MLP calls (``upsamplers.bands.run_mlp``,
  the fast paths' matrix products; 0 for the per-query forms), so that ``dec s - mlp s``
  is what the decoder does beyond its matrix products (gathers, LTE's phases and
  trigonometry, blending);
- ratio = seconds / (encoder seconds + limit seconds): 1.0 means the decoder
  costs no more than its MLP's matrix products;
- peak resident memory of the process (``VmHWM``).

The reference figures (the LIIF/LTE repositories' own test path, eval_bsize 30000)
cannot be measured in this project; the table prints those of issue 15, see
benchmarks/README.md.

  python benchmarks/bench_decoders.py                       # metasr, liif, lte at x2, x4, x12
  python benchmarks/bench_decoders.py --decoders lte --scales 4
  python benchmarks/bench_decoders.py --extractor swinir --decoders lte --scales 4
  python benchmarks/bench_decoders.py --compare --scales 4   # fast paths against the per-query forms, side by side
  python benchmarks/bench_decoders.py --train               # one training step per decoder
  python benchmarks/bench_decoders.py --extractor swinir --decoders lte --scales 4 --inference-tokens 0  # SwinIR in one call
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eval_memory import HR_SHAPE, _child, _status_kib, lr_shape  # noqa: E402

#: Issue 15's measurements of the reference code (seconds, peak MB) on this CPU.
REFERENCE = {("edsr-baseline", "liif", 2.0): (267, 2940), ("edsr-baseline", "liif", 4.0): (192, 1693),
             ("edsr-baseline", "lte", 4.0): (125, 1444), ("edsr-baseline", "metasr", 4.0): (76, 4143),
             ("swinir", "lte", 4.0): (255, 2764)}


def mlp_shapes(model) -> tuple[int, list[tuple[int, int]]]:
    """Rows per query (corners) and ``(in, out)`` of each Linear of the decoder MLP's per-query work."""
    from torch import nn

    name = type(model).__name__
    shapes = [(m.in_features, m.out_features) for m in model.imnet.layers if isinstance(m, nn.Linear)]
    if name == "LIIF":  # the first layer's feature part runs per LR pixel; per query only its tail
        tail = 2 + (2 if model.cell_decode else 0)
        shapes[0] = (tail, shapes[0][1])
        return (4 if model.local_ensemble else 1), shapes
    return (4 if name == "LTE" else 1), shapes


def matmul_seconds(shapes, rows: int, block: int) -> float:
    """Seconds of ``F.linear`` + ReLU over ``rows`` rows in blocks of ``block``, with ``shapes``."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    weights = [(torch.randn(o, i, generator=g) / i ** 0.5, torch.randn(o, generator=g)) for i, o in shapes]
    x0 = torch.randn(block, shapes[0][0], generator=g)
    t0 = time.perf_counter()
    for i in range(0, rows, block):
        x = x0[:min(block, rows - i)]
        for k, (w, b) in enumerate(weights):
            x = F.linear(x, w, b)
            if k < len(weights) - 1:
                x = x.relu_()
    return time.perf_counter() - t0


def run_case(extractor: str, decoder: str, scale: float, chunk: int, threads: int,
             limit_block: int, limit_fraction: float, per_query: bool = False,
             inference_tokens: int | None = None) -> dict:
    """One evaluation measurement, in this process (``main`` runs it in a fresh subprocess).

    ``per_query``: the fast paths switched off, so the decoders run their per-query
    forms (the code before issue 15, and the reference's computation) under no_grad.
    ``inference_tokens``: the attention extractors' pieces
    (``extractors.blocks.INFERENCE_TOKENS``; 0: one call), to weigh memory against time.
    """
    import torch

    import extractors.blocks
    if inference_tokens is not None:
        extractors.blocks.INFERENCE_TOKENS = inference_tokens or 2 ** 62

    import upsamplers.bands
    import upsamplers.liif
    import upsamplers.lte
    import upsamplers.metasr
    from harness.evaluate import output_size, super_resolve
    from upsamplers import create_model

    modules = (upsamplers.liif, upsamplers.lte, upsamplers.metasr)
    if per_query:
        for module in modules:
            module.fast_paths_on = lambda: False
    mlp_time = [0.0]  # seconds inside the fast paths' MLP calls (upsamplers.bands.run_mlp)
    real_mlp = upsamplers.bands.run_mlp

    def timed_mlp(*args, **kwargs):
        t = time.perf_counter()
        try:
            return real_mlp(*args, **kwargs)
        finally:
            mlp_time[0] += time.perf_counter() - t
    for module in modules:
        module.run_mlp = timed_mlp

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(decoder, extractor).eval()
    h, w = lr_shape(scale)
    lr = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))
    out_shape = output_size(h, w, scale)
    corners, shapes = mlp_shapes(model)
    rows = corners * out_shape[0] * out_shape[1]
    part = max(limit_block, int(rows * limit_fraction))
    enc = []
    model.encoder.register_forward_pre_hook(lambda *a: enc.append(-time.perf_counter()))
    model.encoder.register_forward_hook(lambda *a: enc.append(time.perf_counter()))
    load = [os.getloadavg()[0]]
    before = matmul_seconds(shapes, part, limit_block)
    t0 = time.perf_counter()
    sr = super_resolve(model, lr, scale, out_shape=out_shape, chunk=chunk)
    seconds = time.perf_counter() - t0
    after = matmul_seconds(shapes, part, limit_block)
    load.append(os.getloadavg()[0])
    assert sr.shape == (3, *out_shape) and bool(torch.isfinite(sr).all())
    macs = rows * sum(i * o for i, o in shapes)
    limit = (before + after) / 2 * rows / part
    return {"extractor": extractor, "decoder": decoder, "scale": scale, "lr": f"{w}x{h}",
            "hr": f"{out_shape[1]}x{out_shape[0]}", "seconds": seconds, "encoder_s": sum(enc),
            "mlp_s": mlp_time[0],
            "limit_s": limit, "limit_gmacs": macs / limit / 1e9, "mlp_gmac": macs / 1e9,
            "peak_mib": _status_kib("VmHWM") / 1024, "threads": threads, "load": load,
            "per_query": per_query, "inference_tokens": extractors.blocks.INFERENCE_TOKENS}


def train_step(extractor: str, decoder: str, threads: int, batch: int = 16, patch: int = 48,
               queries: int = 2304, steps: int = 3) -> dict:
    """Seconds of training steps at paper settings (forward, L1, backward, Adam), and
    how often a fast inference path ran (must be 0)."""
    import torch
    import torch.nn.functional as F

    import upsamplers.bands as bands
    from upsamplers import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(decoder, extractor).train()
    fast_calls = []
    real = bands.band_rows
    bands.band_rows = lambda *a, **k: fast_calls.append(1) or real(*a, **k)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps):
        scale = torch.rand(batch, generator=g) * 3 + 1
        inp = torch.rand(batch, 3, patch, patch, generator=g) * 2 - 1
        coord = torch.rand(batch, queries, 2, generator=g) * 2 - 1
        cell = (2 / (patch * scale)).view(batch, 1, 1).expand(batch, queries, 2)
        gt = torch.rand(batch, queries, 3, generator=g) * 2 - 1
        t0 = time.perf_counter()
        loss = F.l1_loss(model(inp, coord, cell, scale), gt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return {"extractor": extractor, "decoder": decoder, "step_s": times, "fast_path_calls": len(fast_calls),
            "peak_mib": _status_kib("VmHWM") / 1024, "threads": threads, "load": os.getloadavg()[0]}


def _print_eval_row(r: dict) -> None:
    ref = REFERENCE.get((r["extractor"], r["decoder"], r["scale"]))
    ref_txt = f"{ref[0]:>5} {ref[1]:>6} {ref[0] / r['seconds']:6.2f}x" if ref else f"{'-':>5} {'-':>6} {'-':>7}"
    limit_total = r["encoder_s"] + r["limit_s"]
    print(f"{r['extractor'] + '-' + r['decoder']:20} x{r['scale']:<4g} {r['seconds']:7.1f} {r['encoder_s']:6.1f} "
          f"{r['seconds'] - r['encoder_s']:6.1f} {r['mlp_s']:6.1f} {r['limit_s']:6.1f} {r['limit_gmacs']:5.1f} "
          f"{r['seconds'] / limit_total:5.2f} {r['peak_mib']:6.0f} {ref_txt} "
          f"{r['load'][0]:4.1f}/{r['load'][1]:<4.1f}", flush=True)


def main(argv=None) -> int:
    from upsamplers import DEFAULT_CHUNK

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--extractor", default="edsr-baseline")
    p.add_argument("--decoders", default="metasr,liif,lte")
    p.add_argument("--scales", default="2,4,12")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit-block", type=int, default=30000, help="rows per matrix product of the limit")
    p.add_argument("--limit-fraction", type=float, default=0.25,
                   help="fraction of the rows timed before and after the decoder (each)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each case (the table keeps the fastest)")
    p.add_argument("--compare", action="store_true",
                   help="also run each case with the fast paths off (per-query forms), right before "
                        "it in the same run, and print the speed-up")
    p.add_argument("--per-query", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--inference-tokens", type=int, metavar="N",
                   help="tokens per piece of the attention extractors' MLPs and windows without autograd "
                        "(extractors.blocks.INFERENCE_TOKENS; 0: one call), to weigh peak memory against time")
    p.add_argument("--train", action="store_true", help="time training steps instead")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per case")
    p.add_argument("--json", metavar="FILE", help="also append the rows as JSON lines")
    p.add_argument("--case", nargs=3, metavar=("EXT", "DEC", "SCALE"), help=argparse.SUPPRESS)
    p.add_argument("--train-case", nargs=2, metavar=("EXT", "DEC"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.inference_tokens is not None and a.inference_tokens < 0:
        p.error(f"--inference-tokens must be 0 (one call) or more, got {a.inference_tokens}")
    if a.case:
        print(json.dumps(run_case(a.case[0], a.case[1], float(a.case[2]), a.chunk, a.threads,
                                  a.limit_block, a.limit_fraction, a.per_query, a.inference_tokens)))
        return 0
    if a.train_case:
        print(json.dumps(train_step(*a.train_case, a.threads)))
        return 0

    decoders = [d for d in a.decoders.split(",") if d]
    out = open(a.json, "a") if a.json else None
    failed = False
    print(f"CPU, {a.threads} threads, {a.extractor}, paper widths, random weights; "
          f"HR {HR_SHAPE[1]}x{HR_SHAPE[0]}; load average {os.getloadavg()[0]:.1f}", flush=True)
    if a.train:
        print(f"{'model':20} {'step s (each)':>24} {'fast-path calls':>15} {'peak MiB':>8}", flush=True)
        for dec in decoders:
            r = _child(["--train-case", a.extractor, dec, "--threads", str(a.threads)], a.timeout, __file__)
            failed |= "error" in r or r.get("fast_path_calls") != 0
            if out:
                out.write(json.dumps(r) + "\n")
            print(f"{a.extractor + '-' + dec:20} " + (r.get("error") or
                  f"{' '.join(f'{t:.2f}' for t in r['step_s']):>24} {r['fast_path_calls']:15d} {r['peak_mib']:8.0f}"),
                  flush=True)
        return int(failed)

    print(f"{'model':20} {'scale':5} {'s':>7} {'enc s':>6} {'dec s':>6} {'mlp s':>6} {'lim s':>6} {'GMAC/s':>5} "
          f"{'ratio':>5} {'MiB':>6} {'ref s':>5} {'ref MB':>6} {'speedup':>7} {'load':>9}", flush=True)
    for dec in decoders:
        for s in (float(x) for x in a.scales.split(",") if x):
            best = slow = None
            args = ["--case", a.extractor, dec, f"{s:g}", "--chunk", str(a.chunk), "--threads",
                    str(a.threads), "--limit-block", str(a.limit_block), "--limit-fraction", str(a.limit_fraction)]
            if a.inference_tokens is not None:
                args += ["--inference-tokens", str(a.inference_tokens)]
            for _ in range(a.repeats):
                if a.compare:
                    p = _child(args + ["--per-query"], a.timeout, __file__)
                    if out:
                        out.write(json.dumps({**p, "case": [a.extractor, dec, s]}) + "\n")
                    if "error" not in p and (slow is None or p["seconds"] < slow["seconds"]):
                        slow = p
                r = _child(args, a.timeout, __file__)
                if out:
                    out.write(json.dumps({**r, "case": [a.extractor, dec, s]}) + "\n")
                    out.flush()
                if "error" in r:
                    print(f"{a.extractor + '-' + dec:20} x{s:<4g} error: {r['error']}", flush=True)
                    failed = True
                    break
                if best is None or r["seconds"] / (r["encoder_s"] + r["limit_s"]) < \
                        best["seconds"] / (best["encoder_s"] + best["limit_s"]):
                    best = r
            if best is not None:
                _print_eval_row(best)
                if slow is not None:
                    print(f"{'  per-query form':20} x{s:<4g} {slow['seconds']:7.1f} {slow['encoder_s']:6.1f} "
                          f"{slow['seconds'] - slow['encoder_s']:6.1f}  peak {slow['peak_mib']:.0f} MiB; "
                          f"fast path {slow['seconds'] / best['seconds']:.2f}x faster "
                          f"(decoder {(slow['seconds'] - slow['encoder_s']) / (best['seconds'] - best['encoder_s']):.2f}x)",
                          flush=True)
    if out:
        out.close()
    return int(failed)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
