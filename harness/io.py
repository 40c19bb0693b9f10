"""File output: atomic writes (a killed job never leaves a file that looks complete) and
the check, made before any work starts, that an output path can be written at all.

Permissions: a file written through :func:`atomic_path` gets the mode of the file it
replaces, or, for a new file, ``0666`` less the umask -- what ``open(path, "w")``
would give -- not the ``0600`` of the temporary file ``mkstemp`` makes.
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from harness.errors import HarnessError

__all__ = ["atomic_path", "atomic_write_text", "check_writable", "current_umask"]


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)      # elsewhere: set and restore (not thread-safe, once per write)
    os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    """The permission bits ``path`` should have once replaced: its own if it exists, else
    ``0666 & ~umask``."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    The renamed file keeps the replaced file's mode (else ``0666 & ~umask``). Failing to
    create the folder or the temporary file, or to rename it, is a one-line
    ``HarnessError`` naming ``path`` (callers should have run :func:`check_writable`
    before their work; this is the safety net).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise HarnessError(f"cannot write {path}: {_reason(exc)}") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            os.chmod(tmp_path, _mode_for(path))
            os.replace(tmp_path, path)
        except OSError as exc:
            raise HarnessError(f"cannot write {path}: {_reason(exc)}") from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def check_writable(path: str | os.PathLike, what: str, *, directory: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written; return it as a ``Path``.

    ``what`` names the output in the error (``"output image"``, ``"--log"``). A file
    output must not be a directory; a ``directory`` output must not be a file; no
    existing parent may be a file; and the nearest existing folder must accept a new
    file, which is tried (a temporary file, removed at once: permission bits alone
    say nothing for root, read-only mounts or ``/proc``). Folders that do not exist
    yet are not created here. Every failure is one ``HarnessError`` line.
    """
    p = Path(path)
    if str(path) == "":
        raise HarnessError(f"{what}: empty path")
    if p.is_dir() and not directory:
        raise HarnessError(f"cannot write {what} {p}: it is a directory")
    if p.exists() and directory and not p.is_dir():
        raise HarnessError(f"cannot use {p} as {what}: it is a file, not a folder")
    folder = p if directory and p.is_dir() else p.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise HarnessError(f"cannot write {what} {p}: {folder} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
    except OSError as exc:
        raise HarnessError(f"cannot write {what} {p}: folder {folder} is not writable "
                           f"({_reason(exc)})") from exc
    os.close(fd)
    os.unlink(probe)
    return p
