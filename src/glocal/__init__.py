"""glocal: Concept Relevance Propagation for PyTorch -- what a model has learned, and where it uses it."""

from . import bias_rules as bias_rules  # modules the docs name as glocal.<module>.<name>
from . import canonizers as canonizers
from . import composites as composites
from ._version import __version__
from .atlas import ConceptAtlas, centre_square, concept_atlas, fragment
from .attribution_graph import ConceptGraph, attribution_graph
from .concepts import ChannelConcept, Concept, NeuronConcept, RegionConcept, relevance_shares
from .conditions import Condition, PerSample
from .engine import Attributor, Run
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
from .explain import ConceptExplainer, ConceptExplanation
from .graph import LayerGraph, trace_layers
from .index import ConceptIndex, build_index
from .layers import get_layer_names
from .paths import ConceptPath, PathConsistency, concept_path, path_consistency
from .references import Reference, concept_references
from .results import Attribution
from .selectors import CoveringShare, Ids, Selector, TopK

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
