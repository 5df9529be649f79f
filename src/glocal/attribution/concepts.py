"""Concepts: what a unit of meaning is inside a layer, and how much relevance it gets.

A :class:`Concept` says, for a layer whose per-sample output has shape ``shape``, how many concepts it has, how to
build the 0/1 mask that lets one set of concepts' relevance through, and how to sum relevance per concept.

* :class:`ChannelConcept` -- one channel of a conv layer, or one unit of a linear layer (the paper's default).
* :class:`NeuronConcept` -- one unit at one position: ids index the flattened per-sample output.
* :class:`RegionConcept` -- channels, restricted to a spatial region of the latent map ("which concepts respond here").

Any object with the same three methods works (see the :class:`Concept` protocol).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from ..errors import ConceptError

__all__ = ["ChannelConcept", "Concept", "NeuronConcept", "RegionConcept", "check_concept_id", "relevance_shares"]


@runtime_checkable
class Concept(Protocol):
    """Protocol of a concept type. ``shape`` is one sample's layer output shape, e.g. ``(512, 14, 14)``."""

    def count(self, shape: torch.Size) -> int:
        """Number of concepts in a layer of this per-sample shape."""
        ...

    def mask(self, ids: Sequence[int], shape: torch.Size, sample: int = 0) -> torch.Tensor:
        """0/1 float mask of ``shape`` that lets the relevance of concepts ``ids`` through (for sample ``sample``)."""
        ...

    def relevance(self, relevance: torch.Tensor) -> torch.Tensor:
        """Relevance per concept: ``(N, *shape)`` to ``(N, count)``."""
        ...


def _check_ids(ids: Sequence[int], count: int, what: str) -> list[int]:
    checked = []
    for concept_id in ids:
        if isinstance(concept_id, bool) or not hasattr(concept_id, "__index__"):
            raise ConceptError(f"concept ids must be integers, got {concept_id!r}")
        index = int(concept_id)
        if not 0 <= index < count:
            raise ConceptError(
                f"concept id {index} is out of range: this layer has {count} {what} (ids 0 to {count - 1}). "
                "Check the layer name and the id."
            )
        checked.append(index)
    return checked


def check_concept_id(concepts: Concept, layer: str, concept: int, shape: torch.Size) -> None:
    """Raise :class:`~glocal.errors.ConceptError` unless ``concept`` is one of the concepts ``concepts`` finds in
    ``layer``, whose per-sample output has shape ``shape``."""
    count = concepts.count(shape)
    if not 0 <= int(concept) < count:
        raise ConceptError(
            f"concept {concept} is out of range: layer {layer!r} has {count} concepts (0 to {count - 1})"
        )


class ChannelConcept:
    """One channel (dimension 1 of the layer output) per concept.

    Examples
    --------
    >>> concept = ChannelConcept()
    >>> concept.mask([1], torch.Size([3, 2, 2]))[:, 0, 0]
    tensor([0., 1., 0.])
    >>> concept.relevance(torch.ones(1, 3, 2, 2))
    tensor([[4., 4., 4.]])
    """

    def count(self, shape: torch.Size) -> int:
        return int(shape[0])

    def mask(self, ids: Sequence[int], shape: torch.Size, sample: int = 0) -> torch.Tensor:
        mask = torch.zeros(shape)
        checked = _check_ids(ids, self.count(shape), "channels")
        if len(checked) == 1:
            mask[checked[0]] = 1.0  # plain indexing: several times cheaper than a list index
        else:
            mask[checked] = 1.0
        return mask

    def relevance(self, relevance: torch.Tensor) -> torch.Tensor:
        return relevance.flatten(2).sum(-1) if relevance.dim() > 2 else relevance

    def __repr__(self) -> str:
        return "ChannelConcept()"


class NeuronConcept:
    """One unit at one position per concept; ids index the flattened per-sample output (``c * H * W + h * W + w``).

    Examples
    --------
    >>> NeuronConcept().mask([5], torch.Size([2, 2, 2])).flatten().tolist()
    [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    """

    def count(self, shape: torch.Size) -> int:
        return math.prod(shape)

    def mask(self, ids: Sequence[int], shape: torch.Size, sample: int = 0) -> torch.Tensor:
        mask = torch.zeros(self.count(shape))
        mask[_check_ids(ids, self.count(shape), "neurons")] = 1.0
        return mask.view(shape)

    def relevance(self, relevance: torch.Tensor) -> torch.Tensor:
        return relevance.flatten(1)

    @staticmethod
    def index(shape: torch.Size, channel: int, *position: int) -> int:
        """Flat id of the unit at ``channel`` and spatial ``position`` in a layer of per-sample ``shape``."""
        return _ravel(torch.Size(shape), (channel, *position))

    def __repr__(self) -> str:
        return "NeuronConcept()"


def _ravel(shape: torch.Size, index: tuple[int, ...]) -> int:
    if len(index) != len(shape):
        raise ConceptError(f"a position in a layer of shape {tuple(shape)} needs {len(shape)} indices, got {index}")
    flat = 0
    for size, i in zip(shape, index, strict=True):
        if not 0 <= i < size:
            raise ConceptError(f"index {index} is outside a layer of shape {tuple(shape)}")
        flat = flat * size + i
    return flat


class RegionConcept:
    """Channels, with relevance restricted to a region of the latent map.

    Parameters
    ----------
    region
        Mask over the spatial dimensions of the layer, shape ``(H, W)`` for all samples or ``(N, H, W)`` per sample;
        values in [0, 1] (booleans work).

    Examples
    --------
    >>> region = torch.tensor([[1, 0], [0, 0]])
    >>> RegionConcept(region).relevance(torch.ones(1, 3, 2, 2))
    tensor([[1., 1., 1.]])
    """

    def __init__(self, region: torch.Tensor) -> None:
        self.region = torch.as_tensor(region).float()
        if self.region.dim() not in (2, 3):
            raise ConceptError(f"a region is a mask of shape (H, W) or (N, H, W), got shape {tuple(self.region.shape)}")

    def _region(self, shape: torch.Size, sample: int) -> torch.Tensor:
        region = self.region if self.region.dim() == 2 else self.region[sample]
        if tuple(region.shape) != tuple(shape[1:]):
            raise ConceptError(
                f"the region has shape {tuple(region.shape)} but the layer's maps are {tuple(shape[1:])}; "
                "resize the region to the layer's spatial size"
            )
        return region

    def count(self, shape: torch.Size) -> int:
        return int(shape[0])

    def mask(self, ids: Sequence[int], shape: torch.Size, sample: int = 0) -> torch.Tensor:
        return ChannelConcept().mask(ids, shape) * self._region(shape, sample)

    def relevance(self, relevance: torch.Tensor) -> torch.Tensor:
        region = self.region.to(relevance)
        if region.dim() == 2:
            region = region.unsqueeze(0)
        if tuple(region.shape[-2:]) != tuple(relevance.shape[-2:]):
            raise ConceptError(
                f"the region has spatial shape {tuple(region.shape[-2:])} but the layer's maps are "
                f"{tuple(relevance.shape[-2:])}; resize the region to the layer's spatial size"
            )
        return (relevance * region.unsqueeze(1)).flatten(2).sum(-1)

    def __repr__(self) -> str:
        return f"RegionConcept(region of shape {tuple(self.region.shape)})"


def relevance_shares(concept_relevance: torch.Tensor, normalization: str = "abs") -> torch.Tensor:
    """Each concept's relevance as a share of the layer's total, per sample.

    Parameters
    ----------
    concept_relevance
        ``(N, C)`` relevance per concept.
    normalization
        ``"abs"``: divide by the sum of absolute relevances, as in the CRP paper (shares lie in [-1, 1] and their
        absolute values sum to 1). ``"signed"``: divide by the signed total (shares sum to 1).

    Examples
    --------
    >>> relevance_shares(torch.tensor([[3.0, -1.0]]))
    tensor([[ 0.7500, -0.2500]])
    >>> relevance_shares(torch.tensor([[3.0, -1.0]]), "signed")
    tensor([[ 1.5000, -0.5000]])
    """
    if normalization == "abs":
        total = concept_relevance.abs().sum(-1, keepdim=True)
    elif normalization == "signed":
        total = concept_relevance.sum(-1, keepdim=True)
    else:
        raise ValueError(f"normalization must be 'abs' or 'signed', got {normalization!r}")
    return concept_relevance / torch.where(total == 0, torch.ones_like(total), total)
