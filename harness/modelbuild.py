"""Building a model whose arguments came from outside: a checkpoint, a config, the command line.

Such arguments may be of the wrong type or absurd (``n_feats: 30000`` asks for
tens of gigabytes), and a constructor given them either raises whatever its
layers raise or allocates until the machine gives up. :func:`check_spec` checks
the types of a model spec; :func:`build_bounded` first builds the model on
PyTorch's meta device (shapes only: no memory, no initialisation, the random
streams untouched), refuses a constructor error, an empty tensor or a model
larger than the memory available, lets the caller check the shapes (a state
dict that must fit), and only then builds it for real. Every refusal is one
:class:`~harness.errors.HarnessError` line, raised before anything large exists.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from harness.errors import HarnessError

SPEC_KEYS = ("upsampler", "extractor", "extractor_args", "upsampler_args")
_PLAIN = (bool, int, float, str, type(None))


def _check_value(value: Any, where: str, source: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise HarnessError(f"{source}: {where} is {value}, not a finite number")
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_value(v, f"{where}[{i}]", source)
        return
    if isinstance(value, Mapping):
        check_args(value, where, source)
        return
    raise HarnessError(f"{source}: {where} is a {type(value).__name__}, not a number, string, "
                       "list or mapping")


def check_args(args: Any, where: str, source: str) -> dict:
    """``args`` (None: none) as a dict of argument names to plain values; one error line otherwise."""
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        raise HarnessError(f"{source}: {where} is a {type(args).__name__}, not a mapping of "
                           "argument names to values")
    for key, value in args.items():
        if not isinstance(key, str):
            raise HarnessError(f"{source}: {where} has a key {key!r} that is not a string")
        _check_value(value, f"{where}.{key}", source)
    return dict(args)


def check_spec(spec: Any, source: str) -> dict:
    """``spec`` as ``{"upsampler", "extractor", "extractor_args", "upsampler_args"}``, types checked.

    Names must be strings, the argument sets mappings (None means none) from
    names to finite numbers, booleans, strings, None, or lists and mappings of
    those. ``source`` starts the error line (e.g. ``"checkpoint x.pth"``).
    """
    if not isinstance(spec, Mapping) or any(k not in spec for k in SPEC_KEYS):
        raise HarnessError(f"{source}: no model spec with the keys {', '.join(SPEC_KEYS)}")
    for key in ("upsampler", "extractor"):
        if not isinstance(spec[key], str):
            raise HarnessError(f"{source}: the {key} name is a {type(spec[key]).__name__} "
                               f"({spec[key]!r:.60}), not a string")
    return {"upsampler": spec["upsampler"], "extractor": spec["extractor"],
            "extractor_args": check_args(spec["extractor_args"], "extractor_args", source),
            "upsampler_args": check_args(spec["upsampler_args"], "upsampler_args", source)}


# -- memory --------------------------------------------------------------------
def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available() -> int | None:
    """What a cgroup (v2) memory limit leaves this process, if there is one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None


def available_bytes(device: str | torch.device = "cpu") -> int | None:
    """Memory free for new tensors on ``device`` (None if unknown): free GPU memory, or
    the system's available memory, less where a cgroup limit leaves less."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    known = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return max(min(known), 0) if known else None


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of the parameters and buffers of ``model`` (works on the meta device)."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def _gb(n: float) -> str:
    return f"{n / 1e12:.3g} TB" if n >= 1e12 else f"{n / 1e9:.3g} GB"


def check_memory(model: nn.Module, what: str, copies: int = 1,
                 devices: tuple = ("cpu",)) -> None:
    """Refuse (one line) when ``copies`` times the tensors of ``model`` exceed the memory of a device."""
    need = tensor_bytes(model) * copies
    for device in dict.fromkeys(str(torch.device(d)) for d in devices):
        free = available_bytes(device)
        if free is not None and need > free:
            n = sum(p.numel() for p in model.parameters())
            times = f", {copies} copies of its tensors" if copies > 1 else ""
            raise HarnessError(f"{what}: the model has {n:,} parameters ({_gb(tensor_bytes(model))}); "
                               f"building it needs about {_gb(need)}{times}, more than the "
                               f"{_gb(free)} of memory available on {device}")


# -- building -------------------------------------------------------------------
def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:  # the registries' "unknown <family> ...; known: ..."
        return str(exc.args[0])
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def on_meta(make: Callable[[], nn.Module]) -> nn.Module:
    """``make()`` on the meta device: shapes without memory; the CPU random stream is left as it
    was, and warnings wait for the real build."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make()


def build_bounded(make: Callable[[], nn.Module], what: str, copies: int = 1,
                  devices: tuple = ("cpu",),
                  check: Callable[[nn.Module], None] | None = None) -> nn.Module:
    """``make()``, once its shapes are known to be sound and to fit in memory.

    ``make`` (no arguments) runs first on the meta device; any error it raises
    there, an empty parameter (a width of 0), ``check(meta_model)`` (e.g. a
    state dict's fit) or :func:`check_memory` (``copies`` times its tensors on
    each of ``devices``) stop it with a :class:`HarnessError` that starts with
    ``what``. Then ``make()`` runs for real and its module is returned.
    """
    try:
        probe = on_meta(make)
    except HarnessError:
        raise
    except Exception as exc:  # anything a constructor raises for arguments it cannot take
        raise HarnessError(f"{what}: cannot build it: {_reason(exc)}") from None
    for name, param in probe.named_parameters():
        if param.numel() == 0:
            raise HarnessError(f"{what}: cannot build it: parameter {name} would have shape "
                               f"{tuple(param.shape)} (a width or count of 0?)")
    if check is not None:
        check(probe)
    check_memory(probe, what, copies, devices)
    del probe
    try:
        return make()
    except HarnessError:
        raise
    except Exception as exc:
        raise HarnessError(f"{what}: cannot build it: {_reason(exc)}") from None


def build_model_bounded(spec: Mapping[str, Any], what: str, copies: int = 1,
                        devices: tuple = ("cpu",),
                        check: Callable[[nn.Module], None] | None = None) -> nn.Module:
    """The upsampler-on-extractor model of a checked ``spec`` (:func:`check_spec`), via :func:`build_bounded`."""
    from upsamplers import create_model

    return build_bounded(lambda: create_model(spec["upsampler"], spec["extractor"],
                                              extractor_args=dict(spec["extractor_args"] or {}),
                                              upsampler_args=dict(spec["upsampler_args"] or {})),
                         what, copies, devices, check)
