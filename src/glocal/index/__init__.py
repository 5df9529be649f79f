"""Dataset-wide concept index: Relevance and Activation Maximization, class statistics, references."""

from .build import ConceptIndex, build_index
from .statistics import MODES, LayerStatistics
from .topk import TopK

__all__ = ["MODES", "ConceptIndex", "LayerStatistics", "TopK", "build_index"]
