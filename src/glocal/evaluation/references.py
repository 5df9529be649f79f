"""RelMax against ActMax: how much the samples that *use* a concept most (RelMax) overlap with those that *excite* it
most (ActMax), per concept of an index's layer.

For concept ``c`` with top-``k`` sample sets ``R`` (``modes[0]``, e.g. ``"relmax_sum"``) and ``A`` (``modes[1]``,
e.g. ``"actmax_sum"``), each holding only samples with a positive score (:meth:`~glocal.ConceptIndex.samples`):

* ``overlap = |R & A| / k`` -- the share of the ``k`` places both agree on;
* ``jaccard = |R & A| / |R | A|`` (``nan`` when both are empty).

A low overlap says that the images which drive a channel hardest are not those for which it matters to the
prediction: ActMax references then show something the model does not use the concept for.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..index.concept_index import ConceptIndex
from ..index.statistics import MODES

__all__ = ["ReferenceOverlap", "reference_overlap"]


@dataclass(frozen=True)
class ReferenceOverlap:
    """Per-concept overlap of two top-``k`` reference sets of one layer.

    Attributes
    ----------
    layer, k, modes
        The layer, the set size and the two modes compared.
    overlap
        Per concept ``|R & A| / k``.
    jaccard
        Per concept ``|R & A| / |R | A|`` (``nan`` when both sets are empty).
    shared
        Per concept the sample ids in both sets, in the first mode's order.
    """

    layer: str
    k: int
    modes: tuple[str, str]
    overlap: tuple[float, ...]
    jaccard: tuple[float, ...]
    shared: tuple[tuple[int, ...], ...]

    @property
    def mean_overlap(self) -> float:
        """Mean of :attr:`overlap` over the concepts."""
        return sum(self.overlap) / len(self.overlap) if self.overlap else math.nan

    @property
    def mean_jaccard(self) -> float:
        """Mean of :attr:`jaccard` over the concepts that have a defined index."""
        values = [value for value in self.jaccard if not math.isnan(value)]
        return sum(values) / len(values) if values else math.nan

    def summary(self) -> str:
        return (
            f"{self.modes[0]} against {self.modes[1]} at {self.layer!r} (top {self.k}, {len(self.overlap)} concepts): "
            f"mean overlap {self.mean_overlap:.3f}, mean Jaccard {self.mean_jaccard:.3f}"
        )

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``NaN`` where undefined)."""
        return {
            "layer": self.layer,
            "k": self.k,
            "modes": list(self.modes),
            "overlap": list(self.overlap),
            "jaccard": list(self.jaccard),
            "shared": [list(ids) for ids in self.shared],
            "mean_overlap": self.mean_overlap,
            "mean_jaccard": self.mean_jaccard,
        }


def reference_overlap(
    index: ConceptIndex,
    layer: str,
    *,
    k: int | None = None,
    modes: Sequence[str] = ("relmax_sum", "actmax_sum"),
    concepts: Sequence[int] | None = None,
) -> ReferenceOverlap:
    """Overlap of two modes' top-``k`` reference sets for every concept (or ``concepts``) of ``layer``.

    Parameters
    ----------
    index
        A :class:`~glocal.ConceptIndex` holding ``layer``.
    k
        Set size; ``None`` for all the index kept (its ``k``). At most the index's ``k``.
    modes
        Two of ``glocal.index.MODES``: the RelMax mode first by convention.
    concepts
        Channels to compare; ``None`` for all.
    """
    if len(modes) != 2 or any(mode not in MODES for mode in modes):
        raise InputError(f"modes must be two of {MODES}, got {tuple(modes)}")
    kept = index.top(layer, modes[0]).k
    if k is None:
        k = kept
    elif isinstance(k, bool) or operator.index(k) < 1 or k > kept:
        raise InputError(f"k must be between 1 and the {kept} samples per concept the index kept, got {k!r}")
    chosen = range(index.statistics(layer).concepts) if concepts is None else list(concepts)
    overlap, jaccard, shared = [], [], []
    for concept in chosen:
        first = index.samples(layer, concept, modes[0], n=k)[0]
        second = set(index.samples(layer, concept, modes[1], n=k)[0])
        both = [sample for sample in first if sample in second]
        union = len(set(first) | second)
        overlap.append(len(both) / k)
        jaccard.append(len(both) / union if union else math.nan)
        shared.append(tuple(both))
    return ReferenceOverlap(layer, k, (modes[0], modes[1]), tuple(overlap), tuple(jaccard), tuple(shared))
