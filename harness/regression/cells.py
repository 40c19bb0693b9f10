"""Cells of a regression baseline: reading, writing and comparing them.

A baseline is a CSV file with comment lines (``#``) first, then a header of key
columns and ``value``. Each layer of the guard (:mod:`harness.regression`) makes
rows of the same columns and says how each cell is compared (:class:`Rule`).
:func:`compare` returns one message per cell that moved, appeared, disappeared
or could not be computed; every message starts with the cell's name.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from harness.errors import HarnessError
from harness.io import atomic_path

Key = tuple
Row = Mapping[str, object]


@dataclass(frozen=True)
class Rule:
    """How a cell is compared: ``exact`` (numbers equal to 1e-9, text equal), ``abs`` (|new - old| <=
    tol) or ``rel`` (|new - old| <= tol * |old|)."""

    kind: str
    tol: float = 0.0

    def allows(self, old, new) -> bool:
        if isinstance(old, str) or isinstance(new, str):
            return str(old) == str(new)
        if self.kind == "exact":
            return abs(new - old) <= 1e-9 * max(1.0, abs(old))
        if self.kind == "abs":
            return abs(new - old) <= self.tol
        if self.kind == "rel":
            return abs(new - old) <= self.tol * abs(old)
        raise ValueError(f"unknown rule kind {self.kind!r}")

    def __str__(self) -> str:
        return {"exact": "exact", "abs": f"{self.tol:g}", "rel": f"{self.tol:.2%} relative"}[self.kind]


def as_number(key: Key, text: str):
    """The default reading of a CSV value: a float (a HarnessError names the cell otherwise)."""
    try:
        return float(text)
    except ValueError:
        raise HarnessError(f"baseline cell {'/'.join(map(str, key))} is not a number: {text!r}") from None


def show(value) -> str:
    """A value in a message: text as it is, numbers to 9 significant digits."""
    return value if isinstance(value, str) else f"{value:.9g}"


def fmt_value(value) -> str:
    """A value in a baseline file: integers as integers, other numbers with 7 decimals."""
    if isinstance(value, str):
        return value
    if float(value).is_integer() and abs(value) < 2 ** 53:
        return str(int(value))
    return f"{value:.7f}"


def read_cells(path, keys: Sequence[str], parse: Callable[[Key, str], object] = as_number) -> dict[Key, object]:
    """``{key tuple: value}`` of a baseline file (a one-line HarnessError if it is absent or malformed).

    ``parse(key, text)`` reads each value (default: a float)."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"baseline {path} does not exist (see tests/regression/README.md: how to make it)")
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    reader = csv.DictReader(lines)
    missing = set(keys) - set(reader.fieldnames or ()) | ({"value"} - set(reader.fieldnames or ()))
    if missing:
        raise HarnessError(f"baseline {path} lacks column(s) {', '.join(sorted(missing))}")
    out = {}
    for r in reader:
        key = tuple(r[k] for k in keys)
        out[key] = parse(key, r["value"])
    return out


def header_lines(path) -> list[str]:
    """The comment lines (without ``# ``) at the top of a baseline file."""
    out = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith("#"):
            break
        out.append(line[1:].strip())
    return out


def write_cells(path, keys: Sequence[str], cells: Mapping[Key, object], header: str) -> None:
    """Write ``cells`` sorted by key under ``header`` (each line becomes a ``#`` comment)."""
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="") as fh:
            for line in header.strip().splitlines():
                fh.write(f"# {line}".rstrip() + "\n")
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow([*keys, "value"])
            for key in sorted(cells, key=lambda k: tuple(map(str, k))):
                writer.writerow([*key, fmt_value(cells[key])])


def compare(current: Mapping[Key, object], baseline: Mapping[Key, object], rule: Callable[[Key], Rule],
            name: Callable[[Key], str], errors: Mapping[Key, str] | None = None,
            selected: Callable[[Key], bool] | None = None) -> list[str]:
    """One message per cell that moved beyond its rule, appeared, disappeared or failed.

    ``errors``: cells that could not be computed now, with the reason. ``selected``:
    baseline cells outside the selection are not expected now (a partial check). A
    baseline cell whose item (first key part) failed is covered by that failure's message.
    """
    errors = dict(errors or {})
    failed = {k[0] for k in errors}
    problems = []
    keys = set(baseline) | set(current) | set(errors)
    for key in sorted(keys, key=lambda k: tuple(map(str, k))):
        if key in errors:
            problems.append(f"{name(key)}: could not be computed: {errors[key]}")
            continue
        if key not in current:
            if key[0] not in failed and (selected is None or selected(key)):
                problems.append(f"{name(key)}: in the baseline ({show(baseline[key])}) but missing now")
            continue
        if key not in baseline:
            problems.append(f"{name(key)}: new cell ({show(current[key])}) not in the baseline")
            continue
        old, new, r = baseline[key], current[key], rule(key)
        if not r.allows(old, new):
            if isinstance(old, str) or isinstance(new, str):
                problems.append(f"{name(key)}: old {old} new {new} (exact)")
            else:
                problems.append(f"{name(key)}: old {show(old)} new {show(new)} "
                                f"delta {new - old:+.3g} (tolerance {r})")
    return problems


def max_deltas(current: Mapping[Key, object], baseline: Mapping[Key, object],
               group: Callable[[Key], str]) -> dict[str, float]:
    """Largest |new - old| per group of numeric cells present in both (for reports)."""
    out: dict[str, float] = {}
    for key, new in current.items():
        old = baseline.get(key)
        if old is None or isinstance(old, str) or isinstance(new, str):
            continue
        d = abs(float(new) - float(old))
        if math.isfinite(d):
            g = group(key)
            out[g] = max(out.get(g, 0.0), d)
    return out


def rows_to_cells(rows: Iterable[Row], keys: Sequence[str]) -> dict[Key, object]:
    return {tuple(str(r[k]) for k in keys): r["value"] for r in rows}
