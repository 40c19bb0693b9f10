"""``python -m harness flops``: FLOPs of an extractor on one size, or per image of a dataset."""
from __future__ import annotations

import argparse
import csv
import json
import sys

from harness.errors import HarnessError
from harness.registry import count_parameters
from harness.scales import format_scale, parse_scale, parse_scales, parse_size, scale_label, scale_number

HELP = "FLOPs (fvcore convention) of an extractor on a size, or per image of a dataset"
DESCRIPTION = """\
FLOPs of a feature extractor in the paper's convention (fvcore: one multiply-add
is one flop, layer norms counted; see harness/flops/handles.py for every operator's
count). The count is exact but fast: fvcore counts the extractor at a few small
sizes, the coefficients of the size terms are solved and verified, then
evaluated at the requested size, so a 768x1020 SwinIR takes seconds instead of
minutes (--direct runs fvcore at full size instead, for checks).

Sizes are the LR input, HEIGHTxWIDTH (rows x columns), e.g. 768x1020.

Routed extractors (baseline, tadt) are counted along one routing of their 4N
attention branches: --routing all, none, or 4N bits (groups of 4 may be
separated by '_'). Without --routing, TADT's routing controller (TARC) decides
from the image and --scale: with --checkpoint, the trained TARC; without, the
TARC of a freshly initialised model (seed 0), which the output says. The TARC
sees the image exactly as evaluation feeds it (normalised and mirror-padded to
the window, harness.evaluate.evaluation_routing), so the routing counted is the
one `evaluate` runs and records in its CSV's "routing" column. On a single
size the image is a seeded random LR image; in dataset mode, each real LR
image. The count itself is of the h x w LR image. "gflops" is fvcore's count
of the forward pass; fvcore's trace drops the TARC (it only steers which
branches run), so its own cost is given apart as "tarc_gflops".

Dataset mode (--dataset, with --scales and --out) writes one CSV row per image
and scale: image, scale, h, w, gflops, active_branches, routing, tarc_gflops.

examples:
  python -m harness flops --extractor swinir --size 768x1020
  python -m harness flops --extractor rdn --size 678x1020 --json
  python -m harness flops --extractor tadt --size 768x1020 --scale 2 --routing all
  python -m harness flops --extractor tadt --size 768x1020 --scale 2 \\
      --routing 1111_1110_1010_1111_0111_1111_1101_1111
  python -m harness flops --checkpoint results/checkpoints/tadt-liif.pth --size 768x1020 --scale 3
  python -m harness flops --extractor swinir --dataset div2k-valid --scales 2,3,4 \\
      --config config/paper.yaml --out results/flops/swinir.csv
  python -m harness flops --checkpoint results/checkpoints/tadt-liif.pth --dataset div2k-valid \\
      --scales 2,3,4 --config config/paper.yaml --out results/flops/tadt-liif.csv
"""

CSV_COLUMNS = ("image", "scale", "h", "w", "gflops", "active_branches", "routing", "tarc_gflops")
FRESH_TARC_NOTE = ("routing decided by the TARC of a freshly initialised model (seed 0), not a trained "
                   "one: give --checkpoint or --routing for meaningful numbers")


def configure(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what to count")
    what.add_argument("--extractor", metavar="NAME",
                      help="registered extractor (edsr-baseline, rdn, rcan, swinir, baseline, tadt), "
                           "built at the paper's configuration (or the --config's widths)")
    what.add_argument("--extractor-args", metavar="JSON", default=None,
                      help='constructor arguments as JSON, e.g. \'{"embed_dim": 60}\'')
    what.add_argument("--checkpoint", metavar="CKPT",
                      help="count the extractor (model.encoder) of this checkpoint instead")
    where = parser.add_argument_group("one size")
    where.add_argument("--size", metavar="HxW", help="LR input size, height x width, e.g. 768x1020")
    where.add_argument("--scale", default=None,
                       help="SR scale (TADT's TARC needs it when --routing is not given)")
    where.add_argument("--routing", metavar="all|none|BITS", default=None,
                       help="force the path of a routed extractor (baseline, tadt)")
    where.add_argument("--direct", action="store_true",
                       help="run fvcore at full size instead of the fast count (slow: minutes for SwinIR)")
    data = parser.add_argument_group("dataset mode")
    data.add_argument("--dataset", metavar="NAME", help="dataset of harness.data, e.g. div2k-valid")
    data.add_argument("--scales", metavar="S,S,...", default="2,3,4", help="scales (default 2,3,4)")
    data.add_argument("--config", metavar="CFG", action="append", default=None,
                      help="config file(s) for the data location (and widths); repeatable")
    data.add_argument("--out", metavar="CSV", help="per-image CSV to write (atomically)")
    data.add_argument("--max-images", type=int, default=0, metavar="N",
                      help="count only the first N images per scale (0: all)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                        help="where the TARC and the small counting runs execute (default: the "
                             "config's 'device' with --config, else cpu); counts do not depend on it")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


# --------------------------------------------------------------------------- building


def _load_cfg(args):
    from harness.config import load_config

    return load_config(*args.config) if args.config else None


def _extractor(args, cfg) -> tuple[object, str]:
    """(extractor module, its name) from --checkpoint or --extractor."""
    import torch

    from extractors import create_extractor, extractor_names

    if args.checkpoint:
        if args.extractor_args:
            raise HarnessError("--extractor-args cannot be combined with --checkpoint")
        from harness.checkpoint import load_model

        model, meta = load_model(args.checkpoint)
        name = (meta.get("spec") or {}).get("extractor") or type(model.encoder).__name__
        if args.extractor and args.extractor != name:
            raise HarnessError(f"--extractor {args.extractor} does not match the checkpoint's extractor {name}")
        return model.encoder.eval(), name
    if not args.extractor:
        raise HarnessError("give --extractor NAME or --checkpoint CKPT")
    names = extractor_names()
    if args.extractor not in names:
        raise HarnessError(f"unknown extractor {args.extractor!r}; known: {', '.join(names)}")
    kwargs = {}
    if cfg is not None:
        from harness.config import extractor_args

        kwargs = extractor_args(cfg, args.extractor)
    if args.extractor_args:
        try:
            extra = json.loads(args.extractor_args)
        except json.JSONDecodeError as exc:
            raise HarnessError(f"bad --extractor-args: not JSON ({exc.msg})") from None
        if not isinstance(extra, dict):
            raise HarnessError("bad --extractor-args: expected a JSON object such as '{\"embed_dim\": 60}'")
        kwargs.update(extra)
    from harness.modelbuild import build_bounded

    torch.manual_seed(0)  # any bad argument or a model too large for memory: one line, nothing allocated
    ext = build_bounded(lambda: create_extractor(args.extractor, **kwargs), f"{args.extractor} with {kwargs}")
    return ext.eval(), args.extractor


def _check_routing(ext, name: str, args) -> str | None:
    from harness import flops as F

    if args.routing is None:
        return None
    if not F.is_routed(ext):
        raise HarnessError(f"extractor {name} has no routing; --routing applies to baseline and tadt")
    try:
        return F.canonical_routing(ext, args.routing)
    except ValueError as exc:
        raise HarnessError(f"bad --routing: {exc}") from None


def _needs_tarc(ext, args) -> bool:
    from harness import flops as F

    return F.is_routed(ext) and args.routing is None and bool(getattr(ext, "scale_aware", False))


def _evaluated_routing(ext, lr, scale):
    """The routing evaluation takes for ``lr (3, h, w)`` in [0, 1] (a RoutingInfo)."""
    from harness.evaluate import evaluation_routing

    try:
        return evaluation_routing(ext, lr, scale)
    except ValueError as exc:
        raise HarnessError(str(exc)) from None


# --------------------------------------------------------------------------- modes


def _one_size(args, ext, name: str) -> dict:
    import torch

    from harness import flops as F

    h, w = parse_size(args.size)
    routing = _check_routing(ext, name, args)
    notes = []
    if _needs_tarc(ext, args):
        if args.scale is None:
            raise HarnessError(f"{name} routes by image and scale: give --scale (or force --routing)")
        lr = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))
        routing = _evaluated_routing(ext, lr, args.scale)
        notes.append(f"routing decided by the TARC on a seeded random {h}x{w} image, as evaluation feeds it")
        if not args.checkpoint:
            notes.append(FRESH_TARC_NOTE)
    try:
        count = F.count_extractor(ext, h, w, scale=args.scale, routing=routing, direct=args.direct)
    except ValueError as exc:
        raise HarnessError(str(exc)) from None
    out = {"extractor": name, "size": f"{h}x{w}", "h": h, "w": w, "scale": scale_number(args.scale),
           "gflops": count.gflops, "flops": count.flops, "params": count_parameters(ext),
           "method": "direct" if args.direct else "fast"}
    if F.is_routed(ext):
        out.update(routing=count.routing, active_branches=count.active_branches,
                   routing_source=count.routing_source, tarc_gflops=count.routing_flops / 1e9)
    if args.checkpoint:
        out["checkpoint"] = args.checkpoint
    if notes:
        out["note"] = "; ".join(notes)
    return out


def _dataset(args, ext, name: str, cfg) -> dict:
    import torch

    from harness import flops as F
    from harness.io import atomic_path

    try:
        from harness.data import eval_pairs
    except ImportError as exc:  # pragma: no cover - depends on the data module
        raise HarnessError(f"dataset mode needs harness.data ({exc})") from None
    if not args.out:
        raise HarnessError("dataset mode needs --out CSV")
    if args.size or args.direct:
        raise HarnessError("--size/--direct count one size; they cannot be combined with --dataset")
    if cfg is None:
        from harness.config import load_config

        cfg = load_config()
    scales = parse_scales(args.scales)
    bits = _check_routing(ext, name, args)
    tarc = _needs_tarc(ext, args)
    rows, summary = [], {}
    for s in scales:
        n, total = 0, 0.0
        for img_name, lr, _hr in eval_pairs(cfg["data"], args.dataset, s):
            if args.max_images and n >= args.max_images:
                break
            h, w = int(lr.shape[-2]), int(lr.shape[-1])
            routing = _evaluated_routing(ext, lr, s) if tarc else bits
            try:
                with torch.no_grad():
                    c = F.count_extractor(ext, h, w, scale=s, routing=routing)
            except ValueError as exc:
                raise HarnessError(str(exc)) from None
            rows.append({"image": img_name, "scale": format_scale(s), "h": h, "w": w,
                         "gflops": f"{c.gflops:.6f}",
                         "active_branches": "" if c.active_branches is None else c.active_branches,
                         "routing": c.routing or "",
                         "tarc_gflops": f"{c.routing_flops / 1e9:.6f}" if c.routing is not None else ""})
            n += 1
            total += c.gflops
        if n == 0:
            raise HarnessError(f"dataset {args.dataset} yielded no images at {scale_label(s)}")
        summary[format_scale(s)] = {"images": n, "mean_gflops": total / n}
    with atomic_path(args.out) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    out = {"extractor": name, "dataset": args.dataset, "scales": summary, "params": count_parameters(ext),
           "out": str(args.out)}
    if args.checkpoint:
        out["checkpoint"] = args.checkpoint
    if tarc and not args.checkpoint:
        out["note"] = FRESH_TARC_NOTE
    return out


def run(args: argparse.Namespace) -> int:
    if args.dataset is None and args.size is None:
        raise HarnessError("give --size HxW, or --dataset NAME with --out CSV")
    if args.size is not None:
        parse_size(args.size)  # fail on a bad size or scale before building anything
    if args.scale is not None:
        args.scale = parse_scale(args.scale)
    if args.out:
        from harness.io import check_writable
        check_writable(args.out, "--out CSV")
    cfg = _load_cfg(args)
    ext, name = _extractor(args, cfg)
    from harness.device import resolve_device

    device = resolve_device(args.device or (cfg.get("device") if cfg else None) or "cpu")
    ext = ext.to(device)
    result = _dataset(args, ext, name, cfg) if args.dataset else _one_size(args, ext, name)
    if result.get("note"):
        print(f"note: {result['note']}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if "size" in result:
        line = f"{result['extractor']} on {result['size']}"
        if result.get("scale") is not None:
            line += f" at x{result['scale']}"
        print(f"{line}: {result['gflops']:.2f} GFLOPs ({result['method']}), "
              f"{result['params']:,} parameters")
        if result.get("routing") is not None:
            print(f"routing ({result['routing_source']}): {result['routing']} "
                  f"({result['active_branches']} of {len(result['routing'])} branches); "
                  f"TARC {result['tarc_gflops']:.3f} GFLOPs")
    else:
        print(f"{result['extractor']} on {result['dataset']}: wrote {result['out']}")
        for s, v in result["scales"].items():
            print(f"  x{s}: {v['mean_gflops']:.2f} GFLOPs mean over {v['images']} images")
    return 0
