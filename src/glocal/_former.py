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
    "rules": ("glocal.attribution.rules", "glocal.attribution.affine"),
    "selectors": ("glocal.attribution.selectors",),
    "session": ("glocal.attribution.session",),
    "storage": ("glocal.index.storage",),
    "structure": ("glocal.lrp.model_structure",),
    "visualize": ("glocal.viz", "glocal.viz.concepts", "glocal.viz.graphs"),
}


# 0.1 modules whose path is now a subpackage of another idea (glocal.structure held the model inspection for LRP):
# their old names are found through that package's ``__getattr__``
REPLACED = ("structure",)
_warned: set[str] = set()


def moved(former: str, attribute: str) -> Any:
    """``attribute`` of the 0.1 module ``glocal.<former>``, from the module that holds it now (warning once per
    former module with a :class:`DeprecationWarning`); :class:`AttributeError` when none has it."""
    homes = FORMER[former]
    if not attribute.startswith("__"):
        for home in homes:
            module = importlib.import_module(home)
            if hasattr(module, attribute):
                if former not in _warned:
                    _warned.add(former)
                    warnings.warn(
                        f"glocal.{former} moved to {home}: import {attribute} from there "
                        "(the old path keeps working for now).",
                        DeprecationWarning,
                        stacklevel=3,
                    )
                return getattr(module, attribute)
    raise AttributeError(f"module 'glocal.{former}' (moved to {', '.join(homes)}) has no attribute {attribute!r}")


class FormerModule(types.ModuleType):
    """A former module path: attribute lookups go to the modules that hold the names now."""

    def __init__(self, name: str) -> None:
        super().__init__(f"glocal.{name}", f"Moved: see {', '.join(FORMER[name])}.")
        self._former = name

    def __getattr__(self, attribute: str) -> Any:
        return moved(self._former, attribute)

    def __dir__(self) -> list[str]:
        return sorted({name for home in FORMER[self._former] for name in dir(importlib.import_module(home))})


def former_module(module: str) -> str:
    """The 0.1 path of ``module`` where it moved, else ``module``: fingerprints and cache keys name classes by these
    paths, so that indexes and reference caches made before the package was split still match.

    >>> former_module("glocal.lrp.bias_rules"), former_module("glocal.index.references.pictures")
    ('glocal.bias_rules', 'glocal.references')
    >>> former_module("glocal.attribution.run"), former_module("torch.nn.modules.conv")
    ('glocal.attribution.run', 'torch.nn.modules.conv')
    """
    for name, homes in FORMER.items():
        for home in homes:
            if home != "glocal.viz" and (module == home or module.startswith(home + ".")):
                return f"glocal.{name}"
    return module


def install() -> None:
    """Register the former paths in ``sys.modules``, so that ``import glocal.atlas`` finds them."""
    for name in FORMER:
        if name not in REPLACED:
            sys.modules.setdefault(f"glocal.{name}", FormerModule(name))


def attribute(name: str) -> types.ModuleType:
    """``glocal.<name>`` for a former module (``glocal.__getattr__``; names glocal defines, such as the function
    ``glocal.attribution_graph``, are found before it is asked)."""
    if name in FORMER and name not in REPLACED:
        return sys.modules[f"glocal.{name}"]
    raise AttributeError(f"module 'glocal' has no attribute {name!r}")
