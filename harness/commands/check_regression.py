"""``python -m harness check-regression``: the embedded tables against a committed baseline."""
from __future__ import annotations

HELP = "compare every PSNR/FLOPs cell of the embedded tables with a committed baseline"
DESCRIPTION = """\
Compares each PSNR, GFLOPs and parameter cell of results/table1-5.csv (made
with the embedded default) with tests/regression/embedded.csv and exits 1,
naming every cell that moved (table, row, column, old, new, delta), when
  |new - old| > --tolerance-db          for PSNR (dB),
  |new - old| > --tolerance-gflops-rel * |old|  for GFLOPs,
  new != old                              for parameters (they are exact).
A cell that appears or disappears also fails. --write-baseline writes the
baseline from the current tables instead (once, from a real embedded run).

Why a tolerance at all: the embedded run is deterministic for a fixed seed on
one machine and thread count, but CPU float sums are not associative; a
different thread count (or BLAS build) changes the order of reductions in
convolutions and matrix products, which moves weights by ~1e-7 relative per
step; over the embedded schedule this shows up as a few 1e-3 dB of PSNR, and
it can flip a TADT routing decision whose probability sits at 0.5, which
moves that image's GFLOPs by one branch's share. The defaults (0.02 dB, 1%)
sit above that noise and far below any real change to a model, the protocol
or the FLOPs counter (tenths of a dB, whole branches on every image).
"""

DEFAULT_TOL_DB = 0.02
DEFAULT_TOL_GFLOPS_REL = 0.01
HEADER = """\
# Regression baseline of the embedded workflow (config/default.yaml), written by
#   python -m harness check-regression --write-baseline
# from a full embedded run (snakemake --cores all all). One row per cell of
# results/table1-5.csv: table, row (the table's key), column, value.
# Checked by `make check-regression` with tolerances {tol_db} dB (PSNR) and
# {tol_rel} relative (GFLOPs); parameter counts must match exactly.
# The tolerances absorb CPU float nondeterminism across thread counts (reduction
# order in BLAS/conv changes the last bits of each step; over the short embedded
# schedule that is ~1e-3 dB and, rarely, one flipped TADT branch on one image),
# and are far below a real regression (tenths of a dB, a branch on every image).
# Regenerate only for an intended change, and say why in the commit message.
"""


def configure(parser) -> None:
    parser.add_argument("--results", default="results", help="folder holding table1-5.csv")
    parser.add_argument("--baseline", default="tests/regression/embedded.csv",
                        help="committed baseline CSV")
    parser.add_argument("--tolerance-db", type=float, default=DEFAULT_TOL_DB,
                        help=f"allowed PSNR change in dB (default {DEFAULT_TOL_DB})")
    parser.add_argument("--tolerance-gflops-rel", type=float, default=DEFAULT_TOL_GFLOPS_REL,
                        help=f"allowed relative GFLOPs change (default {DEFAULT_TOL_GFLOPS_REL})")
    parser.add_argument("--tables", default="1,2,3,4,5", help="tables to check (default 1,2,3,4,5)")
    parser.add_argument("--write-baseline", action="store_true",
                        help="write the baseline from the current tables instead of checking")


def flatten(results, tables) -> "pd.DataFrame":
    """Every value cell of the tables as rows ``table, row, column, value``."""
    from pathlib import Path

    import pandas as pd

    from harness.cli import HarnessError
    from harness.tables import read_table, row_key, value_columns

    rows = []
    for n in tables:
        path = Path(results) / f"table{n}.csv"
        if not path.is_file():
            raise HarnessError(f"{path} does not exist: run the embedded workflow first "
                               "(snakemake --cores all all)")
        df = read_table(path)
        profiles = set(df["profile"])
        if profiles != {"embedded"}:
            raise HarnessError(f"{path} was made with profile {', '.join(sorted(profiles))}; the "
                               "regression baseline is for the embedded default")
        for _, r in df.iterrows():
            for c in value_columns(df):
                if pd.notna(r[c]):
                    rows.append({"table": n, "row": row_key(n, r), "column": c, "value": float(r[c])})
    return pd.DataFrame(rows, columns=["table", "row", "column", "value"])


def read_baseline(path) -> "pd.DataFrame":
    from pathlib import Path

    import pandas as pd

    from harness.cli import HarnessError

    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"baseline {path} does not exist; create it from a real embedded run "
                           "with --write-baseline")
    df = pd.read_csv(path, comment="#", dtype={"table": int, "row": str, "column": str, "value": float},
                     keep_default_na=False)
    missing = {"table", "row", "column", "value"} - set(df.columns)
    if missing:
        raise HarnessError(f"baseline {path} lacks column(s) {', '.join(sorted(missing))}")
    return df


def compare(current, baseline, tol_db: float, tol_rel: float) -> list[str]:
    """Messages for every cell that moved beyond its tolerance, appeared or disappeared."""
    from harness.tables import column_kind

    def keyed(df):
        return {(int(r.table), r.row, r.column): float(r.value) for r in df.itertuples()}

    cur, base = keyed(current), keyed(baseline)
    tables = {k[0] for k in cur}
    problems = []
    for key in sorted(set(base) | set(cur), key=lambda k: (k[0], k[1], k[2])):
        t, row, col = key
        if t not in tables:
            continue  # a table not being checked
        name = f"table{t} row {row} column {col}"
        if key not in cur:
            problems.append(f"{name}: in the baseline ({base[key]:.4f}) but missing now")
            continue
        if key not in base:
            problems.append(f"{name}: new cell ({cur[key]:.4f}) not in the baseline")
            continue
        old, new = base[key], cur[key]
        delta = new - old
        kind = column_kind(col)
        if kind == "psnr":
            moved, allowed = abs(delta) > tol_db, f"{tol_db} dB"
        elif kind == "gflops":
            moved, allowed = abs(delta) > tol_rel * abs(old), f"{tol_rel:.2%} relative"
        else:
            moved, allowed = abs(delta) > 1e-9, "exact"
        if moved:
            problems.append(f"{name}: old {old:.4f} new {new:.4f} delta {delta:+.4f} "
                            f"(tolerance {allowed})")
    return problems


def run(args) -> int:
    import sys

    from harness.cli import HarnessError
    from harness.io import atomic_path

    try:
        tables = sorted({int(t) for t in args.tables.split(",") if t.strip()})
    except ValueError:
        raise HarnessError(f"--tables must list table numbers such as 1,2,3, got {args.tables!r}") from None
    if not tables or any(t not in range(1, 6) for t in tables):
        raise HarnessError(f"--tables must list numbers from 1 to 5, got {args.tables!r}")
    current = flatten(args.results, tables)
    if args.write_baseline:
        with atomic_path(args.baseline) as tmp:
            with open(tmp, "w") as fh:
                fh.write(HEADER.format(tol_db=args.tolerance_db, tol_rel=args.tolerance_gflops_rel))
                current.to_csv(fh, index=False, float_format="%.6f", lineterminator="\n")
        print(f"baseline with {len(current)} cells from tables {args.tables} -> {args.baseline}")
        return 0
    problems = compare(current, read_baseline(args.baseline), args.tolerance_db,
                       args.tolerance_gflops_rel)
    if problems:
        print(f"regression: {len(problems)} cell(s) moved against {args.baseline}:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"no regression: {len(current)} cells of tables {args.tables} within "
          f"{args.tolerance_db} dB / {args.tolerance_gflops_rel:.2%} GFLOPs of {args.baseline}")
    return 0
