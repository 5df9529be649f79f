"""Dataset-wide concept index: Relevance and Activation Maximization, class statistics, references."""

from .build import ConceptIndex, build_index
from .references import Reference, concept_references
from .statistics import MODES, LayerStatistics
from .topk import TopK

__all__ = ["MODES", "ConceptIndex", "LayerStatistics", "Reference", "TopK", "build_index", "concept_references"]
