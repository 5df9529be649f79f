"""glocal: Concept Relevance Propagation for PyTorch -- what a model has learned, and where it uses it."""

import types

from . import _former
from ._version import __version__
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
from .index import ConceptIndex, build_index
from .index.references import Reference, concept_references
from .structure.atlas import ConceptAtlas, centre_square, concept_atlas, fragment
from .structure.attribution_graph import attribution_graph
from .structure.concept_graph import ConceptGraph
from .structure.layer_graph import LayerGraph, trace_layers
from .structure.path_consistency import PathConsistency, path_consistency
from .structure.paths import ConceptPath, concept_path

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
    "fragment",
    "get_layer_names",
    "path_consistency",
    "relevance_shares",
    "trace_layers",
]

_former.install()  # glocal 0.1's module paths (glocal.atlas, ...) keep working


def __getattr__(name: str) -> types.ModuleType:
    return _former.attribute(name)
