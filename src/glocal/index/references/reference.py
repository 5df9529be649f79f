"""The result: :class:`Reference`, the reference samples of one concept, and the two ways of starting their relevance.

Boxes are ``(top, left, bottom, right)`` in input pixels with exclusive ``bottom`` and ``right``, so
``image[..., top:bottom, left:right]`` is the crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from PIL import Image

__all__ = ["MODES", "Box", "Mode", "Reference", "check_mode"]

Mode = Literal["relevance", "activation"]
Box = tuple[int, int, int, int]
"""``(top, left, bottom, right)`` in input pixels; ``bottom`` and ``right`` are exclusive."""

MODES = ("relevance", "activation")


def check_mode(mode: str) -> None:
    """Raise unless ``mode`` is one of :data:`MODES` (``"relevance"`` for RelMax, ``"activation"`` for ActMax)."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'relevance' (RelMax) or 'activation' (ActMax), got {mode!r}")


@dataclass(frozen=True)
class Reference:
    """Reference samples of one concept.

    Attributes
    ----------
    layer, channel, mode
        The concept and how its relevance was started (``"relevance"`` or ``"activation"``).
    sample_ids
        Dataset indices of the samples, most relevant (or active) first.
    scores
        The index's score of the concept on each sample (relevance or activation).
    boxes
        Each sample's crop ``(top, left, bottom, right)``.
    tensors
        ``(n, C, size, size)``: the cropped images, resized keeping their aspect ratio and padded, *without* fading.
    images
        The rendered references (cropped, resized, irrelevant part faded), one RGB image per sample.
    heatmaps
        ``(n, H, W)`` the concept's heatmaps on the (uncropped) samples; ``None`` when loaded from a cache.
    targets
        The output unit that started each sample's relevance (RelMax); ``None`` for ActMax.
    """

    layer: str
    channel: int
    mode: str
    sample_ids: tuple[int, ...]
    scores: tuple[float, ...]
    boxes: tuple[Box, ...]
    tensors: torch.Tensor
    images: tuple[Image.Image, ...]
    heatmaps: torch.Tensor | None = None
    targets: tuple[int, ...] | None = None

    def grid(self, columns: int = 4, title: str | None = None) -> Image.Image:
        """The rendered references tiled into one image (see :func:`glocal.viz.reference_grid`)."""
        from ...viz.references import reference_grid  # a drawing: glocal.viz, imported when one is asked for

        if title is None:
            title = f"{self.layer} channel {self.channel} ({self.mode})"
        return reference_grid(list(self.images), columns=columns, title=title)
