"""``python -m harness VERB``: one entry point, one module per verb.

Each verb lives in ``harness/commands/<verb>.py`` and defines
``HELP`` (one line), ``configure(parser)`` and ``run(args) -> int``.
Building the parser imports every verb module (for its help line); the modules
import torch, the models and the data code only inside ``run``, so ``--help``
is fast (tests/test_cli_models.py checks that it imports no torch).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from harness.errors import HarnessError

# verb -> module under harness.commands (underscores for dashes)
VERBS = {
    "models": "models",
    "flops": "flops",
    "prepare-data": "prepare_data",
    "train": "train",
    "evaluate": "evaluate",
    "released": "released",
    "upscale": "upscale",
    "table": "table",
    "figure": "figure",
    "report": "report",
    "check-regression": "check_regression",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness",
        description=(
            "Reproduction harness for 'Task-Aware Dynamic Transformer for Efficient "
            "Arbitrary-Scale Image Super-Resolution' (TADT). Each verb does one step "
            "of the workflow; the Snakefile chains them. Run 'python -m harness VERB "
            "--help' for a verb's options."
        ),
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, modname in VERBS.items():
        mod = importlib.import_module(f"harness.commands.{modname}")  # a missing module is an error
        p = sub.add_parser(verb, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.configure(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "verb", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
