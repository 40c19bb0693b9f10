"""Memory of one training step at the paper's widths, per run: what a GPU needs for it.

Each run (``extractor-upsampler``, paper widths, random weights) does one training
forward and backward as the trainer does (L1 loss) on one batch of the paper's
shapes: ``--batch`` (16) LR patches of 48 x 48 pixels, 2304 queries each. The
bytes of every tensor alive are tracked at the dispatcher
(``harness.upscaling._PeakBytes``, the tracker ``upscale`` sizes its memory with:
activations kept for backward, gradients, temporaries and each CPU convolution's
scratch), and the step's need is estimated as

    peak of the live tensors during forward + backward  +  3 x the weights

(the weights themselves and Adam's two moments; the gradients are in the peak).
That is what PyTorch's CUDA allocator must hold at once (``max_memory_allocated``);
its cache and the CUDA context (about 0.5 GB) come on top.

``--device meta`` (the default) runs the step on the meta device: the same shapes
and so the same bytes, without memory or compute, so batch 16 costs seconds;
``--device cpu`` runs it for real and also reports the process's peak resident set
(``VmHWM``), which adds the C allocator's slack. TADT and the Baseline cannot run
on the meta device (the TARC's routing depends on values).

  python benchmarks/bench_train_memory.py --runs nlsa-liif,cat-r-2-liif
  python benchmarks/bench_train_memory.py --runs nlsa-liif --batch 2 --device cpu
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATCH, QUERIES = 48, 2304  # the paper's LR patch side and queries per patch


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def run_case(run: str, batch: int, device: str, threads: int = 1) -> dict:
    """One training forward and backward of ``run`` in this process (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    from harness.registry import count_parameters
    from harness.upscaling import _PeakBytes
    from upsamplers import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    extractor, upsampler = run.rsplit("-", 1)  # upsampler names have no hyphen
    with torch.device(device):
        model = create_model(upsampler, extractor).train()
        scale = torch.rand(batch) * 3 + 1
        inp = torch.rand(batch, 3, PATCH, PATCH) * 2 - 1
        coord = torch.rand(batch, QUERIES, 2) * 2 - 1
        cell = (2 / (PATCH * scale)).view(batch, 1, 1).expand(batch, QUERIES, 2)
        gt = torch.rand(batch, QUERIES, 3) * 2 - 1
    weights = count_parameters(model) * 4
    t0 = time.perf_counter()
    with _PeakBytes() as pk:
        F.l1_loss(model(inp, coord, cell, scale), gt).backward()
    mib = 2 ** 20
    return {"run": run, "batch": batch, "device": device, "params": count_parameters(model),
            "weights_mib": weights / mib, "live_peak_mib": pk.peak / mib,
            "step_mib": (pk.peak + 3 * weights) / mib, "seconds": time.perf_counter() - t0,
            "vmhwm_mib": _status_kib("VmHWM") / 1024 if device == "cpu" else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="nlsa-liif,cat-r-2-liif", help="comma-separated extractor-upsampler runs")
    p.add_argument("--batch", type=int, default=16, help="patches per step (per GPU under DDP)")
    p.add_argument("--device", choices=["meta", "cpu"], default="meta")
    p.add_argument("--threads", type=int, default=1, help="--device cpu: torch threads")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per case")
    p.add_argument("--case", metavar="RUN", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.case:
        print(json.dumps(run_case(a.case, a.batch, a.device, a.threads)))
        return 0
    print(f"one training step (forward + backward), paper widths, batch {a.batch} x {PATCH}x{PATCH} LR, "
          f"{QUERIES} queries; {a.device}", flush=True)
    print(f"{'run':18} {'params':>11} {'weights MiB':>11} {'live peak MiB':>13} {'step MiB':>9} {'VmHWM MiB':>9}",
          flush=True)
    failed = False
    for run in [r for r in a.runs.split(",") if r]:
        cmd = [sys.executable, __file__, "--case", run, "--batch", str(a.batch), "--device", a.device,
               "--threads", str(a.threads)]
        try:  # a fresh process per case: VmHWM is the case's own
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            print(f"{run:18} timed out after {a.timeout:g} s", flush=True)
            failed = True
            continue
        if proc.returncode != 0:
            print(f"{run:18} error: {(proc.stderr.strip().splitlines() or ['?'])[-1]}", flush=True)
            failed = True
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        hwm = f"{r['vmhwm_mib']:9.0f}" if r["vmhwm_mib"] is not None else f"{'-':>9}"
        print(f"{run:18} {r['params']:11,d} {r['weights_mib']:11.0f} {r['live_peak_mib']:13.0f} "
              f"{r['step_mib']:9.0f} {hwm}", flush=True)
    return int(failed)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
