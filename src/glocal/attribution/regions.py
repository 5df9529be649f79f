"""Input regions: how much of a layer's relevance ends up inside a region of the input.

The relevance below a layer is linear in the relevance at the layer: with ``L`` the map from relevance at the layer
to the input, ``<1_region, L(mask_c * R)> = <L^T 1_region, mask_c * R>`` for every unit (or concept) ``c``, and
``L^T 1_region`` is one double-backward pass (:func:`region_weights`). :meth:`glocal.Run.region_relevance` scores
all units of a layer that way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InputError

__all__ = ["expand_region", "region_weights"]


def expand_region(region: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    """``region`` as weights shaped like ``input``.

    Parameters
    ----------
    region
        ``(H, W)``, ``(N, H, W)`` or input-shaped ``(N, *input_shape)`` weights (``H, W``: the input's spatial shape).
    input
        ``(N, C, H, W)`` input (or any ``(N, C, *spatial)``).
    """
    region = torch.as_tensor(region).to(input)
    spatial = input.shape[2:]
    if region.shape == spatial or (region.shape[1:] == spatial and region.dim() == len(spatial) + 1):
        region = region.view(-1, 1, *spatial) if region.dim() > len(spatial) else region.view(1, 1, *spatial)
    try:
        return region.expand_as(input)
    except RuntimeError:
        raise InputError(
            f"the region has shape {tuple(region.shape)}; it must match the input's spatial shape "
            f"{tuple(spatial)} (optionally with a batch dimension) or the input shape {tuple(input.shape)}"
        ) from None


def region_weights(
    belows: Sequence[torch.Tensor], input: torch.Tensor, region: torch.Tensor
) -> tuple[torch.Tensor | None, ...]:
    """``L^T region`` for each layer activation in ``belows``: the weight with which relevance at each of its units
    reaches the ``region`` of ``input`` (``None`` where none does).

    ``L`` is the (linear) map from relevance at the layer to the input that the autograd graph from ``input`` to
    ``belows`` computes; one backward pass with zero probes builds it, one double-backward pass transposes it.
    """
    probes = [torch.zeros_like(below, requires_grad=True) for below in belows]
    with torch.enable_grad():
        (lowered,) = torch.autograd.grad(list(belows), input, probes, retain_graph=True, create_graph=True)
        return torch.autograd.grad((lowered * region).sum(), probes, retain_graph=True, allow_unused=True)
