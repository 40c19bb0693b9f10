"""Checkpoints: our resumable format, loading any checkpoint, and fitting weights into a model.

Our format (``FORMAT = "tadt-harness/1"``) is one dict written by ``torch.save``
through :func:`harness.io.atomic_path` (a killed job leaves the previous file,
never a half-written one)::

    {"format": "tadt-harness/1",
     "model": {"upsampler": str, "extractor": str,
               "extractor_args": dict, "upsampler_args": dict},
     "state_dict": {...},          # keys of the model, no "module." (DDP) prefix
     "step": int,                  # optimiser steps done
     "optimizer": dict | None,     # optimizer.state_dict()
     "scheduler": dict | None,     # scheduler.state_dict()
     "rng": dict | None,           # RNG states (harness.training.rng.rng_state per rank)
     "run": dict | None}           # the resolved run spec, for provenance

Everything in it is tensors and plain Python data, so it loads with
``torch.load(weights_only=True)``, which never runs code from the file;
:func:`save_checkpoint` refuses (``TypeError``) anything that would not load
that way, instead of writing a file that cannot be read back.

Released LIIF/LTE files (``{"model": {"name", "args", "sd"}, ...}``) load too:
:mod:`harness.release_format` turns their spec into ours (and loads the bodies
of released NLSN/CAT networks into our extractors).

Every failure a user can cause -- missing, truncated or corrupt file, a file
that would need unsafe unpickling, an unknown model name, a spec or weights of
the wrong types, weights that do not fit the model, a model too large for the
memory -- is a :class:`harness.errors.HarnessError` naming the file, raised
before the model is allocated: :func:`load_model` checks the spec's types,
builds the model on the meta device, checks the weights against it and the
memory it needs (:mod:`harness.modelbuild`), and only then builds it.
:func:`load_weights` is the one check that weights fit a model (:func:`check_fit`
without copying), used by :func:`load_model`, training (init and resume) and the
Baseline-to-TADT import.
"""
from __future__ import annotations

import pickle
import re
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from harness.errors import HarnessError
from harness.io import atomic_path
from harness.modelbuild import SPEC_KEYS, build_model_bounded, check_spec

FORMAT = "tadt-harness/1"
RELEASE_FORMAT = "liif-release"

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP / DataParallel, torch.compile
_MAX_LISTED = 5


# -- state dicts --------------------------------------------------------------
def strip_wrapper_prefix(state_dict: Mapping[str, Any]) -> "OrderedDict[str, Any]":
    """Drop DDP's ``module.`` (and torch.compile's ``_orig_mod.``) from every key."""
    out: OrderedDict[str, Any] = OrderedDict()
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def model_state_dict(model: torch.nn.Module) -> "OrderedDict[str, torch.Tensor]":
    return strip_wrapper_prefix(model.state_dict())


# -- saving -------------------------------------------------------------------


def _plain(obj: Any, where: str) -> Any:
    """``obj`` as tensors and plain data that ``weights_only`` loading accepts."""
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if obj is None or isinstance(obj, torch.dtype):
        return obj
    for kind in (bool, int, float, str):  # subclasses (enums, ...) would need their class
        if isinstance(obj, kind):
            return kind(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.device):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        items = {_plain(k, f"{where} key"): _plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
        # OrderedDict and Counter (MultiStepLR's milestones) load as they are.
        return type(obj)(items) if type(obj) in (OrderedDict, Counter) else items
    if isinstance(obj, (list, tuple)):
        seq = [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return tuple(seq) if isinstance(obj, tuple) else seq
    raise TypeError(f"cannot store a {type(obj).__name__} at {where} in a checkpoint "
                    "(only tensors and plain data load with weights_only=True)")


def _check_spec(spec: Mapping[str, Any]) -> dict:
    missing = [k for k in SPEC_KEYS if k not in spec]
    extra = [k for k in spec if k not in SPEC_KEYS]
    if missing or extra:
        raise ValueError(f"model spec needs exactly {SPEC_KEYS}; missing {missing}, unexpected {extra}")
    return {"upsampler": str(spec["upsampler"]), "extractor": str(spec["extractor"]),
            "extractor_args": _plain(dict(spec["extractor_args"] or {}), "extractor_args"),
            "upsampler_args": _plain(dict(spec["upsampler_args"] or {}), "upsampler_args")}


def _state_of(obj: Any) -> Any:
    if obj is None or isinstance(obj, Mapping):
        return obj
    return obj.state_dict()


def save_checkpoint(path, model: torch.nn.Module, spec: Mapping[str, Any], step: int,
                    optimizer=None, scheduler=None, rng: Mapping[str, Any] | None = None,
                    run: Mapping[str, Any] | None = None) -> Path:
    """Write our format to ``path`` atomically; returns the path.

    ``optimizer``/``scheduler`` may be the objects or their state dicts;
    ``model`` may be wrapped in DDP (its ``module.`` prefix is stripped).
    """
    payload = {
        "format": FORMAT,
        "model": _check_spec(spec),
        "state_dict": model_state_dict(model),
        "step": int(step),
        "optimizer": _plain(_state_of(optimizer), "optimizer"),
        "scheduler": _plain(_state_of(scheduler), "scheduler"),
        "rng": _plain(rng, "rng"),
        "run": _plain(run, "run"),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


# -- loading ------------------------------------------------------------------
def load_checkpoint(path) -> dict:
    """The checkpoint dict at ``path``, read with ``weights_only=True`` onto the CPU."""
    path = Path(path)
    if not path.exists():
        raise HarnessError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise HarnessError(f"checkpoint {path} is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"GLOBAL\s+([\w.]+)", text)
        if found:
            raise HarnessError(
                f"checkpoint {path} was refused: loading it would need {found.group(1)}, "
                "not just tensors and plain data, and unpickling that can run arbitrary code "
                "(nothing from the file was executed); only use files from sources you trust, "
                "re-saved as plain state dicts") from None
        raise HarnessError(f"checkpoint {path} cannot be read: truncated, corrupt or not a "
                           f"torch file ({_reason(exc)})") from None
    except Exception as exc:  # zip/EOF/OS errors of a damaged file
        raise HarnessError(f"checkpoint {path} cannot be read: truncated, corrupt or not a "
                           f"torch file ({_reason(exc)})") from None
    if not isinstance(obj, dict):
        raise HarnessError(f"checkpoint {path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    inner = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if inner:
        text = inner.group(1)
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line[:200]}" if line else type(exc).__name__


def load_model(path, map_location="cpu", expect: Callable[[dict], None] | None = None):
    """Build and load the model saved at ``path`` (our format or a LIIF/LTE release).

    Returns ``(model, meta)``; the model is on ``map_location`` in eval mode.
    ``meta`` holds ``format``, ``path``, ``spec`` (our four-key model spec) and,
    for our format, ``step``/``optimizer``/``scheduler``/``rng``/``run``; for a
    release ``epoch``, ``release`` (its name and args) and ``dropped_encoder_args``
    (:mod:`harness.release_format`). ``expect(meta)``, if given, is called once the
    file is read and before anything is built: it raises to refuse the file.
    """
    from harness.release_format import is_release, read_release

    path = Path(path)
    source = f"checkpoint {path}"
    ck = load_checkpoint(path)
    if ck.get("format") == FORMAT:
        spec, state_dict = check_spec(ck.get("model"), source), ck.get("state_dict")
        meta = {k: ck.get(k) for k in ("step", "optimizer", "scheduler", "rng", "run")}
        meta.update(format=FORMAT, path=str(path), spec=spec)
    elif is_release(ck):
        spec, state_dict, meta = read_release(ck, path)
    else:
        raise HarnessError(f"checkpoint {path} is neither a {FORMAT} file nor a LIIF/LTE "
                           "release ({'model': {'name', 'args', 'sd'}}); top-level keys: "
                           f"{sorted(map(str, ck))[:_MAX_LISTED]}")
    if expect is not None:
        expect(meta)
    target = (f"{spec['upsampler']} on {spec['extractor']} (extractor_args "
              f"{spec['extractor_args']}, upsampler_args {spec['upsampler_args']})")
    state_dict = check_state_dict(state_dict, source)
    model = build_model_bounded(spec, source, devices=("cpu", map_location),
                                check=lambda probe: check_fit(probe, state_dict, source, target))
    load_weights(model, state_dict, source, target)
    return model.to(map_location).eval(), meta


def _listed(items: list[str]) -> str:
    more = f", ... {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


# -- fitting weights into a model ---------------------------------------------
def check_state_dict(state_dict: Any, source: str) -> "OrderedDict[str, torch.Tensor]":
    """``state_dict`` if it maps names (strings) to tensors, DDP's ``module.`` stripped; else one line."""
    if not isinstance(state_dict, Mapping):
        raise HarnessError(f"{source}: its weights are a {type(state_dict).__name__}, not a "
                           "mapping of names to tensors")
    bad_keys = [repr(k) for k in state_dict if not isinstance(k, str)]
    bad_values = [f"{k} ({type(v).__name__})" for k, v in state_dict.items()
                  if isinstance(k, str) and not isinstance(v, torch.Tensor)]
    if bad_keys or bad_values:
        what = [f"{len(bad_keys)} keys that are not strings ({_listed(bad_keys)})"] if bad_keys else []
        what += [f"{len(bad_values)} values that are not tensors ({_listed(bad_values)})"] if bad_values else []
        raise HarnessError(f"{source}: its weights hold " + "; ".join(what))
    return strip_wrapper_prefix(state_dict)


def check_fit(model: torch.nn.Module, state_dict: Mapping[str, Any], source: str,
              target: str | None = None, may_lack: Sequence[str] = ()) -> list[str]:
    """Raise :func:`load_weights`'s one-line error unless ``state_dict`` fits ``model``.

    Nothing is copied (``model`` may live on the meta device); returns the
    model's keys that ``state_dict`` lacks under ``may_lack``.
    """
    state_dict = check_state_dict(state_dict, source)
    own = model.state_dict()
    absent = [k for k in own if k not in state_dict]
    kept = [k for k in absent if k.startswith(tuple(may_lack))]
    missing = [k for k in absent if not k.startswith(tuple(may_lack))]
    unexpected = [k for k in state_dict if k not in own]
    reshaped = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
                for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or reshaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_listed(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_listed(unexpected)})")
        if reshaped:
            parts.append(f"{len(reshaped)} of another shape (file vs model: {_listed(reshaped)})")
        raise HarnessError(f"{source} does not fit {target or type(model).__name__}: "
                           + "; ".join(parts))
    return kept


def load_weights(model: torch.nn.Module, state_dict: Mapping[str, Any], source: str,
                 target: str | None = None, may_lack: Sequence[str] = ()) -> tuple[int, int]:
    """Copy ``state_dict`` into ``model`` once it is known to fit; returns ``(copied, kept)``.

    Fits means: ``state_dict`` maps names to tensors, every tensor of it has a
    tensor of the same name and shape in the model, and every tensor of the
    model is in ``state_dict`` unless its name starts with one of ``may_lack``
    (those keep their values and are counted in ``kept``). DDP's ``module.`` and
    torch.compile's ``_orig_mod.`` prefixes are dropped first. Otherwise nothing
    is copied and a one-line :class:`HarnessError` says ``"<source> does not fit
    <target>: "`` followed by the missing keys, the unexpected keys and those of
    another shape, counted and listed (``target`` defaults to the model's class
    name); see :func:`check_fit`.
    """
    kept = check_fit(model, state_dict, source, target, may_lack)
    state_dict = strip_wrapper_prefix(state_dict)
    model.load_state_dict(state_dict, strict=not kept)
    return len(state_dict), len(kept)


def load_baseline_weights(model: torch.nn.Module, state_dict: Mapping[str, Any],
                          source: str = "Baseline state dict",
                          target: str | None = None) -> tuple[int, int]:
    """Load a trained Baseline into a TADT: the extractor, or an upsampler on it (``model.encoder``).

    TADT's backbone has exactly the Baseline's keys; the keys under its
    ``added_key_prefixes`` (the TARC) keep their initialisation. Loading into
    the extractor also takes an upsampler's state dict (all keys ``encoder.*``).
    Any other misfit is :func:`load_weights`'s error. Returns ``(copied, kept)``.
    """
    encoder = getattr(model, "encoder", model)
    prefix = "encoder." if encoder is not model else ""
    if not prefix and state_dict and all(k.startswith("encoder.") for k in state_dict):
        state_dict = {k[len("encoder."):]: v for k, v in state_dict.items()}
    added = tuple(prefix + p for p in getattr(encoder, "added_key_prefixes", ()))
    return load_weights(model, state_dict, source, target, may_lack=added)


def weights_of(ck: Mapping[str, Any], path) -> Mapping[str, Any]:
    """The state dict of a loaded checkpoint: ours (``state_dict``) or a LIIF/LTE release's."""
    if isinstance(ck.get("state_dict"), Mapping):
        return ck["state_dict"]
    model = ck.get("model")
    if isinstance(model, Mapping) and isinstance(model.get("sd"), Mapping):
        return model["sd"]
    raise HarnessError(f"checkpoint {path} holds no model weights")
