"""Input regions for regional atlases: where in the input the relevance that votes must end up.

A region is an ``(H, W)`` 0/1 mask for all samples, an ``(N, H, W)`` one per sample, or a callable such as
:func:`centre_square` that maps a batch of inputs to either. :func:`check_region` checks one against the data before
any work, :func:`describe_region` names it for :attr:`ConceptAtlas.region <glocal.ConceptAtlas>`, and
:func:`batch_region` gives a batch's mask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...data import Batch
from ...errors import InputError

__all__ = ["CentreSquare", "Region", "batch_region", "centre_square", "check_region", "describe_region"]

Region = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]
"""An ``(H, W)`` mask for all samples, an ``(N, H, W)`` mask per sample, or a callable ``(inputs) -> mask``."""


@dataclass(frozen=True)
class CentreSquare:
    """A region: the ``size`` by ``size`` square in the centre of the input (see :func:`centre_square`)."""

    size: int

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"the square's size must be a positive number of pixels, got {self.size!r}")

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """The ``(H, W)`` 0/1 mask for inputs ``(N, C, H, W)``."""
        if inputs.dim() < 3:
            raise InputError(
                f"a centre square needs inputs with two spatial dimensions (N, C, H, W), got shape "
                f"{tuple(inputs.shape)}"
            )
        height, width = inputs.shape[-2:]
        if self.size > min(height, width):
            raise InputError(
                f"the centre square of {self.size} pixels does not fit inputs of {height}x{width} pixels; "
                f"choose a size of at most {min(height, width)}"
            )
        top, left = (height - self.size) // 2, (width - self.size) // 2
        mask = torch.zeros(height, width, dtype=inputs.dtype, device=inputs.device)
        mask[top : top + self.size, left : left + self.size] = 1
        return mask


def centre_square(size: int) -> CentreSquare:
    """A region for :func:`concept_atlas`: the centre square of ``size`` pixels (top-left corner rounded up-left).

    Examples
    --------
    >>> centre_square(2)(torch.zeros(1, 1, 4, 5)).int().tolist()
    [[0, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 0]]
    """
    return CentreSquare(size)


def check_region(region: Region | None, n: int) -> None:
    """Raise ``InputError`` unless ``region`` is ``None``, a callable, or an ``(H, W)`` or ``(n, H, W)`` tensor."""
    if region is None or callable(region):
        return
    if not isinstance(region, torch.Tensor):
        raise InputError(
            f"region must be a tensor mask (H, W) or (N, H, W), or a callable (inputs) -> mask; got "
            f"{type(region).__name__}"
        )
    if region.dim() not in (2, 3) or (region.dim() == 3 and region.shape[0] != n):
        raise InputError(
            f"region must be one (H, W) mask for all samples or one per sample ({n}, H, W); got shape "
            f"{tuple(region.shape)}"
        )


def describe_region(region: Region | None) -> str | None:
    """A short description of ``region`` for an atlas (``None`` for no region)."""
    if region is None:
        return None
    if isinstance(region, torch.Tensor):
        what = "mask" if region.dim() == 2 else "per-sample masks"
        return f"{what} of shape {tuple(region.shape)}"
    return repr(region) if isinstance(region, CentreSquare) else getattr(region, "__qualname__", repr(region))


def batch_region(region: Region, batch: Batch) -> torch.Tensor:
    """The region's mask for ``batch``, ``(H, W)`` or ``(N, H, W)``, on the inputs' device and in their dtype."""
    inputs = batch.inputs
    n, spatial = inputs.shape[0], tuple(inputs.shape[2:])
    if isinstance(region, torch.Tensor):
        mask = region if region.dim() == 2 else region[batch.start : batch.start + n]
    else:
        mask = torch.as_tensor(region(inputs))
    if tuple(mask.shape) not in (spatial, (n, *spatial)):
        raise InputError(
            f"the region mask has shape {tuple(mask.shape)} but the inputs' spatial shape is {spatial}; give an "
            f"{spatial} mask, or one per sample (N, {', '.join(map(str, spatial))})"
        )
    return mask.to(device=inputs.device, dtype=inputs.dtype)
