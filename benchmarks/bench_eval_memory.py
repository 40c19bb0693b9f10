"""Peak memory and time of ``harness.evaluate.super_resolve`` on a DIV2K-sized image, per extractor.

Each case (extractor with LIIF, paper widths, random weights: speed and memory
do not depend on training) runs in its own subprocess on the CPU (or, with
``--device cuda``, on the GPU, untiled by default), on a random LR
image of a 2040 x 1356 HR image (LR 1020 x 678 at x2, 68 x 45 at x30; the HR
grid of x30 is round(45 * 30) = 1350 rows, as the protocol crops it). The child
reports its peak resident set (``VmHWM`` from /proc/self/status, the kernel's
high-water mark of the whole process: torch's allocator, MKL/oneDNN buffers and
the Python heap alike; tracemalloc would miss torch's memory) and the seconds of
``super_resolve`` alone (model construction excluded).

  python benchmarks/bench_eval_memory.py                 # every extractor at x2 and x30
  python benchmarks/bench_eval_memory.py --quick         # edsr-baseline and swinir only
  python benchmarks/bench_eval_memory.py --extractors rdn --scales 2 --tile rdn=256
  python benchmarks/bench_eval_memory.py --deviation     # tiled vs untiled features
  python benchmarks/bench_eval_memory.py --upsampler metasr --extractors edsr-baseline
  python benchmarks/bench_eval_memory.py --device cuda   # on a GPU: untiled, plus peak GPU memory
  python benchmarks/bench_eval_memory.py --extractors nlsa --scales 2 --hr 678x1020 --csv benchmarks/eval_memory.csv
                                                         # a smaller HR image; append to the CSV the report cites

Tiles: ``TILES`` below holds the LR tile size each extractor needs at x2 to stay
under ``--limit-gb`` (4 GB); ``--tile EXT=N`` overrides it (0 = untiled). At x30
the LR image is 68 x 45 and nothing is tiled. On 2 shared CPU cores a full run
takes about an hour (the large extractors at x2 take minutes each, and the LIIF
decoder alone decodes 2.8 M queries per case): ``--quick`` runs the two cases
the README's table needs first.

``--deviation`` measures, on a random LR image (``--dev-size``, default 240 x 336)
at paper widths, the largest absolute difference between tiled (``--dev-tile``,
default 128; the default overlap, and each of ``--overlaps``) and untiled encoder
features, and the PSNR of the tiled SR output against the untiled one at x2 --
the accuracy cost of tiling, reported, not assumed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTRACTORS = ("edsr-baseline", "rdn", "rcan", "nlsa", "swinir", "cat-r-2", "baseline", "tadt")
HR_SHAPE = (1356, 2040)  # DIV2K's typical 2040 x 1356 (width x height); --hr changes it

#: LR tile size at x2 (0 = untiled) chosen to stay under 4 GB peak RSS on the CPU. NLSA is
#: measured untiled, as evaluation runs it (evaluation.tile 0; 6 GB at x2, over the limit):
#: tiles would change its non-local attention (see benchmarks/README.md). CAT-R-2's 256 is
#: SwinIR's, not measured.
TILES = {"edsr-baseline": 0, "rdn": 256, "rcan": 0, "nlsa": 0, "swinir": 256, "cat-r-2": 256,
         "baseline": 192, "tadt": 192}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def lr_shape(scale: float, hr=HR_SHAPE) -> tuple[int, int]:
    """The LR size (rows, columns) of an ``hr`` image at ``scale``, as the protocol crops it."""
    import math

    return tuple(math.floor(n / scale + 1e-9) for n in hr)


def model_input(model, lr, scale):
    """The normalised (window-padded) LR batch the extractor sees, and TADT's routing for it."""
    from harness import protocol

    inp = protocol.normalize(lr).unsqueeze(0)
    ws = getattr(model.encoder, "window_size", None)
    if ws:
        inp, _ = protocol.pad_symmetric_past_multiple(inp, ws)
    route = getattr(model.encoder, "routing_for", None)
    return inp, (route(inp, scale) if route else None)


def run_case(extractor: str, scale: float, tile: int, chunk: int, threads: int, seed: int = 0,
             features_only: bool = False, upsampler: str = "liif", device: str = "cpu",
             hr=HR_SHAPE) -> dict:
    """One measurement, in this process (called in a fresh subprocess by ``main``)."""
    import torch

    from harness.evaluate import output_size, super_resolve
    from harness.tiling import default_tile_overlap, extract_features
    from upsamplers import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dev = torch.device(device)
    model = create_model(upsampler, extractor).eval().to(dev)
    h, w = lr_shape(scale, hr)
    lr = torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))  # on the CPU, as loaded
    out_shape = output_size(h, w, scale)
    cuda = dev.type == "cuda"
    if cuda:  # the CUDA context and kernels are not part of one image's cost: warm up on a small one
        super_resolve(model, torch.rand(3, 48, 48), scale, chunk=chunk)
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        gpu_before = torch.cuda.memory_allocated(dev)
    rss_before = _status_kib("VmRSS")
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    if features_only:  # the encoder pass alone, as super_resolve runs it
        with torch.no_grad():
            inp, routing = model_input(model, lr, scale)
            extract_features(model, inp, scale, tile=tile, routing=routing)
    else:
        sr = super_resolve(model, lr, scale, out_shape=out_shape, chunk=chunk, tile=tile)
        assert sr.shape == (3, *out_shape) and bool(torch.isfinite(sr).all())
    if cuda:
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - cpu0
    return {"extractor": extractor, "upsampler": upsampler, "features_only": features_only, "cpu_seconds": cpu_seconds, "scale": scale, "lr": f"{w}x{h}", "hr": f"{out_shape[1]}x{out_shape[0]}",
            "tile": tile, "overlap": default_tile_overlap(model.encoder) if tile else 0,
            "seconds": seconds, "rss_before_mib": rss_before / 1024, "peak_mib": _status_kib("VmHWM") / 1024,
            "threads": threads, "device": device,
            **({"gpu_peak_mib": (torch.cuda.max_memory_allocated(dev) - gpu_before) / 2**20} if cuda else {})}


def _record(r: dict, rows: list, out, **defaults) -> dict:
    """Fill a child's result with ``defaults``, keep it, and append it to the JSON lines file."""
    for key, value in defaults.items():
        r.setdefault(key, value)
    rows.append(r)
    if out:
        out.write(json.dumps(r) + "\n")
        out.flush()
    return r


def stress_init(model, seed: int = 0) -> None:
    """Re-draw the weights at the scale of trained networks rather than of a fresh one.

    Fresh transformers (trunc-normal std 0.02 linears, zero-ish bias tables) have weak
    residual branches and near-uniform attention, so information hardly travels and
    tiling looks free. Here every linear layer gets N(0, 1/fan_in) (variance
    preserving), every relative-position bias table N(0, 1) (peaked, position-
    dependent attention), every conv N(0, 1/fan_in): a pessimistic stand-in for
    trained weights, which this project does not have at paper widths.
    """
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.encoder.named_parameters():
            if name.startswith("tarc."):
                continue
            if "relative_position_bias_table" in name:
                p.copy_(torch.randn(p.shape, generator=g))
        for m in model.encoder.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / fan_in ** 0.5)


def deviation(extractor: str, tile: int, threads: int, size=(240, 336), overlaps=(), sr: bool = True,
              seed: int = 0, init: str = "default") -> dict:
    """Tiled vs untiled encoder features (max / mean |diff|) at the default overlap and at
    each of ``overlaps``, and the PSNR of the tiled SR output against the untiled one at x2."""
    import torch

    from harness.evaluate import super_resolve
    from harness.tiling import default_tile_overlap, extract_features
    from harness.metrics import psnr
    from upsamplers import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = create_model("liif", extractor).eval()
    if init == "stress":
        stress_init(model, seed)
    lr = torch.rand(3, *size, generator=torch.Generator().manual_seed(seed))
    default = default_tile_overlap(model.encoder)
    out = {"extractor": extractor, "lr": f"{size[1]}x{size[0]}", "tile": tile, "overlap": default,
           "init": init, "by_overlap": {}}
    with torch.no_grad():
        inp, routing = model_input(model, lr, 2.0)
        t0 = time.perf_counter()
        full = extract_features(model, inp, 2.0, routing=routing)
        out["seconds_untiled"] = time.perf_counter() - t0
        out["feat_abs_mean"] = float(full.abs().mean())
        for ov in [default, *[o for o in overlaps if o != default]]:
            t0 = time.perf_counter()
            tiled = extract_features(model, inp, 2.0, tile=tile, tile_overlap=ov, routing=routing)
            diff = (full - tiled).abs()
            out["by_overlap"][str(ov)] = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                                          "seconds_tiled": time.perf_counter() - t0}
            del tiled, diff
        del full
    if sr:
        sr_full = super_resolve(model, lr, 2.0)
        sr_tiled = super_resolve(model, lr, 2.0, tile=tile)
        out["sr_max_abs_diff"] = float((sr_full - sr_tiled).abs().max())
        out["psnr_tiled_vs_untiled"] = psnr(sr_tiled, sr_full, 2.0, y_channel=False)
    return out


def _size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def append_csv(path: str, r: dict, note: str = "") -> None:
    """Append one measured case to the CSV of measured memory (header first if the file is new;
    columns ``harness.report.MEMORY_COLUMNS``, the layout the report reads)."""
    import csv

    from harness.report import MEMORY_COLUMNS

    row = {**r, "peak_rss_mib": round(r["peak_mib"]), "seconds": round(r["seconds"], 1), "note": note,
           "scale": f"{r['scale']:g}",
           "gpu_peak_mib": round(r["gpu_peak_mib"]) if "gpu_peak_mib" in r else ""}
    new = not Path(path).is_file() or Path(path).stat().st_size == 0
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MEMORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
        if new:
            w.writeheader()
        w.writerow(row)


def _child(args: list[str], timeout: float, script: str = __file__) -> dict:
    """Run ``script`` with ``args`` in a fresh process; its last stdout line is a JSON result."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s (--timeout)"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="edsr-baseline and swinir only")
    p.add_argument("--extractors", default=",".join(EXTRACTORS))
    p.add_argument("--scales", default="2,30")
    p.add_argument("--tile", action="append", default=[], metavar="EXT=N", help="override TILES")
    p.add_argument("--chunk", type=int, default=30000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit-gb", type=float, default=4.0)
    p.add_argument("--timeout", type=float, default=3600, help="seconds per case")
    p.add_argument("--deviation", action="store_true", help="measure tiled vs untiled deviation instead")
    p.add_argument("--features-only", action="store_true",
                   help="time and memory of the extractor pass alone (to choose tiles)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON lines")
    p.add_argument("--csv", metavar="FILE",
                   help="also append the rows to this CSV of measured memory "
                        "(benchmarks/eval_memory.csv is the one the report reads)")
    p.add_argument("--note", default="", help="--csv: the note column of these rows")
    p.add_argument("--hr", default=f"{HR_SHAPE[0]}x{HR_SHAPE[1]}", metavar="HxW",
                   help="HR size (rows x columns) the LR image is cut from (default: DIV2K's 1356x2040)")
    p.add_argument("--upsampler", default="liif", choices=["liif", "lte", "metasr"],
                   help="decoder of every case (default liif)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="where the model runs; on cuda the table adds the peak GPU memory allocated by "
                        "torch beyond the model (after a warm-up image) and nothing is tiled unless --tile says so")
    p.add_argument("--case", nargs=3, metavar=("EXT", "SCALE", "TILE"), help=argparse.SUPPRESS)
    p.add_argument("--dev-case", nargs=2, metavar=("EXT", "TILE"), help=argparse.SUPPRESS)
    p.add_argument("--dev-size", default="240x336", metavar="HxW", help="LR size of --deviation")
    p.add_argument("--dev-tile", type=int, default=128, help="tile size of --deviation")
    p.add_argument("--overlaps", default="", metavar="N,N", help="--deviation: further overlaps to try")
    p.add_argument("--no-sr", action="store_true", help="--deviation: features only, no SR comparison")
    p.add_argument("--init", choices=["default", "stress"], default="default",
                   help="--deviation: fresh weights, or trained-scale weights (see stress_init)")
    a = p.parse_args(argv)
    if a.device == "cuda" and not a.case:
        import torch

        if a.deviation:
            p.error("--deviation runs on the CPU only (drop --device cuda)")
        if not torch.cuda.is_available():
            p.error("--device cuda: torch sees no CUDA device (torch %s)" % torch.__version__)

    if a.case:  # child process
        print(json.dumps(run_case(a.case[0], float(a.case[1]), int(a.case[2]), a.chunk, a.threads,
                                  features_only=a.features_only, upsampler=a.upsampler, device=a.device,
                                  hr=_size(a.hr))))
        return 0
    if a.dev_case:
        h, w = _size(a.dev_size)
        overlaps = [int(o) for o in a.overlaps.split(",") if o]
        print(json.dumps(deviation(a.dev_case[0], int(a.dev_case[1]), a.threads, (h, w), overlaps,
                                   sr=not a.no_sr, init=a.init)))
        return 0

    tiles = dict(TILES) if a.device == "cpu" else {}
    for item in a.tile:
        ext, _, n = item.partition("=")
        tiles[ext] = int(n)
    exts = ["edsr-baseline", "swinir"] if a.quick else [e for e in a.extractors.split(",") if e]
    scales = [float(s) for s in a.scales.split(",") if s]
    rows = []
    out = open(a.json, "a") if a.json else None
    if a.deviation:
        print(f"tiled vs untiled, LR {a.dev_size}, tile {a.dev_tile}, x2, CPU {a.threads} threads, "
              f"random weights ({a.init} init)", flush=True)
        print(f"{'extractor':14} {'overlap':>7} {'max|dF|':>10} {'mean|dF|':>10} {'mean|F|':>8} "
              f"{'t_untiled':>9} {'t_tiled':>8} {'max|dSR|':>10} {'PSNR dB':>8}", flush=True)
        for ext in exts:
            args = ["--dev-case", ext, str(a.dev_tile), "--threads", str(a.threads), "--dev-size", a.dev_size,
                    "--overlaps", a.overlaps, "--init", a.init] + (["--no-sr"] if a.no_sr else [])
            r = _record(_child(args, a.timeout), rows, out, extractor=ext)
            if "error" in r:
                print(f"{ext:14} error: {r['error']}", flush=True)
                continue
            for i, (ov, d) in enumerate(r["by_overlap"].items()):
                tail = ""
                if i == 0 and "psnr_tiled_vs_untiled" in r:
                    tail = f" {r['sr_max_abs_diff']:10.2e} {r['psnr_tiled_vs_untiled']:8.2f}"
                print(f"{ext:14} {int(ov):7d} {d['max_abs_diff']:10.2e} {d['mean_abs_diff']:10.2e} "
                      f"{r['feat_abs_mean']:8.3f} {r['seconds_untiled']:9.1f} {d['seconds_tiled']:8.1f}{tail}",
                      flush=True)
        return 0

    gpu = a.device == "cuda"
    print(f"{a.device}, {a.threads} CPU threads, {a.upsampler}, paper widths, random weights; HR {a.hr} (HxW); "
          f"chunk {a.chunk}; limit {a.limit_gb:g} GB{'; extractor pass only' if a.features_only else ''}",
          flush=True)
    print(f"{'extractor':14} {'scale':>5} {'LR':>9} {'tile':>5} {'overlap':>7} {'s/image':>8} {'cpu s':>8} "
          f"{'peak MiB':>9} {'<limit':>6}" + (f" {'GPU MiB':>8}" if gpu else ""), flush=True)
    worst = 0.0
    for ext in exts:
        for s in scales:
            tile = tiles.get(ext, 0) if s <= 4 else 0
            r = _child(["--case", ext, f"{s:g}", str(tile), "--chunk", str(a.chunk),
                        "--threads", str(a.threads), "--upsampler", a.upsampler, "--device", a.device,
                        "--hr", a.hr]
                       + (["--features-only"] if a.features_only else []),
                       a.timeout)
            r = _record(r, rows, out, extractor=ext, scale=s)
            if "error" in r:
                print(f"{ext:14} {s:5g} error: {r['error']}", flush=True)
                continue
            if a.csv and not a.features_only:
                append_csv(a.csv, r, a.note)
            ok = r["peak_mib"] < a.limit_gb * 1024
            worst = max(worst, r["peak_mib"])
            print(f"{ext:14} {s:5g} {r['lr']:>9} {r['tile']:5d} {r['overlap']:7d} {r['seconds']:8.1f} "
                  f"{r.get('cpu_seconds', float('nan')):8.1f} {r['peak_mib']:9.0f} {'yes' if ok else 'NO':>6}"
                  + (f" {r['gpu_peak_mib']:8.0f}" if gpu else ""), flush=True)
    if out:
        out.close()
    return 0 if worst < a.limit_gb * 1024 and not any("error" in r for r in rows) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
