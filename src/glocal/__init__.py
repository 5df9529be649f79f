"""glocal: Concept Relevance Propagation for PyTorch -- what a model has learned, and where it uses it.

The names below are imported on first use (PEP 562), so that ``import glocal`` -- and the ``glocal`` command line's
``--help`` -- do not load torch; ``from glocal import Attributor`` works as always.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from . import _former
from ._version import __version__

if TYPE_CHECKING:
    from .attribution.concepts import ChannelConcept, Concept, NeuronConcept, RegionConcept, relevance_shares
    from .attribution.conditions import Condition, PerSample
    from .attribution.engine import Attributor
    from .attribution.explain import ConceptExplainer, ConceptExplanation
    from .attribution.layers import get_layer_names
    from .attribution.results import Attribution
    from .attribution.run import Run
    from .attribution.selectors import CoveringShare, Ids, Selector, TopK
    from .errors import (
        CanonizerWarning,
        ConceptError,
        ConditionError,
        ConservationWarning,
        GlocalError,
        GlocalWarning,
        GradientDisabledError,
        InputError,
        LayerError,
        TargetError,
    )
    from .evaluation.diagnostics import diagnose
    from .index import ConceptIndex, build_index
    from .index.references import Reference, concept_references
    from .structure.atlas import ConceptAtlas, centre_square, concept_atlas, fragment
    from .structure.attribution_graph import attribution_graph
    from .structure.concept_graph import ConceptGraph
    from .structure.layer_graph import LayerGraph, trace_layers
    from .structure.path_consistency import PathConsistency, path_consistency
    from .structure.paths import ConceptPath, concept_path

_LAZY: dict[str, str] = {
    "Attribution": "glocal.attribution.results",
    "Attributor": "glocal.attribution.engine",
    "CanonizerWarning": "glocal.errors",
    "ChannelConcept": "glocal.attribution.concepts",
    "Concept": "glocal.attribution.concepts",
    "ConceptAtlas": "glocal.structure.atlas",
    "ConceptError": "glocal.errors",
    "ConceptExplainer": "glocal.attribution.explain",
    "ConceptExplanation": "glocal.attribution.explain",
    "ConceptGraph": "glocal.structure.concept_graph",
    "ConceptIndex": "glocal.index",
    "ConceptPath": "glocal.structure.paths",
    "Condition": "glocal.attribution.conditions",
    "ConditionError": "glocal.errors",
    "ConservationWarning": "glocal.errors",
    "CoveringShare": "glocal.attribution.selectors",
    "GlocalError": "glocal.errors",
    "GlocalWarning": "glocal.errors",
    "GradientDisabledError": "glocal.errors",
    "Ids": "glocal.attribution.selectors",
    "InputError": "glocal.errors",
    "LayerError": "glocal.errors",
    "LayerGraph": "glocal.structure.layer_graph",
    "NeuronConcept": "glocal.attribution.concepts",
    "PathConsistency": "glocal.structure.path_consistency",
    "PerSample": "glocal.attribution.conditions",
    "Reference": "glocal.index.references",
    "RegionConcept": "glocal.attribution.concepts",
    "Run": "glocal.attribution.run",
    "Selector": "glocal.attribution.selectors",
    "TargetError": "glocal.errors",
    "TopK": "glocal.attribution.selectors",
    "attribution_graph": "glocal.structure.attribution_graph",
    "build_index": "glocal.index",
    "centre_square": "glocal.structure.atlas",
    "concept_atlas": "glocal.structure.atlas",
    "concept_path": "glocal.structure.paths",
    "concept_references": "glocal.index.references",
    "diagnose": "glocal.evaluation.diagnostics",
    "fragment": "glocal.structure.atlas",
    "get_layer_names": "glocal.attribution.layers",
    "path_consistency": "glocal.structure.path_consistency",
    "relevance_shares": "glocal.attribution.concepts",
    "trace_layers": "glocal.structure.layer_graph",
}
"""Public name to the module that defines it."""

__all__ = [
    "Attribution",
    "Attributor",
    "CanonizerWarning",
    "ChannelConcept",
    "Concept",
    "ConceptAtlas",
    "ConceptError",
    "ConceptExplainer",
    "ConceptExplanation",
    "ConceptGraph",
    "ConceptIndex",
    "ConceptPath",
    "Condition",
    "ConditionError",
    "ConservationWarning",
    "CoveringShare",
    "GlocalError",
    "GlocalWarning",
    "GradientDisabledError",
    "Ids",
    "InputError",
    "LayerError",
    "LayerGraph",
    "NeuronConcept",
    "PathConsistency",
    "PerSample",
    "Reference",
    "RegionConcept",
    "Run",
    "Selector",
    "TargetError",
    "TopK",
    "__version__",
    "attribution_graph",
    "build_index",
    "centre_square",
    "concept_atlas",
    "concept_path",
    "concept_references",
    "diagnose",
    "fragment",
    "get_layer_names",
    "path_consistency",
    "relevance_shares",
    "trace_layers",
]

_former.install()  # glocal 0.1's module paths (glocal.atlas, ...) keep working


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    subpackage = not name.startswith("_") and (name not in _former.FORMER or name in _former.REPLACED)
    if subpackage and importlib.util.find_spec(f"glocal.{name}") is not None:
        return importlib.import_module(f"glocal.{name}")  # a subpackage, as when __init__ imported them all
    return _former.attribute(name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
