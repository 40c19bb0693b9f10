"""``python -m harness released``: check the released tier's checkpoint folder, evaluating nothing."""
from __future__ import annotations

HELP = "check the folder of released LIIF/LTE checkpoints (profile released) before evaluating"
DESCRIPTION = """\
The released-weights tier (config/released.yaml) evaluates the reference
repositories' own checkpoints, one file <run>.pth per run in `released.folder`,
into Tables 1-2. This verb checks that folder as the workflow will use it: the
file names (a .pth named for no released run is an error), and every file
present: readable, a LIIF/LTE release of the run it is named for, at the
configuration's (the paper's) widths, its weights fitting that model. It prints
which runs get rows and which are missing; the first problem is one line
(exit 2).

Example:
  python -m harness released --config config/released.yaml
"""


def configure(parser) -> None:
    from harness.config import ROOT

    parser.add_argument("--config", nargs="+", default=[str(ROOT / "config" / "released.yaml")],
                        metavar="YAML", help="configuration file(s) (default: config/released.yaml)")
    parser.add_argument("--folder", help="the folder to check (default: the config's released.folder)")


def run(args) -> int:
    from harness.checkpoint import load_model
    from harness.config import load_config
    from harness.errors import HarnessError
    from harness.released import checkpoint, expectation, folder, is_released, scan

    cfg = load_config(*args.config)
    if not is_released(cfg):
        raise HarnessError(f"profile {cfg['profile']!r} has no released checkpoints "
                           "(use config/released.yaml)")
    if args.folder:
        cfg["released"]["folder"] = args.folder
    present = scan(cfg)
    runs = cfg["released"]["runs"]
    width = max(map(len, runs))
    print(f"released checkpoints in {folder(cfg)} (profile released):")
    for run in runs:
        if run not in present:
            print(f"  {run:<{width}}  missing: its rows are left out")
            continue
        _, meta = load_model(checkpoint(cfg, run), expect=expectation(cfg, run))
        spec = meta["spec"]
        print(f"  {run:<{width}}  ok: {spec['upsampler']} on {spec['extractor']}, epoch {meta['epoch']}")
    tables = ", ".join(cfg["released"]["tables"])
    print(f"{len(present)} of {len(runs)} released runs have a file; {tables} get their rows.")
    return 0
