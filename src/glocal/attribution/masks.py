"""Which relevance a condition lets through: where the backward pass starts, and what passes a conditioned layer.

At the root (the model output, or ``start_layer``'s activation) a condition starts from the initial relevance,
kept to its targets (or to its concepts of the start layer). At each conditioned layer its concept mask multiplies
the relevance arriving there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import ConditionError, InputError, TargetError, warn
from .concepts import Concept
from .conditions import Condition, Ids

__all__ = ["InitRelevance", "Masks", "RootRelevance", "initial_relevance"]

InitRelevance = Callable[[torch.Tensor], torch.Tensor] | torch.Tensor | float | int | None


class Masks:
    """The concept masks of a run's layers, each built once per ``(layer, ids)`` and kept for the run.

    Parameters
    ----------
    concept
        The concept type used for a layer.
    below
        A layer's activation ``(N, *shape)`` (its masks get its device and dtype).
    n
        The number of samples.
    """

    def __init__(self, concept: Callable[[str], Concept], below: Callable[[str], torch.Tensor], n: int) -> None:
        self.concept = concept
        self.below = below
        self.n = n
        self._masks: dict[tuple[str, Ids], torch.Tensor] = {}

    def __call__(self, layer: str, ids: Ids, condition: Condition) -> torch.Tensor:
        """Mask ``(N or 1, *shape)`` letting ``ids`` of ``layer`` through."""
        key = (layer, ids)
        if key not in self._masks:
            concept = self.concept(layer)
            below = self.below(layer)
            shape = below.shape[1:]
            per_sample = condition.per_sample(ids, self.n, f"layer {layer!r}")
            if isinstance(ids, tuple) and not getattr(concept, "varies_per_sample", False):
                mask = concept.mask(list(ids), shape).unsqueeze(0)
            else:
                mask = torch.stack([concept.mask(list(i), shape, sample=n) for n, i in enumerate(per_sample)])
            self._masks[key] = mask.to(device=below.device, dtype=below.dtype)
        return self._masks[key]

    def masked(self, relevance: torch.Tensor, layer: str, condition: Condition) -> torch.Tensor:
        """``relevance`` arriving at ``layer`` with only ``condition``'s concepts of that layer let through."""
        return relevance * self(layer, condition.layers[layer], condition)


def initial_relevance(init_rel: InitRelevance, base: torch.Tensor) -> torch.Tensor:
    """The relevance a backward pass starts from at ``base``: ``init_rel`` applied to it, or ``base`` itself."""
    init = init_rel
    if init is None:
        return base.detach()
    if callable(init):
        value = init(base.detach())
    elif isinstance(init, torch.Tensor):
        value = init
    elif isinstance(init, int | float):
        value = torch.full_like(base, float(init))
    else:
        raise TypeError(f"init_rel must be a callable, a tensor or a number, got {type(init).__name__}")
    value = torch.as_tensor(value).to(base)
    try:
        return value.expand_as(base).detach()
    except RuntimeError:
        raise InputError(
            f"init_rel has shape {tuple(value.shape)} but the relevance starts at a tensor of shape "
            f"{tuple(base.shape)}; give a tensor of that shape (or broadcastable to it)"
        ) from None


class RootRelevance:
    """The relevance leaving the root under a condition: the initial relevance kept to the condition's targets (or,
    with a start layer, to its concepts there).

    Parameters
    ----------
    root
        Where the backward pass starts: the model output, or ``start_layer``'s activation.
    start_layer
        The layer whose activation is ``root``, or ``None`` for the model output.
    init_rel
        See :func:`initial_relevance`.
    masks
        The run's concept masks.
    output_name
        The key that names the model output in dict-form conditions (for messages).
    """

    def __init__(
        self, root: torch.Tensor, start_layer: str | None, init_rel: InitRelevance, masks: Masks, output_name: str
    ) -> None:
        self.root = root
        self.start_layer = start_layer
        self.init_rel = init_rel
        self.masks = masks
        self.output_name = output_name

    def initial(self) -> torch.Tensor:
        """The initial relevance at the root, before any condition."""
        return initial_relevance(self.init_rel, self.root)

    def __call__(self, condition: Condition) -> torch.Tensor:
        """The relevance leaving the root under ``condition``."""
        base = self.root
        n = self.masks.n
        relevance = self.initial()
        if self.start_layer is not None:
            if condition.targets is not None:
                warn(
                    f"the condition's targets {condition.targets} have no effect because the backward pass starts at "
                    f"start_layer {self.start_layer!r}; drop the targets or the start_layer"
                )
            if self.start_layer in condition.layers:
                relevance = relevance * self.masks(self.start_layer, condition.layers[self.start_layer], condition)
            return relevance
        if condition.targets is None:
            if self.init_rel is None:
                raise ConditionError(
                    f"the condition {condition.to_dict(self.output_name)} has no targets. Give the output "
                    f"units to explain (e.g. {{'{self.output_name}': [class_index]}} or "
                    "Condition(targets=...)), an init_rel, or a start_layer."
                )
            return relevance
        n_outputs = base.shape[1] if base.dim() > 1 else 1
        select = torch.zeros(n, n_outputs, device=base.device, dtype=base.dtype)
        for sample, targets in enumerate(condition.per_sample(condition.targets, n, "targets")):
            for target in targets:
                if not 0 <= target < n_outputs:
                    raise TargetError(
                        f"target {target} is out of range: the model has {n_outputs} outputs (0 to {n_outputs - 1})"
                    )
            select[sample, list(targets)] = 1.0
        return relevance * select.view(n, n_outputs, *([1] * (base.dim() - 2)))
