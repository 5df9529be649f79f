"""Pictures for a report: tensors and PIL images as PNG bytes, downscaled to the size the page shows them at."""

from __future__ import annotations

import io

import torch
from PIL import Image

from ..viz.images import heatmap_image

__all__ = ["HEATMAP_COLOURS", "HEATMAP_PERCENTILE", "SIZES", "heatmap_png", "image_png", "picture_png"]

SIZES = {"picture": 160, "heatmap": 96, "reference": 64, "thumbnail": 96}
"""The longest side, in pixels, of each kind of picture in a report (the size the page shows it at)."""


def image_png(image: Image.Image, size: int, colours: int | None = None) -> bytes:
    """``image`` as PNG bytes, downscaled (aspect kept) so that its longer side is at most ``size`` pixels.

    Smaller images are kept as they are: the page scales them up with crisp pixels, which costs no bytes. With
    ``colours`` the image is stored with a palette of that many colours (a heatmap's colour map needs few; this
    about halves its size).
    """
    image = image.convert("RGB")
    if max(image.size) > size:
        scale = size / max(image.size)
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS
        )
    if colours is not None:
        image = image.quantize(colours)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def picture_png(picture: torch.Tensor, size: int) -> bytes:
    """A ``(1 or 3, H, W)`` picture in [0, 1] as PNG bytes (see :func:`image_png`)."""
    array = (picture.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    if array.shape[0] == 1:
        array = array.expand(3, -1, -1)
    return image_png(Image.fromarray(array.permute(1, 2, 0).contiguous().numpy(), mode="RGB"), size)


HEATMAP_PERCENTILE = 99.5
"""Heatmaps get their fullest colour at this percentile of their absolute values, so a few extreme pixels do not
wash out the rest (see :func:`glocal.viz.heatmap_image`)."""

HEATMAP_COLOURS = 64
"""The palette size heatmaps are stored with."""


def heatmap_png(heatmap: torch.Tensor, size: int) -> bytes:
    """An ``(H, W)`` relevance heatmap (red positive, blue negative, white zero) as PNG bytes."""
    image = heatmap_image(heatmap.detach().float().cpu(), percentile=HEATMAP_PERCENTILE)
    return image_png(image, size, colours=HEATMAP_COLOURS)
