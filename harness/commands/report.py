"""``python -m harness report``: reproduced tables next to the published ones, claims checked."""
from __future__ import annotations

HELP = "write the comparison report (tables vs the paper, claims PASS/FAIL/N/A)"
DESCRIPTION = """\
Reads results/table1-5.csv, results/figure7.csv and the JSON of
'python -m harness models --json', sets each reproduced cell next to the
published one (paper/table1-5.csv) with the difference, and checks the paper's
claims one by one (PASS / FAIL / N/A, with the numbers behind each). It states
which tables were produced at paper scale and which at embedded scale
(embedded numbers are never the paper's). Missing inputs make claims N/A.
Cells the paper leaves empty for a stated reason (Table 1's out-of-memory NLSA
x2) are named under their table with the measured evaluation memory of
--memory (benchmarks/eval_memory.csv).
"""


def configure(parser) -> None:
    from harness.config import ROOT

    parser.add_argument("--config", nargs="+", default=[], metavar="YAML",
                        help="configuration file(s) (default: the embedded default)")
    parser.add_argument("--results", default="results", help="folder holding tableN.csv, figure7.csv")
    parser.add_argument("--paper", default=str(ROOT / "paper"), help="folder of the published tables")
    parser.add_argument("--models", help="JSON written by 'python -m harness models --json'")
    parser.add_argument("--memory", default=str(ROOT / "benchmarks" / "eval_memory.csv"),
                        help="CSV of measured evaluation memory (benchmarks/bench_eval_memory.py --csv; "
                             "default: benchmarks/eval_memory.csv)")
    parser.add_argument("--out", default="results/report.md", help="output Markdown file")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a claim FAILs (default: the report is the result)")


def run(args) -> int:
    from harness.config import load_config
    from harness.io import atomic_write_text
    from harness.report import FAIL, NA, PASS, build_report

    from harness.io import check_writable

    check_writable(args.out, "--out")
    cfg = load_config(*args.config)
    text, claims = build_report(args.results, args.paper, args.models, cfg, args.memory)
    atomic_write_text(args.out, text)
    counts = {s: sum(c.status == s for c in claims) for s in (PASS, FAIL, NA)}
    print(f"report -> {args.out}: {counts[PASS]} PASS, {counts[FAIL]} FAIL, {counts[NA]} N/A")
    return 1 if args.strict and counts[FAIL] else 0
