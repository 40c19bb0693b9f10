"""``python -m harness table N``: build one of the paper's Tables 1-5 as CSV."""
from __future__ import annotations

HELP = "build Table 1-5 (paper layout) from per-image evaluation and FLOPs CSVs"
DESCRIPTION = """\
Build one of the paper's tables from the per-image CSVs written by
'evaluate' (--eval) and 'flops' (--flops NAME=CSV; NAME is the extractor, or the
TADT run for routed FLOPs). The table says which profile and dataset(s)
produced it. Scales and datasets come from the config's evaluation.tableN.

  Table 1  --eval: every pair and bicubic on evaluation.table1.dataset
  Table 2  --eval: every pair and bicubic on each evaluation.table2.datasets
  Table 3  --flops: each static extractor and tadt-liif (params are counted
           from the config's widths unless --params gives them)
  Table 4  --eval: tadt-liif-beta0.5, tadt-liif-beta0.25s, tadt-liif
  Table 5  --eval and --flops: tadt-liif, tadt-liif-nolbeta

Example:
  python -m harness table 3 --config results/config.yaml \\
      --flops swinir=results/flops/swinir/div2k-valid.csv ... --out results/table3.csv
"""


def configure(parser) -> None:
    parser.add_argument("n", type=int, choices=[1, 2, 3, 4, 5], help="table number")
    parser.add_argument("--config", nargs="+", default=[], metavar="YAML",
                        help="configuration file(s) (default: the embedded default)")
    parser.add_argument("--eval", nargs="*", default=[], metavar="CSV",
                        help="per-image PSNR CSVs written by 'evaluate'")
    parser.add_argument("--flops", nargs="*", default=[], metavar="NAME=CSV",
                        help="per-image FLOPs CSVs written by 'flops'")
    parser.add_argument("--params", metavar="JSON",
                        help="Table 3: {extractor: parameter count} instead of counting them")
    parser.add_argument("--out", required=True, help="output CSV")


def run(args) -> int:
    import json
    from pathlib import Path

    from harness.errors import HarnessError
    from harness.config import load_config
    from harness.tables import build_table, parse_named, read_evals, read_flops, write_table

    cfg = load_config(*args.config)
    params = None
    if args.params:
        p = Path(args.params)
        if not p.is_file():
            raise HarnessError(f"--params file {p} does not exist")
        params = {str(k): int(v) for k, v in json.loads(p.read_text()).items()}
    df = build_table(args.n, cfg, evals=read_evals(args.eval),
                     flops=read_flops(parse_named(args.flops, "--flops")), params=params)
    write_table(df, args.out)
    print(f"Table {args.n} ({cfg['profile']} profile, {df['dataset'].iloc[0]}): "
          f"{len(df)} rows -> {args.out}")
    return 0
