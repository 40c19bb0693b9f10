"""A minimal name -> constructor registry (one per model family), and the parameter count.

Each family (extractors, upsamplers) owns one :class:`Registry`; classes join
it with a decorator where they are defined, and are built by name with keyword
arguments, as in BasicSR's registry and timm's ``create_model``.
:func:`count_parameters` is the one parameter count of the harness (the
models may import this module: it has no dependencies).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator


class Registry:
    def __init__(self, family: str):
        self.family = family
        self._items: Dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(obj: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._items:
                raise KeyError(f"{self.family} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise KeyError(f"unknown {self.family} {name!r}; known: {known}") from None

    def build(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def count_parameters(module: Any, skip: str | None = None) -> int:
    """Number of parameters of ``module`` (an ``nn.Module``), frozen ones included
    (the convention of the reference counts and of the paper's Table 3).

    ``skip``: the name of a submodule whose parameters are left out, e.g.
    ``"encoder"`` for an upsampler's own (decoder) parameters. Shared
    parameters are counted once. Works on the meta device (only shapes are read).
    """
    prefix = None if skip is None else skip.rstrip(".") + "."
    return int(sum(p.numel() for name, p in module.named_parameters()
                   if prefix is None or not name.startswith(prefix)))
