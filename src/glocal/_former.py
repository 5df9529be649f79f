"""The module paths of glocal 0.1, before the package was split into subpackages, still import.

``import glocal.atlas`` or ``from glocal.references import concept_references`` keep working: each former path is a
light module whose names are looked up, on first use, in the modules that hold them now (importing those lazily, so
matplotlib is still loaded only by drawings). Using one warns once with a :class:`DeprecationWarning` naming the new
path. After ``import glocal`` they are attributes too (``glocal.composites.auto``), as the 0.1 docs used them.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from typing import Any

# former module -> the modules that hold its public names now, searched in order
FORMER: dict[str, tuple[str, ...]] = {
    "atlas": ("glocal.structure.atlas", "glocal.viz"),
    "attribution_graph": (
        "glocal.structure.attribution_graph",
        "glocal.structure.concept_graph",
        "glocal.structure.steps",
    ),
    "bias_rules": ("glocal.lrp.bias_rules",),
    "canonizers": ("glocal.lrp.canonizers",),
    "composites": ("glocal.lrp.composites",),
    "concepts": ("glocal.attribution.concepts",),
    "conditions": ("glocal.attribution.conditions",),
    "conservation": ("glocal.lrp.conservation",),
    "engine": ("glocal.attribution.engine",),
    "explain": ("glocal.attribution.explain",),
    "graph": ("glocal.structure.layer_graph",),
    "layers": ("glocal.attribution.layers",),
    "paths": ("glocal.structure.paths", "glocal.structure.path_consistency"),
    "references": ("glocal.index.references", "glocal.viz"),
    "results": ("glocal.attribution.results",),
    "rules": ("glocal.attribution.rules",),
    "selectors": ("glocal.attribution.selectors",),
    "session": ("glocal.attribution.session",),
    "storage": ("glocal.index.storage",),
    "structure": ("glocal.lrp.model_structure",),
    "visualize": ("glocal.viz", "glocal.viz.concepts", "glocal.viz.graphs"),
}


class FormerModule(types.ModuleType):
    """A former module path: attribute lookups go to the modules that hold the names now."""

    def __init__(self, name: str, homes: tuple[str, ...]) -> None:
        super().__init__(f"glocal.{name}", f"Moved: see {', '.join(homes)}.")
        self._homes = homes
        self._warned = False

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        for home in self._homes:
            try:
                module = importlib.import_module(home)
            except ModuleNotFoundError as error:
                if error.name != home:  # the home exists but needs something missing (matplotlib): say so
                    raise
                continue
            if hasattr(module, attribute):
                if not self._warned:
                    self._warned = True
                    warnings.warn(
                        f"{self.__name__} moved to {home}: import {attribute} from there "
                        f"(the old path keeps working for now).",
                        DeprecationWarning,
                        stacklevel=2,
                    )
                return getattr(module, attribute)
        raise AttributeError(f"module {self.__name__!r} (moved to {', '.join(self._homes)}) has no {attribute!r}")

    def __dir__(self) -> list[str]:
        names: set[str] = set()
        for home in self._homes:
            try:
                names.update(dir(importlib.import_module(home)))
            except ModuleNotFoundError:
                continue
        return sorted(names)


def install() -> None:
    """Register the former paths in ``sys.modules``, so that ``import glocal.atlas`` finds them."""
    for name, homes in FORMER.items():
        sys.modules.setdefault(f"glocal.{name}", FormerModule(name, homes))


def attribute(name: str) -> types.ModuleType:
    """``glocal.<name>`` for a former module (``glocal.__getattr__``; names glocal defines, such as the function
    ``glocal.attribution_graph``, are found before it is asked)."""
    if name in FORMER:
        return sys.modules[f"glocal.{name}"]
    raise AttributeError(f"module 'glocal' has no attribute {name!r}")
