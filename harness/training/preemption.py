"""Stopping a run cleanly when its job's time is up: SIGTERM -> checkpoint -> exit status 75.

A batch system ends a job by sending SIGTERM to every process of it and, a grace
period later, SIGKILL (SLURM at the wall-time limit, or on preemption, after
``KillWait``, 30 s by default; ``sbatch --signal=TERM@SECONDS`` sends the SIGTERM that
much earlier). During a run the trainer's SIGTERM handler only sets a flag
(:class:`StopRequest`). At the next step boundary -- every process of a
``torchrun`` agrees on it, the flag being all-reduced after every step -- the
trainer writes the full resumable state to ``<out>.partial`` (the file the
periodic checkpoints go to), logs one line and raises :class:`Preempted`; ``python
-m harness train`` then exits with :data:`PREEMPTED_EXIT`. Starting the same run
again continues from that step, ending bitwise identical on CPU to an
uninterrupted run. The workflow resubmits a failed training job up to
``train.max_resubmissions`` times (``rules/train.smk``), so a chain of jobs, each
cut at the site's limit, completes the run.

A job whose run completes as its time limit strikes is counted as failed
(TIMEOUT) even though ``out`` is written, and Snakemake deletes ``out``. So the
completed run's state stays as ``<out>.partial`` too (a hard link to ``out``,
:func:`settle_partial`) when the signal came while ``out`` was written, and
always in the workflow (``--attempt``, Snakemake's attempt number): the next
attempt finds the last step in the partial file and only writes ``out`` again.
A first attempt (a forced rerun, say) does not take such a state: it trains
afresh (:func:`harness.training.resume.find_resume`).

Only SIGTERM is handled: it is what SLURM, torchrun's agent (which forwards it to
its workers) and Snakemake (which then waits for its running job) all treat as
"finish up". Before the trainer's handler is in place (the verb's start-up,
imports included) and after it is gone, ``python -m harness train`` exits at once
with the same status (:func:`exit_on_stop_signal`): there is nothing to save.
DataLoader worker processes ignore it (:func:`ignore_in_worker`): the job's
SIGTERM reaches them too, and a worker killed by it would make the DataLoader
raise in the middle of a step. This module imports no torch (the verb installs
its handler first).
"""
from __future__ import annotations

import os
import shutil
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    import torch

    from harness.training.distributed import DistInfo

PREEMPTED_EXIT = 75  # EX_TEMPFAIL (sysexits.h): "temporary failure; the user is invited to retry"
STOP_SIGNAL = signal.SIGTERM


class Preempted(Exception):
    """The run stopped on SIGTERM after saving its state at ``step`` to ``path``."""

    def __init__(self, message: str, step: int, path: Path):
        super().__init__(message)
        self.step, self.path = step, path


class StopRequest:
    """The SIGTERM flag of one run: set by the handler, read at step boundaries.

    ``with StopRequest().installed():`` installs the handler for the body (in the
    main thread only: elsewhere Python cannot, and the run then ignores SIGTERM
    as before) and restores the previous one after.
    """

    def __init__(self):
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        """Whether this process has received the stop signal."""
        return self.signum is not None

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - the signal module's signature
        self.signum = signum

    @contextmanager
    def installed(self) -> Iterator["StopRequest"]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(STOP_SIGNAL, self._handle)
        try:
            yield self
        finally:
            signal.signal(STOP_SIGNAL, previous)

    def agreed(self, dist: DistInfo, device: torch.device) -> bool:
        """Whether any process of the run has received it (a collective with several processes)."""
        from harness.training.distributed import any_process

        return any_process(self.requested, dist, device)

    def stopped(self, run: str, step: int, iterations: int, path: Path,
                note: Callable[[str], None]) -> Preempted:
        """Log the stop and return the :class:`Preempted` to raise (the state of ``step`` is in ``path``)."""
        name = signal.Signals(self.signum or STOP_SIGNAL).name
        message = (f"{run}: {name} received: stopped after step {step}/{iterations} with the state saved "
                   f"to {path}; exit status {PREEMPTED_EXIT}, run the same command again to continue")
        note(message)
        return Preempted(message, step, path)


def settle_partial(out: Path, part: Path, keep: bool) -> None:
    """After ``out`` is written: remove the partial file ``part``, or, with ``keep`` (SIGTERM
    came meanwhile), make it a copy of ``out`` (a hard link where the file system allows)."""
    if not keep:
        part.unlink(missing_ok=True)
        return
    tmp = part.with_name(f".{part.name}.final.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(out, tmp)
    except OSError:
        shutil.copyfile(out, tmp)
    os.replace(tmp, part)


def _exit_at_once(signum, frame) -> None:  # noqa: ARG001 - the signal module's signature
    raise SystemExit(PREEMPTED_EXIT)


def exit_on_stop_signal() -> None:
    """From now on (main thread only) SIGTERM ends the process at once with :data:`PREEMPTED_EXIT`,
    except while a run's :meth:`StopRequest.installed` handler is in place."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(STOP_SIGNAL, _exit_at_once)


def ignore_in_worker(worker_id: int) -> None:  # noqa: ARG001 - DataLoader's worker_init_fn signature
    """``worker_init_fn`` of the training DataLoader: the worker ignores SIGTERM.

    The main process stops it when it closes the loader; without the main
    process it ends by itself (PyTorch's watchdog), and SIGKILL still ends it.
    """
    signal.signal(STOP_SIGNAL, signal.SIG_IGN)
