"""Scales and image sizes as the user writes them and as files spell them.

One parser and one spelling for each, used by every verb:

- :func:`parse_scale` (``--scale 3.7``), :func:`parse_scales` (``--scales 2,3,4``)
  and :func:`parse_size` (``--size 768x1020``) check strictly and raise a one-line
  :class:`~harness.errors.HarnessError` that names the option: no empty lists or
  items, only finite numbers, scales above 0 (SR scales at least 1), sizes of
  positive integers.
- :func:`format_scale` is how a scale is written in CSV files and on command
  lines (``2``, ``2.5``, ``3.7``); :func:`scale_label` names a table column
  (``x2``); :func:`scale_number` is the JSON value (``2``, ``2.5``).
"""
from __future__ import annotations

import math
import re
from typing import Optional, Union

from harness.errors import HarnessError

__all__ = ["parse_scale", "parse_scales", "parse_size", "format_scale", "scale_label", "scale_number",
           "SR_SCALE_MIN"]

#: Smallest super-resolution scale: the evaluation and FLOPs verbs enlarge images.
SR_SCALE_MIN = 1.0

_SIZE = re.compile(r"\s*([0-9]+)\s*[xX\u00d7]\s*([0-9]+)\s*")


def _scale_or_reason(text: Union[str, float], minimum: Optional[float]) -> Union[float, str]:
    """The scale ``text`` stands for, or why it is not one (a phrase)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return "not a number"
    if not math.isfinite(value):
        return "not a finite number"
    if value <= 0:
        return "a scale must be > 0"
    if minimum is not None and value < minimum:
        return f"scales must be >= {format_scale(minimum)}"
    return value


def parse_scale(text: Union[str, float], option: str = "--scale",
                minimum: Optional[float] = None) -> float:
    """One scale: a finite number > 0 (and >= ``minimum`` when given)."""
    value = _scale_or_reason(text, minimum)
    if isinstance(value, str):
        raise HarnessError(f"bad {option} {text!r}: {value}")
    return value


def parse_scales(text: str, option: str = "--scales", minimum: float = SR_SCALE_MIN) -> list[float]:
    """Comma-separated scales (each as :func:`parse_scale`), duplicates dropped, order kept.

    ``"2,3,4"`` -> ``[2.0, 3.0, 4.0]``; empty text or an empty item is an error.
    """
    if text is None or not str(text).strip():
        raise HarnessError(f"bad {option}: empty; expected numbers separated by commas, e.g. 2,3,4")
    scales = []
    for item in (t.strip() for t in str(text).split(",")):
        value = _scale_or_reason(item, minimum) if item else "empty item"
        if isinstance(value, str):
            where = f"{item!r}: " if item else ""
            raise HarnessError(f"bad {option} {text!r}: {where}{value}; "
                               "expected numbers separated by commas, e.g. 2,3,4")
        scales.append(value)
    return list(dict.fromkeys(scales))


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """``"HEIGHTxWIDTH"`` (``x``, ``X`` or ``\u00d7``) -> ``(height, width)``, both positive integers."""
    m = _SIZE.fullmatch(text) if isinstance(text, str) else None
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise HarnessError(f"bad {option} {text!r}: expected HEIGHTxWIDTH with positive integers, "
                           "e.g. 768x1020")
    return int(m.group(1)), int(m.group(2))


def format_scale(scale: float) -> str:
    """A scale as files and command lines write it: ``2``, ``2.5``, ``3.7`` (10 significant digits)."""
    return format(float(scale), ".10g")


def scale_label(scale: float) -> str:
    """The table column of a scale: ``x2``, ``x2.5``."""
    return f"x{format_scale(scale)}"


def scale_number(scale: Optional[float]) -> Union[int, float, None]:
    """A scale as a JSON number: an int when whole (``2``), else the float (``2.5``); None stays None."""
    if scale is None:
        return None
    s = float(scale)
    return int(s) if s.is_integer() else s
