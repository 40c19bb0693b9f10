"""``prepare``: check every dataset's layout, read every image once and build the x2/x3/x4
LR cache ahead of evaluation (the work behind ``python -m harness prepare-data``)."""
from __future__ import annotations

from typing import Any, Mapping

from harness.data.files import hr_files
from harness.data.images import read_image
from harness.data.layouts import DATASETS, check_data_cfg, layout_of
from harness.data.lr import matlab_lr_pairs
from harness.data.pairs import check_eval_sizes
from harness.errors import HarnessError
from harness.protocol import matlab_scale


def prepare(data_cfg: Mapping[str, Any], datasets: list[str] | None = None,
            scales: tuple[int, ...] = (2, 3, 4)) -> list[dict]:
    """Check every dataset's layout, read every image, build the LR cache; one row per dataset.

    An evaluation image too small for one of ``scales``, or a precomputed LR file of
    the wrong size, is an error naming the file (``harness.data.pairs``, ``harness.data.lr``).

    A row: ``dataset``, ``images`` (count), ``min_size``/``max_size`` (``HxW``) and
    ``lr`` (``{"x2": "5 generated", ...}``; empty for the training set). All missing
    datasets are reported in ONE HarnessError (each folder named).
    """
    cfg = check_data_cfg(data_cfg)
    names = list(DATASETS) if datasets is None else list(datasets)
    for n in names:
        layout_of(n)
    for s in scales:
        if matlab_scale(s) is None:
            raise HarnessError(f"the LR cache holds x2, x3 and x4 only, not x{s}")
    problems, rows = [], []
    for n in names:
        try:
            files = hr_files(cfg, n)
        except HarnessError as exc:
            problems.append(str(exc))
            continue
        sizes = [read_image(f).shape[:2] for f in files]
        row = {"dataset": n, "images": len(files),
               "min_size": f"{min(h for h, _ in sizes)}x{min(w for _, w in sizes)}",
               "max_size": f"{max(h for h, _ in sizes)}x{max(w for _, w in sizes)}", "lr": {}}
        if n != "div2k-train":
            for s in scales:
                check_eval_sizes(files, n, s)
                counts: dict[str, int] = {}
                for *_, how in matlab_lr_pairs(cfg, n, int(s)):
                    counts[how] = counts.get(how, 0) + 1
                row["lr"][f"x{int(s)}"] = ", ".join(f"{v} {k}" for k, v in counts.items())
        rows.append(row)
    if problems:
        raise HarnessError(" | ".join(problems))
    return rows
