"""zennit-crp's concept classes (``crp.concepts``): a :class:`Concept` base class and :class:`ChannelConcept`.

A zennit-crp concept describes how a layer splits into concepts through four methods: ``mask`` builds the gradient
mask function that :class:`~glocal.compat.CondAttribution` applies at a conditioned layer (its ``mask_map``),
``attribute`` sums relevance per concept, ``reference_sampling`` ranks the samples of a batch per concept and
``get_rf_indices`` lists the neurons of one concept. Subclass :class:`Concept` (or :class:`ChannelConcept`) for a
concept of your own, exactly as with zennit-crp.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["ChannelConcept", "Concept", "MaskFunction"]

MaskFunction = Callable[[torch.Tensor], torch.Tensor]
"""zennit-crp's gradient mask: takes the batch's gradient at a layer, returns it masked."""


class Concept:
    """zennit-crp's abstract concept: subclasses implement the methods they need, the others raise.

    Examples
    --------
    >>> class Halves(Concept):
    ...     @staticmethod
    ...     def mask(batch_id, concept_ids, layer_name=None):
    ...         def mask_fct(grad):
    ...             keep = torch.zeros_like(grad[batch_id])
    ...             half = grad.shape[1] // 2
    ...             for concept_id in concept_ids:
    ...                 keep[concept_id * half : (concept_id + 1) * half] = 1
    ...             return torch.cat([grad[:batch_id], (grad[batch_id] * keep)[None], grad[batch_id + 1 :]])
    ...         return mask_fct
    >>> Halves.mask(0, [1])(torch.ones(1, 4))
    tensor([[0., 0., 1., 1.]])
    >>> Halves().attribute(torch.ones(1, 4))
    Traceback (most recent call last):
    ...
    NotImplementedError: Halves does not implement Concept.attribute; override it in the subclass
    """

    def _missing(self, method: str) -> NotImplementedError:
        return NotImplementedError(
            f"{type(self).__name__} does not implement Concept.{method}; override it in the subclass"
        )

    def mask(self, batch_id: int, concept_ids: Any, layer_name: str | None) -> MaskFunction:
        """Mask factory: a function that keeps only concepts ``concept_ids`` of row ``batch_id`` of a gradient."""
        raise self._missing("mask")

    def mask_rf(self, neuron_ids: Any, layer_name: str | None) -> MaskFunction:
        """Mask factory for single neurons (receptive fields)."""
        raise self._missing("mask_rf")

    def reference_sampling(
        self, relevance: torch.Tensor, layer_name: str | None = None, max_target: str = "sum", abs_norm: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rank the samples of a batch per concept: sample indices, values and receptive-field neurons."""
        raise self._missing("reference_sampling")

    def get_rf_indices(self, output_shape: Sequence[int], layer_name: str | None) -> Any:
        """Neuron indices of one concept of a layer with per-sample output shape ``output_shape``."""
        raise self._missing("get_rf_indices")

    def attribute(
        self,
        relevance: torch.Tensor,
        mask: torch.Tensor | None = None,
        layer_name: str | None = None,
        abs_norm: bool = True,
    ) -> torch.Tensor:
        """Relevance per concept: ``(N, ...)`` to ``(N, concepts)``."""
        raise self._missing("attribute")


class ChannelConcept(Concept):
    """zennit-crp's channel concept: one channel of a conv layer, or one unit of a linear layer.

    Its ``mask`` and ``mask_rf`` are zennit-crp's mask factories for :class:`~glocal.compat.CondAttribution`'s
    ``mask_map``; the other methods rank concepts by relevance and give the same numbers as zennit-crp.

    Examples
    --------
    >>> grad = torch.ones(2, 3, 2, 2)
    >>> ChannelConcept.mask(1, [0, 2])(grad)[:, :, 0, 0]
    tensor([[1., 1., 1.],
            [1., 0., 1.]])
    >>> ChannelConcept().attribute(torch.tensor([[[1.0, 2.0], [3.0, -4.0]]]), abs_norm=False)
    tensor([[ 3., -1.]])
    """

    @staticmethod
    def mask(batch_id: int, concept_ids: Sequence[int] | int, layer_name: str | None = None) -> MaskFunction:
        """Mask factory: keep only channels ``concept_ids`` of sample ``batch_id``'s gradient.

        Parameters
        ----------
        batch_id
            Row of the batch to mask.
        concept_ids
            Channel indices that let relevance through (an empty list blocks the layer).
        layer_name
            Unused; part of zennit-crp's signature.

        Returns
        -------
        MaskFunction
            ``fn(grad) -> grad`` for a gradient ``(batch, C, ...)``; unlike zennit-crp's it does not change ``grad``
            in place.
        """

        def mask_fct(grad: torch.Tensor) -> torch.Tensor:
            mask = torch.zeros_like(grad[batch_id])
            mask[concept_ids] = 1
            grad = grad.clone()
            grad[batch_id] = grad[batch_id] * mask
            return grad

        return mask_fct

    @staticmethod
    def mask_rf(  # type: ignore[override]  # zennit-crp's ChannelConcept changes the base class's signature
        batch_id: int, c_n_map: Mapping[int, Sequence[int] | int], layer_name: str | None = None
    ) -> MaskFunction:
        """Mask factory: keep only single neurons (for receptive-field heatmaps).

        Parameters
        ----------
        batch_id
            Row of the batch to mask.
        c_n_map
            Channel index to neuron indices; a neuron index counts positions of the flattened channel, e.g.
            ``0..399`` for a ``20 x 20`` map.
        layer_name
            Unused; part of zennit-crp's signature.
        """

        def mask_fct(grad: torch.Tensor) -> torch.Tensor:
            shape = grad.shape
            flat = grad.reshape(*shape[:2], -1).clone()
            mask = torch.zeros_like(flat[batch_id])
            for channel, neurons in c_n_map.items():
                mask[channel, neurons] = 1
            flat[batch_id] = flat[batch_id] * mask
            return flat.view(shape)

        return mask_fct

    def get_rf_indices(self, output_shape: Sequence[int], layer_name: str | None = None) -> list[int] | np.ndarray:
        """Neuron indices of one channel of a layer whose per-sample output shape is ``output_shape``."""
        if len(output_shape) == 1:
            return [0]
        return np.arange(0, int(np.prod(output_shape[1:])))

    def attribute(
        self,
        relevance: torch.Tensor,
        mask: torch.Tensor | None = None,
        layer_name: str | None = None,
        abs_norm: bool = True,
    ) -> torch.Tensor:
        """Relevance per channel: ``(N, C, ...)`` to ``(N, C)``.

        Parameters
        ----------
        relevance
            ``(N, C, ...)`` relevance at the layer.
        mask
            Optional tensor multiplied with ``relevance`` first.
        layer_name
            Unused; part of zennit-crp's signature.
        abs_norm
            Divide by the sum of absolute channel relevances (plus ``1e-10``) per sample.
        """
        if isinstance(mask, torch.Tensor):
            relevance = relevance * mask
        channel_relevance = torch.sum(relevance.reshape(*relevance.shape[:2], -1), dim=-1)
        if abs_norm:
            channel_relevance = channel_relevance / (torch.abs(channel_relevance).sum(-1).view(-1, 1) + 1e-10)
        return channel_relevance

    def reference_sampling(
        self,
        relevance: torch.Tensor,
        layer_name: str | None = None,
        max_target: str = "sum",
        abs_norm: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rank the samples of a batch per channel (zennit-crp's reference sampling).

        Parameters
        ----------
        relevance
            ``(N, C, ...)`` relevance (or activation) of N samples at the layer.
        layer_name
            Unused; part of zennit-crp's signature.
        max_target
            ``"sum"`` ranks by the channel's summed relevance, ``"max"`` by its largest single value.
        abs_norm
            Normalise each sample's channel values by their absolute sum first.

        Returns
        -------
        tuple of torch.Tensor
            ``(N, C)`` each: sample indices sorted per channel (most relevant first), their values, and the position
            of the most relevant neuron (flattened) of each.
        """
        flat = relevance.reshape(*relevance.shape[:2], -1)
        rf_neuron = torch.argmax(flat, dim=-1)
        if max_target == "sum":
            channel_relevance = torch.sum(flat, dim=-1)
        elif max_target == "max":
            channel_relevance = torch.gather(flat, -1, rf_neuron.unsqueeze(-1)).squeeze(-1)
        else:
            raise ValueError(f"max_target must be 'sum' or 'max', got {max_target!r}")
        if abs_norm:
            channel_relevance = channel_relevance / (torch.abs(channel_relevance).sum(-1).view(-1, 1) + 1e-10)
        d_ch_sorted = torch.argsort(channel_relevance, dim=0, descending=True)
        rel_ch_sorted = torch.gather(channel_relevance, 0, d_ch_sorted)
        rf_ch_sorted = torch.gather(rf_neuron, 0, d_ch_sorted)
        return d_ch_sorted, rel_ch_sorted, rf_ch_sorted
