"""Released weights of the reference repositories, read into our models.

Released LIIF/LTE files (github yinboc/liif, jaewon-lee-b/lte) are
``{"model": {"name", "args", "sd"}, "optimizer": ..., "epoch": int}`` with
``args`` nesting ``encoder_spec`` and ``imnet_spec`` (each ``{"name", "args"}``).
:func:`read_release` turns one into our model spec (``harness.checkpoint.load_model``
calls it): names ``liif``/``lte``/``metasr`` and encoders
``edsr-baseline``/``rdn``/``rcan``/``swinir``/``nlsa``/``cat-r-2`` (with
``no_upsampling: true``) map to ours; ``imnet_spec.args.hidden_list`` becomes
``hidden_list``, LTE's ``hidden_dim`` and LIIF's
``local_ensemble``/``feat_unfold``/``cell_decode`` pass through; encoder
arguments our extractor does not take (``scale``, ``rgb_range``, ``upscale``,
...) are dropped and listed in ``meta``. Weights are then loaded strictly.

Released SR networks whose body is one of our extractors (NLSN's
``model_x2.pt``, CAT's ``model_CAT_R_2_sr_x2.pth``) load into that extractor
with :func:`load_release_body`.
"""
from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import Any, Mapping

import torch

from harness.errors import HarnessError
from harness.modelbuild import check_args

RELEASE_UPSAMPLERS = {"liif": "liif", "lte": "lte", "metasr": "metasr"}
RELEASE_EXTRACTORS = {"edsr-baseline": "edsr-baseline", "rdn": "rdn", "rcan": "rcan",
                      "swinir": "swinir", "nlsa": "nlsa", "cat-r-2": "cat-r-2"}
# Released SR networks whose body is one of our extractors (load_release_body):
# extractor -> (key prefixes of the release's tail, dropped and listed; key
# prefixes of our layers the release lacks, kept at their initialisation).
RELEASE_BODIES = {"nlsa": (("tail.",), ("proj.",)),                      # NLSN model_x*.pt
                  "cat-r-2": (("upsample.", "conv_last."), ())}          # CAT model_CAT_R_2_sr_x*.pth


def is_release(ck: Mapping[str, Any]) -> bool:
    """Whether a loaded checkpoint dict has the LIIF/LTE release layout."""
    return isinstance(ck.get("model"), dict) and "sd" in ck["model"]


def read_release(ck: Mapping[str, Any], path) -> tuple[dict, Any, dict]:
    """``(spec, state_dict, meta)`` of a loaded release (see :func:`harness.checkpoint.load_model`)."""
    from harness.checkpoint import RELEASE_FORMAT

    spec, dropped = spec_from_release(ck["model"], path)
    meta = {"format": RELEASE_FORMAT, "path": str(path), "spec": spec,
            "epoch": ck.get("epoch"), "dropped_encoder_args": dropped,
            "release": {"name": ck["model"].get("name"), "args": ck["model"].get("args")},
            "step": None, "optimizer": None, "scheduler": None, "rng": None, "run": None}
    return spec, ck["model"]["sd"], meta


def spec_from_release(model_spec: Mapping[str, Any], path) -> tuple[dict, list[str]]:
    """Our model spec for a release's ``{'name', 'args'}``, and the encoder args dropped."""
    source = f"checkpoint {path}"
    name = model_spec.get("name")
    if not isinstance(name, str) or name not in RELEASE_UPSAMPLERS:
        raise HarnessError(f"{source}: unknown model {name!r:.60} "
                           f"(known: {', '.join(RELEASE_UPSAMPLERS)})")
    args = check_args(model_spec.get("args"), "model.args", source)
    enc = args.pop("encoder_spec", None)
    if not isinstance(enc, Mapping) or "name" not in enc:
        raise HarnessError(f"{source}: model {name!r} has no encoder_spec")
    extractor = RELEASE_EXTRACTORS.get(enc["name"]) if isinstance(enc["name"], str) else None
    if extractor is None:
        raise HarnessError(f"{source}: unknown encoder {enc['name']!r:.60} "
                           f"(known: {', '.join(RELEASE_EXTRACTORS)})")
    extractor_args, dropped = _release_encoder_args(
        extractor, check_args(enc.get("args"), "encoder_spec.args", source), path)

    upsampler_args: dict[str, Any] = {}
    imnet = args.pop("imnet_spec", None)
    if imnet is not None:
        imnet_args = (check_args(imnet.get("args"), "imnet_spec.args", source)
                      if isinstance(imnet, Mapping) else {})
        if not isinstance(imnet, Mapping) or imnet.get("name") != "mlp" \
                or "hidden_list" not in imnet_args:
            raise HarnessError(f"checkpoint {path}: imnet_spec {imnet!r} is not an 'mlp' with "
                               "a hidden_list")
        if name != "metasr" and imnet_args.get("out_dim", 3) != 3:
            raise HarnessError(f"checkpoint {path}: imnet out_dim {imnet_args['out_dim']} is not 3")
        hidden = imnet_args["hidden_list"]
        if not isinstance(hidden, (list, tuple)) or not all(type(v) is int and v > 0 for v in hidden):
            raise HarnessError(f"{source}: imnet_spec hidden_list {hidden!r:.80} is not a list of "
                               "positive integers")
        upsampler_args["hidden_list"] = list(hidden)
    elif name != "metasr":  # MetaSR builds its own default MLP; LIIF/LTE need one
        raise HarnessError(f"checkpoint {path}: {name} without an imnet_spec is not supported")
    allowed = {"liif": ("local_ensemble", "feat_unfold", "cell_decode"),
               "lte": ("hidden_dim",), "metasr": ()}[name]
    for key in allowed:
        if key in args:
            upsampler_args[key] = args.pop(key)
    if args:
        raise HarnessError(f"checkpoint {path}: unsupported {name} arguments {sorted(args)}")
    spec = {"upsampler": RELEASE_UPSAMPLERS[name], "extractor": extractor,
            "extractor_args": extractor_args, "upsampler_args": upsampler_args}
    return spec, dropped


def _release_encoder_args(extractor: str, args: dict, path) -> tuple[dict, list[str]]:
    from extractors import EXTRACTORS, extractor_names

    if not args.pop("no_upsampling", False):
        raise HarnessError(f"checkpoint {path}: encoder {extractor} keeps its upsampling tail "
                           "(no_upsampling is not true); only LIIF/LTE-style feature "
                           "extractors are supported")
    if extractor not in extractor_names():
        raise HarnessError(f"checkpoint {path}: extractor {extractor!r} is not available here")
    params = inspect.signature(EXTRACTORS.get(extractor)).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kept = {k: v for k, v in args.items() if takes_any or k in params}
    return kept, sorted(k for k in args if k not in kept)


# -- released SR networks (NLSN, CAT) ----------------------------------------
def load_release_body(extractor: torch.nn.Module, name: str, path) -> dict:
    """Load the body of a released SR network into ``extractor`` (registry ``name``).

    The file is a plain state dict (NLSN's ``model_x2.pt``) or BasicSR's
    ``{"params": ...}`` / ``{"params_ema": ...}`` (CAT). Keys of the tail
    (``RELEASE_BODIES``) are dropped; every other key must fit ``extractor``
    exactly, and every key of ``extractor`` must be in the file except its own
    layers that the release lacks (NLSA's ``proj``), which keep their values.
    Returns ``{"dropped": [...], "not_in_release": [...]}``.
    """
    if name not in RELEASE_BODIES:
        raise HarnessError(f"no released SR network maps to extractor {name!r} "
                           f"(known: {', '.join(RELEASE_BODIES)})")
    from harness.checkpoint import load_checkpoint, load_weights, strip_wrapper_prefix

    tail, extra = RELEASE_BODIES[name]
    ck = load_checkpoint(path)
    sd = next((ck[k] for k in ("params_ema", "params") if isinstance(ck.get(k), Mapping)), ck)
    sd = strip_wrapper_prefix(sd)
    body = OrderedDict((k, v) for k, v in sd.items() if not k.startswith(tail))
    load_weights(extractor, body, f"checkpoint {path}", f"the {name} extractor's body", may_lack=extra)
    return {"dropped": [k for k in sd if k.startswith(tail)],
            "not_in_release": [k for k in extractor.state_dict() if k.startswith(extra) and k not in body]}
