"""``python -m harness prepare-data``: check a data root, build the embedded sets and the LR cache."""
from __future__ import annotations

import argparse

from harness.errors import HarnessError

HELP = "check the dataset layout, build the embedded sets and the x2/x3/x4 LR cache"
DESCRIPTION = """\
Checks that every requested dataset is where the harness looks for it, reads
every image once (an unreadable file is reported by name), and builds what the
evaluation needs ahead of time:

  --source embedded  writes the scikit-image stand-ins (no download) as PNG
                     under CACHE/embedded-v1/ and their x2/x3/x4 LR images.
  --source folders   uses the standard layout under ROOT:
                       ROOT/DIV2K_train_HR/0001.png ...
                       ROOT/DIV2K_valid_HR/0801.png ...
                       ROOT/DIV2K_valid_LR_bicubic/X2/0801x2.png ...   (optional)
                       ROOT/benchmark/{Set5,Set14,B100,Urban100,Manga109}/HR/*.png
                       ROOT/benchmark/<Set>/LR_bicubic/X2/<name>x2.png (optional)
                     Where an LR_bicubic/X<s> folder is absent, the LR images are
                     made with MATLAB-compatible bicubic and cached under CACHE/lr/.

Datasets: div2k-train div2k-valid set5 set14 b100 urban100 manga109.
Every missing dataset is named in one error, with where to get it and where
to put it. Defaults come from --config's data section when given."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config file whose 'data' section gives the defaults")
    parser.add_argument("--source", choices=("embedded", "folders"),
                        help="embedded (scikit-image photographs) or folders (default: embedded)")
    parser.add_argument("--root", help="data root of the folder layout (default: data)")
    parser.add_argument("--cache", help="where generated images are cached (default: results/cache)")
    parser.add_argument("--datasets", nargs="+", metavar="NAME",
                        help="datasets to check (default: all)")
    parser.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4], metavar="S",
                        help="scales whose LR images are built/checked (2, 3, 4; default: all three)")


def _data_cfg(args: argparse.Namespace) -> dict:
    from harness.data.layouts import DEFAULT_DATA_CFG

    cfg = dict(DEFAULT_DATA_CFG)
    if args.config:
        from harness.config import load_config
        cfg.update(load_config(args.config)["data"])
    for key in ("source", "root", "cache"):
        value = getattr(args, key)
        if value is not None:
            cfg[key] = value
    return cfg


def run(args: argparse.Namespace) -> int:
    from harness.data import DATASETS, dataset_root, is_benchmark, prepare

    from harness.io import check_writable

    cfg = _data_cfg(args)
    check_writable(cfg["cache"], "--cache folder", directory=True)
    if args.datasets:
        unknown = [d for d in args.datasets if d not in DATASETS]
        if unknown:
            raise HarnessError(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(DATASETS)}")
    rows = prepare(cfg, args.datasets, tuple(args.scales))
    where = (f"embedded sets in {dataset_root(cfg)}" if cfg["source"] == "embedded"
             else f"folders under {cfg['root']}")
    print(f"data: {where}; LR cache: {cfg['cache']}")
    width = max(len(r["dataset"]) for r in rows)
    for r in rows:
        metric = "Y" if is_benchmark(r["dataset"]) else "RGB"
        lr = "; ".join(f"{s}: {how}" for s, how in r["lr"].items()) or "training set"
        print(f"  {r['dataset']:<{width}}  {r['images']:>4} images  {r['min_size']:>9} .. "
              f"{r['max_size']:<9}  {metric:<3}  {lr}")
    return 0
