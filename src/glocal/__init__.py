"""glocal: Concept Relevance Propagation for PyTorch -- what a model has learned, and where it uses it."""

from ._version import __version__
from .concepts import ChannelConcept, Concept, NeuronConcept, RegionConcept, relevance_shares
from .conditions import Condition, PerSample
from .engine import Attributor, Run
from .errors import (
    ConceptError,
    ConditionError,
    GlocalError,
    GlocalWarning,
    GradientDisabledError,
    InputError,
    LayerError,
    TargetError,
)
from .explain import ConceptExplainer, ConceptExplanation
from .index import ConceptIndex, build_index
from .layers import get_layer_names
from .references import Reference, concept_references
from .results import Attribution
from .selectors import CoveringShare, Ids, Selector, TopK

__all__ = [
    "Attribution",
    "Attributor",
    "ChannelConcept",
    "Concept",
    "ConceptError",
    "ConceptExplainer",
    "ConceptExplanation",
    "ConceptIndex",
    "Condition",
    "ConditionError",
    "CoveringShare",
    "GlocalError",
    "GlocalWarning",
    "GradientDisabledError",
    "Ids",
    "InputError",
    "LayerError",
    "NeuronConcept",
    "PerSample",
    "Reference",
    "RegionConcept",
    "Run",
    "Selector",
    "TargetError",
    "TopK",
    "__version__",
    "build_index",
    "concept_references",
    "get_layer_names",
    "relevance_shares",
]
