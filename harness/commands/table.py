"""``python -m harness table N``: build one of the paper's Tables 1-5 as CSV."""
from __future__ import annotations

HELP = "build one of the paper's tables (paper layout) from per-image evaluation and FLOPs CSVs"
DESCRIPTION = """\
Build one of the paper's tables from the per-image CSVs written by 'evaluate'
(--eval) and 'flops' (--flops NAME=CSV; NAME is the extractor, or the run of a
routed extractor such as TADT, whose FLOPs depend on its trained routing).
The table's rows, datasets, scales and kinds of value come from the experiment
manifest (config/experiments.yaml, key tables.NAME); the table says which
profile and dataset(s) produced it.

Example:
  python -m harness table table3 \\
      --flops swinir=results/flops/swinir/div2k-valid.csv ... --out results/table3.csv
"""


def configure(parser) -> None:
    parser.add_argument("name", help="table of the manifest: table1 ... table5 (or just its number)")
    parser.add_argument("--config", nargs="+", default=[], metavar="YAML",
                        help="configuration file(s) (default: the embedded default)")
    parser.add_argument("--eval", nargs="*", default=[], metavar="CSV",
                        help="per-image PSNR CSVs written by 'evaluate'")
    parser.add_argument("--flops", nargs="*", default=[], metavar="NAME=CSV",
                        help="per-image FLOPs CSVs written by 'flops'")
    parser.add_argument("--params", metavar="JSON",
                        help="{extractor: parameter count} instead of counting them")
    parser.add_argument("--out", required=True, help="output CSV")


def run(args) -> int:
    import json
    import math
    from pathlib import Path

    from harness.config import load_config
    from harness.errors import HarnessError
    from harness.tables import build_table, parse_named, read_evals, read_flops, write_table

    from harness.io import check_writable

    check_writable(args.out, "--out")
    cfg = load_config(*args.config)
    params = None
    if args.params:
        p = Path(args.params)
        if not p.is_file():
            raise HarnessError(f"--params file {p} does not exist")
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:  # not JSON, not UTF-8, unreadable
            raise HarnessError(f"--params file {p} is not JSON ({str(exc).splitlines()[0][:200]})") from None
        if not isinstance(raw, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in raw.values()):
            raise HarnessError(f"--params file {p} is not a JSON object of parameter counts "
                               '({"extractor": count, ...})')
        params = {str(k): int(v) for k, v in raw.items()}
    name = f"table{args.name}" if args.name.isdigit() else args.name
    df = build_table(name, cfg, evals=read_evals(args.eval),
                     flops=read_flops(parse_named(args.flops, "--flops")), params=params)
    write_table(df, args.out)
    print(f"{name} ({cfg['profile']} profile, {df['dataset'].iloc[0]}): "
          f"{len(df)} rows -> {args.out}")
    return 0
