"""Choosing a concept's reference samples from a :class:`~glocal.index.ConceptIndex`, and their targets.

The samples are the index's top samples of the concept with a positive score (of a class, with a label); RelMax
references start each sample's relevance where the index did (:func:`index_targets`), and the attributor should be
the model and composite the index was built with (:func:`check_same_rules`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import torch

from ...attribution.engine import Attributor
from ...attribution.targets import predicted
from ...data import label_list
from ...errors import InputError, warn
from ..fingerprint import composite_fingerprint, model_fingerprint
from .reference import Mode, Reference

if TYPE_CHECKING:
    from ..concept_index import ConceptIndex

__all__ = ["check_same_rules", "class_samples", "empty_reference", "index_targets"]


def class_samples(
    index: ConceptIndex, layer: str, concept: int, label: int, n: int
) -> tuple[list[int], list[float], list[int]]:
    """The class top-k of ``concept`` for class ``label`` with a positive score, with the positions the scan stored."""
    index.class_samples(layer, concept, label, 0)  # checks the concept and label (glocal errors with valid ranges)
    ids, scores, positions = index.statistics(layer).class_entries(label, concept)
    keep = scores > 0
    return ids[keep][:n].tolist(), scores[keep][:n].tolist(), positions[keep][:n].tolist()


def empty_reference(layer: str, channel: int, mode: Mode, size: int) -> Reference:
    """The references of a concept without any sample of positive score: none."""
    return Reference(
        layer=layer,
        channel=int(channel),
        mode=mode,
        sample_ids=(),
        scores=(),
        boxes=(),
        tensors=torch.zeros(0, 3, size, size),
        images=(),
        heatmaps=None,
        targets=None,
    )


def index_targets(
    index: ConceptIndex, attributor: Attributor, samples: torch.Tensor, labels: list[Any], label: int | None
) -> list[int]:
    """Each sample's output unit that the index started its relevance from."""
    if label is not None:
        return [label] * samples.shape[0]
    if index.manifest.get("targets") == "label":
        if any(y is None for y in labels):
            raise InputError("the index started relevance from labels, but the dataset items carry none")
        targets = [label_list(y) for y in labels]
        if any(len(t) != 1 for t in targets):
            raise InputError(
                "the index started each multi-label sample's relevance from all its labels together; references "
                "start from one target per sample: pass label=<class> for a class's references"
            )
        return [t[0] for t in targets]
    with torch.no_grad():
        return predicted(attributor.model(samples))


def check_same_rules(index: ConceptIndex, attributor: Attributor) -> None:
    """Warn when ``attributor``'s model or composite is not the one the index was built with: the references would
    then show other heatmaps than those that ranked the samples."""
    manifest = index.manifest
    model = attributor.model
    ours = {"model": model_fingerprint(model), "composite": composite_fingerprint(attributor.composite, model)}
    ours = json.loads(json.dumps(ours))  # as the manifest stores them (tuples become lists)
    differs = [what for what in ("model", "composite") if what in manifest and manifest[what] != ours[what]]
    if differs:
        warn(
            f"the attributor's {' and '.join(differs)} differ from those the index was built with, so the references' "
            "heatmaps come from other weights or rules than the relevance that ranked their samples; pass an "
            "Attributor of the model and composite given to build_index (composite='auto' resolves to the same "
            "composite for the same model)"
        )
