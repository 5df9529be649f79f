"""Dataset-wide concept index: Relevance and Activation Maximization, class statistics, references.

Lower modules first: :mod:`.topk` (streaming top-k), :mod:`.statistics` (the scores of a layer), :mod:`.fingerprint`
(what made an index), :mod:`.storage` (the only code that touches disk), :mod:`.scan` (one pass over the data),
:mod:`.concept_index` (reading an index), :mod:`.build` (writing one) and :mod:`.references` (reference images).
"""

from .build import build_index
from .concept_index import ConceptIndex
from .references import Reference, concept_references
from .statistics import MODES, LayerStatistics
from .topk import TopK

__all__ = ["MODES", "ConceptIndex", "LayerStatistics", "Reference", "TopK", "build_index", "concept_references"]
