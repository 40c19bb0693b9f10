"""Arbitrary-scale upsamplers (MetaSR, LIIF, LTE), one registry.

An upsampler model owns its extractor as the submodule ``encoder`` (so that
state-dict keys match the released LIIF/LTE checkpoints) and maps
``(inp, coord, cell, scale)`` to RGB at the query coordinates. Build one with
``create_model(upsampler, extractor, extractor_args=..., upsampler_args=...)``.
"""
from __future__ import annotations

from harness.registry import Registry

UPSAMPLERS = Registry("upsampler")

#: Queries decoded at once by ``upsamplers.base.decode_in_chunks`` unless told
#: otherwise: the default of ``predict``, of evaluation and of ``upscale --chunk``
#: (``evaluation.chunk`` in config/schema.yaml has the same default; a test checks it).
DEFAULT_CHUNK = 30000


#: The modules whose classes register themselves (a missing one is an import error).
MODULES = ("upsamplers.metasr", "upsamplers.liif", "upsamplers.lte")


def _import_all() -> None:
    import importlib

    for mod in MODULES:
        importlib.import_module(mod)


def upsampler_names() -> list[str]:
    _import_all()
    return UPSAMPLERS.names()


def create_model(upsampler: str, extractor: str, extractor_args: dict | None = None,
                 upsampler_args: dict | None = None):
    """Build ``upsampler`` around a freshly built ``extractor``."""
    from extractors import create_extractor

    _import_all()
    encoder = create_extractor(extractor, **(extractor_args or {}))
    return UPSAMPLERS.build(upsampler, encoder=encoder, **(upsampler_args or {}))
