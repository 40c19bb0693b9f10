"""``python -m harness check-regression``: the regression guard, layer by layer."""
from __future__ import annotations

HELP = "the regression guard: exact inference, statistical training, the embedded tables"
DESCRIPTION = """\
Checks the harness against committed baselines (tests/regression/), in layers:

  inference       exact: the committed tiny checkpoints of every extractor x
                  upsampler pair (and bicubic) evaluated on crops of the embedded
                  sets at x2, x3.5 and x12: PSNR per image within 1e-4 dB, FLOPs,
                  TADT routings and parameter counts exactly (inference.csv).
  training-quick  statistical: 20 training steps of EDSR-baseline-LIIF (embedded
                  default) and of the regression TADT-LIIF; mean losses within 6x
                  their spread measured under other instruction sets (training.csv).
  training-full   statistical: EDSR-baseline-LIIF trained 5 times (seeds 0-4) with
                  the embedded schedule; mean PSNR within 6x the measured seed spread.
  tables          every cell of results/table1-5.csv of a full embedded run against
                  embedded.csv: untrained cells exactly, trained cells within a
                  sanity band (training is chaotic across machines).

Each failure names the cell that moved, with old and new value and the
tolerance; exit 1 if any moved. The test suite runs inference and
training-quick; `make check-regression` runs all four after a full embedded run.
Refreshing a baseline is for intended changes only (tests/regression/README.md):
--write-baseline rewrites the chosen layers' baselines from this machine
(training measures its spreads again: minutes; training-full trains 10 seeds),
--write-checkpoints retrains the regression checkpoints (all, or --runs).
"""

ALL_LAYERS = ("inference", "training-quick", "training-full", "tables")


def configure(parser) -> None:
    from harness.regression.tables import BAND_DB, BAND_GFLOPS_REL, TOL_TABLE_DB

    parser.add_argument("--layers", default=",".join(ALL_LAYERS),
                        help=f"comma-separated layers to run (default: all: {','.join(ALL_LAYERS)})")
    parser.add_argument("--results", default="results", help="folder holding table1-5.csv (tables layer)")
    parser.add_argument("--baseline", default=None,
                        help="tables baseline (default tests/regression/embedded.csv)")
    parser.add_argument("--tables", default="1,2,3,4,5", help="tables to check (default 1,2,3,4,5)")
    parser.add_argument("--tolerance-db", type=float, default=TOL_TABLE_DB,
                        help=f"PSNR tolerance of untrained table cells (default {TOL_TABLE_DB:g} dB)")
    parser.add_argument("--band-db", type=float, default=BAND_DB,
                        help=f"sanity band of trained PSNR table cells (default {BAND_DB:g} dB)")
    parser.add_argument("--band-gflops-rel", type=float, default=BAND_GFLOPS_REL,
                        help=f"sanity band of trained GFLOPs table cells (default {BAND_GFLOPS_REL * 100:g} %%)")
    parser.add_argument("--runs", default=None, help="inference layer / --write-checkpoints: only these runs")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1, as the workflow)")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--values-json", default=None, metavar="PATH",
                        help="write the computed values to PATH and compare nothing (measuring spreads)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--measure-spread", action="store_true",
                      help="run the chosen layers here and under each instruction-set setting (and 2 "
                           "threads) in fresh processes; print the largest deviations")
    what.add_argument("--write-baseline", action="store_true",
                      help="rewrite the chosen layers' baselines from this machine instead of checking")
    what.add_argument("--write-checkpoints", action="store_true",
                      help="retrain the regression checkpoints (--runs, or all), then rewrite inference.csv")


def _layers(text: str) -> list[str]:
    from harness.errors import HarnessError

    layers = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in layers if x not in ALL_LAYERS]
    if bad or not layers:
        raise HarnessError(f"--layers takes {', '.join(ALL_LAYERS)}; got {text!r}")
    return layers


def _tables(text: str) -> list[int]:
    from harness.errors import HarnessError

    try:
        tables = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise HarnessError(f"--tables must list table numbers such as 1,2,3, got {text!r}") from None
    if not tables or any(t not in range(1, 6) for t in tables):
        raise HarnessError(f"--tables must list numbers from 1 to 5, got {text!r}")
    return tables


def run(args) -> int:
    import json
    import tempfile
    from pathlib import Path

    import torch

    from harness.regression import check

    torch.set_num_threads(args.threads)  # before any torch op: a larger OpenMP pool would spin idle
    layers = _layers(args.layers)
    tables = _tables(args.tables)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()] if args.runs else None
    with tempfile.TemporaryDirectory(prefix="check-regression-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.write_checkpoints:
            return check.write_checkpoints(work, runs)
        if args.write_baseline:
            return check.write_baselines(layers, work, args, tables)
        if args.measure_spread:
            args.values_json = str(work / "values-here.json")
        result = check.compute(layers, work, args, tables, runs)
        if args.measure_spread:
            check.measure(",".join(x for x in layers if x != "tables"), work, result.values())
            return 0
        if args.values_json:
            Path(args.values_json).write_text(json.dumps(result.values(), indent=1, sort_keys=True))
            print(f"values of {', '.join(layers)} -> {args.values_json}")
            return 0
        return result.report()
