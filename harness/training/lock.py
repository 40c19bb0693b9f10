"""One trainer per run output: an exclusive lock on ``<out>.lock``.

Two trainings of the same run at once (a rerun started while the orphaned jobs
of a killed workflow still train) would append every log row twice and delete
each other's temporary files. :func:`run_lock` holds an exclusive ``flock`` on
``<out>.lock`` for the whole run; a second trainer stops at once with one line
naming the holder's PID and host (written into the file). The kernel drops the
lock when its process ends, however it ends (SIGKILL included), so a lock never
outlives its trainer, and a killed run resumes as before. The file is removed
on a clean exit, while the lock is still held.
"""
from __future__ import annotations

import fcntl
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from harness.errors import HarnessError


def lock_path(out: str | os.PathLike) -> Path:
    """The lock file of the run whose final checkpoint is ``out``."""
    out = Path(out)
    return out.with_name(out.name + ".lock")


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
    except OSError:
        text = []
    if len(text) >= 2 and text[0].isdigit():
        return f"process {text[0]} on host {text[1]}"
    return "another process (its PID is not written yet)"


def _open_locked(path: Path, what: str) -> int:
    """A descriptor of ``path`` holding its exclusive lock (the file, not an unlinked copy of it)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise HarnessError(f"cannot create the lock file {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise HarnessError(f"{what} is being trained by {holder}, which holds {path}; "
                               "wait for it to finish (or end it), then run this again") from None
        except OSError as exc:
            os.close(fd)
            raise HarnessError(f"cannot lock {path}: {exc.strerror}") from None
        # A holder that finished meanwhile removed the file we opened: lock the new one.
        try:
            st, now = os.fstat(fd), os.stat(path)
            if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def run_lock(out: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold the exclusive lock of the run writing ``out`` for the body (``what`` names it in errors)."""
    path = lock_path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(f"cannot create the folder {path.parent}: {exc.strerror}") from None
    fd = _open_locked(path, what)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield path
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.close(fd)
