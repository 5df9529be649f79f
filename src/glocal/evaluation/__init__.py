"""Faithfulness of concept explanations: concept flipping (AOPC, ABPC), heatmap deletion and insertion, RelMax
against ActMax reference overlap, the Wilcoxon signed-rank test they report, and :func:`diagnose`, which measures
where a model loses or creates relevance under a composite."""

from .areas import abpc, aopc, normalised_area
from .deletion import DeletionResult, heatmap_deletion
from .diagnosis import Diagnosis, Finding, FlowRow, LayerCompleteness
from .diagnostics import DEFAULT_TOLERANCE, diagnose
from .flipping import ORDERS, concept_flipping
from .flipping_result import FlippingResult
from .references import ReferenceOverlap, reference_overlap
from .wilcoxon import WilcoxonResult, wilcoxon_signed_rank

__all__ = [
    "DEFAULT_TOLERANCE",
    "ORDERS",
    "DeletionResult",
    "Diagnosis",
    "Finding",
    "FlippingResult",
    "FlowRow",
    "LayerCompleteness",
    "ReferenceOverlap",
    "WilcoxonResult",
    "abpc",
    "aopc",
    "concept_flipping",
    "diagnose",
    "heatmap_deletion",
    "normalised_area",
    "reference_overlap",
    "wilcoxon_signed_rank",
]
