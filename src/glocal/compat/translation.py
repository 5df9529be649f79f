"""zennit-crp's conditions and ``mask_map`` as glocal's: :class:`Translator` and the concepts it makes.

zennit-crp's conditions are dicts ``{"layer": [concept ids], "y": [targets]}`` and its masks come from a factory
``mask_map(batch_id, concept_ids, layer_name)``. :class:`Translator` turns each dict into a glocal
:class:`~glocal.attribution.conditions.Condition` and each layer's mask function into a glocal concept: zennit-crp's
default ``ChannelConcept.mask`` becomes glocal's vectorised :class:`glocal.ChannelConcept`; any other mask function is
wrapped (its condition values become integer tokens) after a check on random gradients that it is a fixed
multiplication per row, which is what glocal's engine needs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..attribution.concepts import ChannelConcept as _GlocalChannelConcept
from ..attribution.concepts import Concept
from ..attribution.conditions import Condition
from ..errors import ConceptError, ConditionError, LayerError
from .concepts import ChannelConcept, MaskFunction
from .helper import get_output_shapes

__all__ = ["MaskMap", "Translator"]

MaskMap = Callable[[int, Any, str | None], MaskFunction]
"""zennit-crp's mask factory: ``mask_map(batch_id, concept_ids, layer_name) -> MaskFunction``."""


def _is_channel_mask(mask_map: Any) -> bool:
    """Whether ``mask_map`` is zennit-crp's default ``ChannelConcept.mask`` (this module's or crp's own)."""
    if mask_map is ChannelConcept.mask:
        return True
    return getattr(mask_map, "__qualname__", None) == "ChannelConcept.mask" and getattr(
        mask_map, "__module__", None
    ) in ("crp.concepts", ChannelConcept.__module__)


def _freeze(value: Any) -> Hashable:
    """A hashable stand-in for a condition value (lists, dicts, arrays, tensors), equal for equal values."""
    if isinstance(value, torch.Tensor | np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, Mapping):
        items = [(_freeze(key), _freeze(item)) for key, item in value.items()]
        return ("mapping", tuple(sorted(items, key=repr)))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(_freeze(item) for item in value))
    hash(value)
    return value


class _MaskMapConcept:
    """A glocal :class:`~glocal.Concept` made of a zennit-crp mask function.

    zennit-crp's condition values (channel lists, ``{channel: neurons}`` maps, ...) are opaque to glocal, so each
    distinct value gets an integer *token*; glocal's conditions carry the token and :meth:`mask` turns it back into
    ``mask_map(0, value, layer)`` applied to a one-sample tensor of ones.
    """

    def __init__(self, mask_map: MaskMap, layer: str) -> None:
        self.mask_map = mask_map
        self.layer = layer
        self.values: list[Any] = []
        self._tokens: dict[Hashable, int] = {}

    def token(self, value: Any) -> int:
        """The integer that stands for the condition value ``value`` at this layer."""
        try:
            key = _freeze(value)
        except TypeError:  # unhashable and unknown: a token of its own
            self.values.append(value)
            return len(self.values) - 1
        if key not in self._tokens:
            self._tokens[key] = len(self.values)
            self.values.append(value)
        return self._tokens[key]

    def count(self, shape: torch.Size) -> int:
        return int(shape[0]) if len(shape) else 1

    def mask(self, ids: Sequence[int], shape: torch.Size, sample: int = 0) -> torch.Tensor:
        mask = torch.ones(shape)
        for token in ids:
            function = self.mask_map(0, self.values[token], self.layer)
            masked = function(torch.ones(1, *shape))
            if not isinstance(masked, torch.Tensor) or tuple(masked.shape) != (1, *shape):
                raise ConceptError(
                    f"the mask_map function for layer {self.layer!r} must return the gradient it was given, shaped "
                    f"{(1, *tuple(shape))}, got {type(masked).__name__}"
                    f"{'' if not isinstance(masked, torch.Tensor) else ' of shape ' + str(tuple(masked.shape))}"
                )
            mask = mask * masked[0].detach().to(mask)
        return mask

    def relevance(self, relevance: torch.Tensor) -> torch.Tensor:
        return relevance.flatten(2).sum(-1) if relevance.dim() > 2 else relevance

    def __repr__(self) -> str:
        return f"_MaskMapConcept({getattr(self.mask_map, '__qualname__', self.mask_map)!r}, layer={self.layer!r})"


def _multiplies(factory: MaskMap, value: Any, layer: str, shape: torch.Size) -> bool:
    """Whether ``factory(batch_id, value, layer)`` multiplies row ``batch_id`` of any gradient by one fixed mask and
    leaves the other rows alone (what glocal's engine needs; zennit-crp's channel and neuron masks do)."""
    gradient = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0)) + 0.5
    fixed = factory(0, value, layer)(torch.ones(1, *shape))
    masked = factory(1, value, layer)(gradient.clone())
    if not isinstance(fixed, torch.Tensor) or not isinstance(masked, torch.Tensor) or masked.shape != gradient.shape:
        return False
    return bool(torch.allclose(masked[0], gradient[0]) and torch.allclose(masked[1], gradient[1] * fixed[0].to(masked)))


class Translator:
    """Turns zennit-crp's condition dicts and ``mask_map`` into glocal conditions and concepts."""

    def __init__(self, mask_map: MaskMap | Mapping[str, MaskMap], output_name: str) -> None:
        if not (callable(mask_map) or isinstance(mask_map, Mapping)):
            raise TypeError(
                f"mask_map must be a mask function like ChannelConcept.mask or a dict from layer name to one, got "
                f"{type(mask_map).__name__}"
            )
        self.mask_map = mask_map
        self.output_name = output_name
        self.concepts: dict[str, Concept] = {}

    def concept(self, layer: str) -> Concept:
        if layer not in self.concepts:
            if isinstance(self.mask_map, Mapping):
                if layer not in self.mask_map:
                    raise LayerError(
                        f"mask_map has no entry for layer {layer!r}, which a condition names; add one, e.g. "
                        f"mask_map={{..., {layer!r}: ChannelConcept.mask}}"
                    )
                function = self.mask_map[layer]
            else:
                function = self.mask_map
            concept: Concept = (
                _GlocalChannelConcept() if _is_channel_mask(function) else _MaskMapConcept(function, layer)
            )
            self.concepts[layer] = concept
        return self.concepts[layer]

    def condition(self, mapping: Any) -> Condition:
        if not isinstance(mapping, Mapping):
            raise ConditionError(
                f"each condition must be a dict like {{'features.28': [50], '{self.output_name}': [1]}}, "
                f"got {mapping!r}"
            )
        layers: dict[str, Any] = {}
        for name, value in mapping.items():
            if name == self.output_name:
                continue
            if not isinstance(name, str):
                raise ConditionError(f"condition keys must be layer names (strings), got {name!r}")
            concept = self.concept(name)
            layers[name] = (concept.token(value),) if isinstance(concept, _MaskMapConcept) else value
        return Condition(targets=mapping.get(self.output_name), layers=layers)

    def engine_can_mask(self, model: torch.nn.Module, sample: torch.Tensor, mappings: Sequence[Any]) -> bool:
        """Whether every mask function the conditions use is a fixed 0/1-style multiplication per row.

        Other mask functions (say, one that keeps the largest gradient values) depend on the relevance itself, which
        glocal's engine does not pass through them; those calls run zennit-crp's steps instead. Checked on random
        gradients shaped like each layer's output (one forward pass of ``sample``), only for mask functions other
        than ``ChannelConcept.mask``.
        """
        custom = {
            name
            for mapping in mappings
            for name in mapping
            if name != self.output_name and isinstance(self.concept(name), _MaskMapConcept)
        }
        if not custom:
            return True
        shapes = get_output_shapes(model, sample, sorted(custom))
        checked: set[tuple[str, Hashable]] = set()
        for mapping in mappings:
            for name, value in mapping.items():
                if name not in custom or name not in shapes:
                    continue
                try:
                    key: tuple[str, Hashable] = (name, _freeze(value))
                except TypeError:
                    key = (name, id(value))
                if key in checked:
                    continue
                checked.add(key)
                concept = self.concept(name)
                assert isinstance(concept, _MaskMapConcept)
                if not _multiplies(concept.mask_map, value, name, shapes[name]):
                    return False
        return True
