"""The one user-facing error type of the harness.

Raised anywhere a user's input (a path, a config value, a checkpoint) is wrong;
``python -m harness`` prints it as one line (``error: ...``) and exits with
status 2, without a traceback. It has no dependencies, so models, data and
protocol code can raise it without importing the command line.
"""
from __future__ import annotations


class HarnessError(Exception):
    """A user-facing error: printed as one line, exit status 2."""
