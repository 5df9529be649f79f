"""Selectors: which concepts of a layer to look at, per sample, from their relevance.

A selector maps concept relevances ``(N, C)`` to one list of concept ids per sample.

* :class:`TopK` -- the k most relevant concepts.
* :class:`Ids` -- the same explicit ids for every sample.
* :class:`CoveringShare` -- the smallest set of concepts that covers a share p of the layer's positive relevance.

:func:`top_nonzero` ranks as :class:`TopK` does, with ties to the lower id and concepts without relevance left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from ..errors import ConceptError

__all__ = ["CoveringShare", "Ids", "Selector", "TopK", "top_nonzero"]


@runtime_checkable
class Selector(Protocol):
    """Protocol of a concept selector."""

    def select(self, concept_relevance: torch.Tensor) -> list[list[int]]:
        """Concept ids per sample, most relevant first, from relevance ``(N, C)``."""
        ...


@dataclass(frozen=True)
class TopK:
    """The ``k`` concepts with the highest relevance (signed; negative relevance counts against a concept).

    Examples
    --------
    >>> TopK(2).select(torch.tensor([[0.1, 0.5, -0.9, 0.3]]))
    [[1, 3]]
    """

    k: int

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"TopK needs k >= 1, got {self.k}")

    def select(self, concept_relevance: torch.Tensor) -> list[list[int]]:
        k = min(self.k, concept_relevance.shape[1])
        return concept_relevance.topk(k, dim=1).indices.tolist()


@dataclass(frozen=True)
class Ids:
    """The same explicit concept ids for every sample.

    Examples
    --------
    >>> Ids([4, 2]).select(torch.zeros(2, 8))
    [[4, 2], [4, 2]]
    """

    ids: Sequence[int]

    def select(self, concept_relevance: torch.Tensor) -> list[list[int]]:
        count = concept_relevance.shape[1]
        bad = [i for i in self.ids if not 0 <= int(i) < count]
        if bad:
            raise ConceptError(
                f"concept ids {bad} are out of range: the layer has {count} concepts (0 to {count - 1}); check the "
                "layer name and give ids in that range"
            )
        return [[int(i) for i in self.ids] for _ in range(concept_relevance.shape[0])]


@dataclass(frozen=True)
class CoveringShare:
    """The smallest set of concepts whose relevance covers ``share`` of the layer's positive relevance.

    Concepts are taken by decreasing relevance until their sum reaches ``share`` times the sum of all positive
    concept relevances. Samples without positive relevance get no concepts.

    Examples
    --------
    >>> CoveringShare(0.8).select(torch.tensor([[5.0, 3.0, 1.0, 1.0, -2.0]]))
    [[0, 1]]
    """

    share: float
    max_concepts: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= 1.0:
            raise ValueError(f"CoveringShare needs a share in (0, 1], got {self.share}")

    def select(self, concept_relevance: torch.Tensor) -> list[list[int]]:
        values, order = concept_relevance.sort(dim=1, descending=True)
        positive = values.clamp(min=0)
        total = positive.sum(1, keepdim=True)
        covered = positive.cumsum(1)
        # number of concepts needed: first position where the cumulative sum reaches the share (with a float margin)
        reached = covered >= self.share * total * (1 - 1e-6)
        counts = torch.where(
            total.squeeze(1) > 0, reached.float().argmax(1) + 1, torch.zeros_like(total.squeeze(1)).long()
        )
        out = []
        for n, count in enumerate(counts.tolist()):
            if self.max_concepts is not None:
                count = min(count, self.max_concepts)
            out.append(order[n, :count].tolist())
        return out


def top_nonzero(scores: torch.Tensor, k: int) -> list[list[int]]:
    """Per row of ``(M, C)`` concept scores, the ids of the ``k`` largest, ties to the lower id. Concepts with zero
    relevance are left out: they are no part of the concept above.

    >>> top_nonzero(torch.tensor([[0.0, 2.0, 1.0, 2.0], [0.0, 0.0, -1.0, 0.0]]), 3)
    [[1, 3, 2], [2]]
    """
    values = scores.tolist()
    return [
        [c for c in order if row[c] != 0][:k]
        for order, row in zip(scores.argsort(dim=1, descending=True, stable=True).tolist(), values, strict=True)
    ]
