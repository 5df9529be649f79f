"""zennit-crp's steps of ``CondAttribution``, the methods its subclasses override to change one.

:class:`CondAttributionSteps` holds ``broadcast`` (pair the data with the conditions), ``relevance_init`` (the initial
relevance), ``backward`` (the backward pass, partial with ``exclude_parallel``) and ``heatmap_modifier`` (turn
``data.grad`` into the heatmap), with zennit-crp's signatures and behaviour; :class:`~glocal.compat.CondAttribution`
inherits them. glocal's engine does not call them: they run only when a subclass (or an instance) replaces one of
them, and then all of them run in zennit-crp's order, with hooks on the model (:mod:`glocal.compat.hooked`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConditionError

__all__ = ["CondAttributionSteps"]


class CondAttributionSteps:
    """zennit-crp's override points of ``CondAttribution`` (its base class; see the module)."""

    def broadcast(self, data: torch.Tensor, conditions: list[Any]) -> tuple[torch.Tensor, list[Any]]:
        """zennit-crp's pairing of data and conditions: paired when the lengths agree, else each sample repeated
        ``len(conditions)`` times and the conditions tiled (``data.retain_grad()`` keeps the heatmap's gradient)."""
        len_data, len_cond = len(data), len(conditions)
        if len_data != len_cond:
            if len_cond > 1:
                data = torch.repeat_interleave(data, len_cond, dim=0)
            if len_data > 1:
                conditions = conditions * len_data
        data.retain_grad()
        return data, conditions

    def relevance_init(
        self, prediction: torch.Tensor, target_list: Sequence[Any] | None, init_rel: Any
    ) -> torch.Tensor:
        """zennit-crp's initial relevance: ``init_rel`` (callable on ``prediction``, tensor or number; default
        ``prediction`` itself), kept only at each row's targets when ``target_list`` has any.

        Unlike zennit-crp, a float ``init_rel`` is used as well as an int.
        """
        if callable(init_rel):
            selection = init_rel(prediction)
        elif isinstance(init_rel, torch.Tensor):
            selection = init_rel
        elif isinstance(init_rel, int | float | np.integer | np.floating) and not isinstance(init_rel, bool):
            selection = torch.full(prediction.shape, float(init_rel), dtype=prediction.dtype, device=prediction.device)
        else:
            selection = prediction
        if target_list:
            masked = torch.zeros_like(selection)
            for row, targets in enumerate(target_list):
                masked[row, targets] = selection[row, targets]
            selection = masked
        return selection

    def backward(
        self,
        pred: torch.Tensor,
        grad_mask: torch.Tensor,
        partial_backward: bool,
        layer_names: Sequence[str],
        layer_out: Mapping[str, torch.Tensor],
        generate: bool = False,
    ) -> None:
        """zennit-crp's backward pass from ``pred`` with initial relevance ``grad_mask``.

        With ``partial_backward`` (``exclude_parallel``) relevance goes from each conditioned layer of ``layer_names``
        (last in the forward pass first) only to the next, then on to the input; ``generate`` keeps the graph for the
        next batch.
        """
        if partial_backward and layer_names:
            tensor, grad = pred, grad_mask.to(pred)
            for name in layer_names:
                try:
                    (grad,) = torch.autograd.grad(tensor, inputs=layer_out[name], grad_outputs=grad, retain_graph=True)
                except RuntimeError as error:
                    if "allow_unused" not in str(error):
                        raise
                    raise ConditionError(
                        f"layer {name!r} does not lie below the conditioned layers above it: with "
                        "exclude_parallel=True the layers of one condition must be on one path (not parallel "
                        "branches). Pass exclude_parallel=False, or condition on layers of one path."
                    ) from error
                tensor = layer_out[name]
            torch.autograd.backward(tensor, grad, retain_graph=generate)
        else:
            torch.autograd.backward(pred, grad_mask.to(pred), retain_graph=generate)

    def heatmap_modifier(self, data: torch.Tensor, on_device: str | torch.device | None = None) -> torch.Tensor:
        """zennit-crp's heatmap: ``data.grad`` summed over dimension 1 (channels), moved to ``on_device``."""
        assert data.grad is not None, "heatmap_modifier needs data.grad, which the backward pass fills"
        heatmap = data.grad.detach()
        heatmap = heatmap.to(on_device) if on_device else heatmap
        return torch.sum(heatmap, dim=1)
