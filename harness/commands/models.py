"""``python -m harness models``: parameter counts of every extractor and upsampler."""
from __future__ import annotations

import argparse
import json

HELP = "parameter counts of every registered extractor and upsampler (paper configurations)"
DESCRIPTION = """\
Parameter counts of every registered extractor and upsampler at the default
(paper) configuration, the numbers of the paper's Table 3 "Params" column.

Extractors count every parameter, frozen ones included (EDSR-baseline and
RCAN carry 24 frozen mean-shift parameters, as in the released LIIF
definitions). An upsampler's count is its own (decoder) parameters only,
measured around a 64-channel extractor (EDSR-baseline), i.e. the model's
parameters minus its encoder's. Models are built on PyTorch's meta device: no
memory is allocated and nothing is initialised, so this takes seconds.

examples:
  python -m harness models
  python -m harness models --json > results/params.json
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help='print {"extractors": {name: params}, "upsamplers": {name: params}} as JSON')


def _build(fn, *args):
    """Build on the meta device (no allocation); fall back to the CPU for a
    module whose constructor needs real values."""
    import torch

    try:
        with torch.device("meta"):
            return fn(*args)
    except (NotImplementedError, RuntimeError):
        return fn(*args)


def parameter_counts() -> dict:
    """``{"extractors": {name: n}, "upsamplers": {name: n}}`` at default configurations."""
    from extractors import create_extractor, extractor_names
    from harness.registry import count_parameters
    from upsamplers import create_model, upsampler_names

    extractors = {name: count_parameters(_build(create_extractor, name)) for name in extractor_names()}
    upsamplers = {name: count_parameters(_build(create_model, name, "edsr-baseline"), skip="encoder")
                  for name in upsampler_names()}
    return {"extractors": extractors, "upsamplers": upsamplers}


def run(args: argparse.Namespace) -> int:
    counts = parameter_counts()
    if args.json:
        print(json.dumps(counts, indent=2))
        return 0
    for family, label in (("extractors", "extractor"), ("upsamplers", "upsampler (decoder only)")):
        print(f"{label:<26} {'parameters':>12} {'M':>8}")
        for name, n in counts[family].items():
            print(f"{name:<26} {n:>12,} {n / 1e6:>8.2f}")
        print()
    return 0
