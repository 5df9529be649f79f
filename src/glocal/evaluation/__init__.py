"""Faithfulness of concept explanations: concept flipping (AOPC, ABPC), heatmap deletion and insertion, RelMax
against ActMax reference overlap, and the Wilcoxon signed-rank test they report."""

from .areas import abpc, aopc, normalised_area
from .deletion import DeletionResult, heatmap_deletion
from .flipping import ORDERS, concept_flipping
from .flipping_result import FlippingResult
from .wilcoxon import WilcoxonResult, wilcoxon_signed_rank

__all__ = [
    "ORDERS",
    "DeletionResult",
    "FlippingResult",
    "WilcoxonResult",
    "abpc",
    "aopc",
    "concept_flipping",
    "heatmap_deletion",
    "normalised_area",
    "wilcoxon_signed_rank",
]
