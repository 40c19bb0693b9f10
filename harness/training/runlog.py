"""What a training run reports: the per-run CSV log and the progress shown on stderr.

The CSV (``LOG_FIELDS``) gets one row every ``log_every`` steps: means over the
steps of the row, the learning rate of its last step, and ``seconds`` of
training so far; it is appended row by row. Every checkpoint also holds the rows
so far (:attr:`CsvLog.rows`), so a resumed run rewrites the whole log even where
the file is gone (Snakemake deletes a job's log files before it runs the job
again); the rows past the resumed step are dropped. Progress is a tqdm bar
(loss, lr, it/s) when stderr is a terminal, else a plain line per CSV row; notes
are shown either way. Only rank 0 writes either.
"""
from __future__ import annotations

import csv
import math
import os
import sys
from pathlib import Path

LOG_FIELDS = ["step", "epoch", "loss", "l1", "l_beta", "beta_mean", "lr", "it_per_s", "seconds"]


def _step_of(row: dict) -> int | None:
    try:
        return int(row["step"])
    except (KeyError, TypeError, ValueError):
        return None


class CsvLog:
    """The per-run CSV (``LOG_FIELDS``), appended row by row; ``rows`` holds them all (strings).

    A resumed run (``resume_step`` > 0) starts from ``saved_rows`` (its
    checkpoint's), else from the rows of the file, each up to ``resume_step``.
    """

    def __init__(self, path: Path | None, resume_step: int, saved_rows: list | None = None):
        self.path = Path(path) if path else None
        self.rows: list[dict] = []
        if resume_step > 0:
            if saved_rows is None and self.path is not None and self.path.is_file():
                with self.path.open(newline="") as fh:
                    saved_rows = list(csv.DictReader(fh))
            self.rows = [self._cells(r) for r in saved_rows or []
                         if isinstance(r, dict) and _step_of(r) is not None and _step_of(r) <= resume_step]
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        from harness.io import atomic_path

        with atomic_path(self.path) as tmp:
            with tmp.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, LOG_FIELDS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(self.rows)
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o666 & ~umask)  # mkstemp makes 0600; a log is as readable as any file

    @staticmethod
    def _cells(row: dict) -> dict:
        return {k: "" if row.get(k) is None else str(row.get(k)) for k in LOG_FIELDS}

    def write(self, row: dict) -> None:
        self.rows.append(self._cells(row))
        if self.path is None:
            return
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, LOG_FIELDS, extrasaction="ignore").writerow(row)


def fmt(x: float | None, spec: str = ".6g") -> str:
    """A CSV cell: ``x`` formatted, or empty for None/NaN."""
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


class Progress:
    """tqdm bar on stderr (``bar``), plain lines every ``log_every`` steps (``plain``), or nothing."""

    def __init__(self, mode: str, run: str, total: int, start: int, main: bool = True):
        self.main = main
        if not main:
            mode = "none"
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "plain"
        self.mode, self.run, self.total = mode, run, total
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=run, file=sys.stderr, dynamic_ncols=True,
                            unit="it", smoothing=0.1)

    def resume_at(self, step: int) -> None:
        """Move the bar to ``step`` (a resumed run)."""
        if self.bar is not None:
            self.bar.n = step
            self.bar.last_print_n = step
            self.bar.refresh()

    def step(self, loss: float, lr: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            self.bar.update(1)

    def line(self, row: dict) -> None:
        if self.mode == "plain":
            print(f"train {self.run} step {row['step']}/{self.total} epoch {row['epoch']} "
                  f"loss {float(row['loss']):.5f} lr {float(row['lr']):.3g} "
                  f"{float(row['it_per_s']):.2f} it/s {float(row['seconds']):.0f} s",
                  file=sys.stderr, flush=True)

    def note(self, msg: str) -> None:
        """Notes and warnings: always shown (rank 0 only), whatever the progress mode."""
        if not self.main:
            return
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
