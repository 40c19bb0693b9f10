"""Bad arguments to the hand-run decoder benchmarks stop at once: usage, one error line, exit 2,
no traceback, nothing measured."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("script, args, says", [
    ("bench_decoders.py", ["--inference-tokens", "-1"], "--inference-tokens must be 0 (one call) or more"),
    ("bench_lte_parts.py", ["--blocks", "0,1024"], "--blocks must be positive whole numbers"),
    ("bench_lte_parts.py", ["--blocks", "1k"], "--blocks must be positive whole numbers"),
    ("bench_lte_parts.py", ["--threads", "0"], "--threads must be at least 1"),
])
def test_bad_argument_is_one_error_line(script, args, says):
    r = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stdout == ""
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and says in errors[0], r.stderr
    assert "Traceback" not in r.stderr
