"""Faithfulness of concept explanations: concept flipping (AOPC, ABPC), heatmap deletion and insertion, RelMax
against ActMax reference overlap, and the Wilcoxon signed-rank test they report."""

from .areas import abpc, aopc, normalised_area
from .deletion import DeletionResult, heatmap_deletion
from .flipping import ORDERS, concept_flipping
from .flipping_result import FlippingResult
from .references import ReferenceOverlap, reference_overlap
from .wilcoxon import WilcoxonResult, wilcoxon_signed_rank

__all__ = [
    "ORDERS",
    "DeletionResult",
    "FlippingResult",
    "ReferenceOverlap",
    "WilcoxonResult",
    "abpc",
    "aopc",
    "concept_flipping",
    "heatmap_deletion",
    "normalised_area",
    "reference_overlap",
    "wilcoxon_signed_rank",
]
