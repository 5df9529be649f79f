"""glocal: Concept Relevance Propagation for PyTorch -- what a model has learned, and where it uses it."""

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
from .layers import get_layer_names
from .results import Attribution
from .selectors import CoveringShare, Ids, Selector, TopK

__version__ = "0.1.0"

__all__ = [
    "Attribution",
    "Attributor",
    "ChannelConcept",
    "Concept",
    "ConceptError",
    "ConceptExplainer",
    "ConceptExplanation",
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
    "RegionConcept",
    "Run",
    "Selector",
    "TargetError",
    "TopK",
    "__version__",
    "get_layer_names",
    "relevance_shares",
]
