"""Feature extractors (encoders) for arbitrary-scale SR, one registry.

Every extractor is a plain ``nn.Module`` that maps a normalised LR image
``(B, 3, H, W)`` (values ``(x - 0.5) / 0.5``) to features ``(B, out_dim, H, W)``
for any H x W, and accepts an optional ``scale`` argument (a float or a ``(B,)``
tensor) that scale-agnostic extractors ignore. Build one with
``create_extractor(name, **kwargs)``.
"""
from __future__ import annotations

from harness.registry import Registry

EXTRACTORS = Registry("extractor")


def create_extractor(name: str, **kwargs):
    _import_all()
    return EXTRACTORS.build(name, **kwargs)


def extractor_names() -> list[str]:
    _import_all()
    return EXTRACTORS.names()


#: The modules whose classes register themselves (a missing one is an import error).
MODULES = ("extractors.edsr", "extractors.rdn", "extractors.rcan", "extractors.swinir", "extractors.nlsa",
           "extractors.cat", "tadt.model")


def _import_all() -> None:
    # Importing the modules fills the registry through their decorators.
    import importlib

    for mod in MODULES:
        importlib.import_module(mod)
