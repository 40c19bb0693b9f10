"""``python -m harness figure N``: the paper's Figures 1, 2 and 7 as PNG (+ their data as CSV)."""
from __future__ import annotations

HELP = "draw Figure 1, 2 or 7 (PNG) and write the numbers behind it (CSV)"
DESCRIPTION = """\
  figure1  PSNR vs GFLOPs (Table 3's extractors and upsampler), disc area ~ parameters:
           --table3 results/table3.csv --eval <each Table 3 run on Table 1's dataset>
  figure2  GFLOPs vs scale, SwinIR vs TADT on one image:
           --flops swinir=CSV tadt-liif=CSV
  figure7  beta predicted by the trained TARC vs scale:
           --checkpoint tadt-liif=PTH tadt-liif-nolbeta=PTH
Inputs, scales and the image come from the experiment manifest
(config/experiments.yaml, key figures).
Every figure says which profile produced it; embedded numbers are not the paper's.
"""


def configure(parser) -> None:
    parser.add_argument("name", choices=["figure1", "figure2", "figure7", "1", "2", "7"],
                        help="figure of the manifest (config/experiments.yaml): figure1, figure2, figure7")
    parser.add_argument("--config", nargs="+", default=[], metavar="YAML",
                        help="configuration file(s) (default: the embedded default)")
    parser.add_argument("--table3", metavar="CSV", help="Figure 1: our Table 3")
    parser.add_argument("--eval", nargs="*", default=[], metavar="CSV",
                        help="Figure 1: per-image PSNR CSVs of the *-liif runs")
    parser.add_argument("--flops", nargs="*", default=[], metavar="NAME=CSV",
                        help="Figure 2: per-image FLOPs CSVs of swinir and tadt-liif")
    parser.add_argument("--checkpoint", nargs="*", default=[], metavar="RUN=PTH",
                        help="Figure 7: trained TADT checkpoints")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument("--data", help="output CSV of the plotted numbers (default: OUT with .csv)")


def run(args) -> int:
    from pathlib import Path

    from harness import figures
    from harness.errors import HarnessError
    from harness.config import load_config
    from harness.tables import parse_named, read_evals, read_flops, read_table

    from harness.io import check_writable

    check_writable(args.out, "--out")
    check_writable(args.data or Path(args.out).with_suffix(".csv"), "--data")
    cfg = load_config(*args.config)
    name = f"figure{args.name}" if args.name.isdigit() else args.name
    if name == "figure1":
        if not args.table3:
            raise HarnessError("Figure 1 needs --table3")
        data = figures.figure1_data(cfg, read_table(args.table3), read_evals(args.eval))
        figures.plot_figure1(data, cfg, args.out)
    elif name == "figure2":
        data = figures.figure2_data(cfg, read_flops(parse_named(args.flops, "--flops")))
        figures.plot_figure2(data, cfg, args.out)
    else:
        ckpts = parse_named(args.checkpoint, "--checkpoint")
        if not ckpts:
            raise HarnessError("Figure 7 needs --checkpoint RUN=PTH (tadt-liif, tadt-liif-nolbeta)")
        data = figures.figure7_data(cfg, ckpts)
        figures.plot_figure7(data, cfg, args.out)
    data_path = args.data or str(Path(args.out).with_suffix(".csv"))
    figures.write_data(data, data_path)
    print(f"{name} ({cfg['profile']} profile) -> {args.out}, {data_path}")
    return 0
