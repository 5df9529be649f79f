"""Image work: model inputs made displayable, cropped to boxes, resized, and faded where the concept is irrelevant.

:func:`render_references` draws the reference pictures as zennit-crp's ``vis_opaque_img`` does (without blurring);
:func:`crop_images` gives the crops unfaded; :func:`min_max_image` is the default mapping of model inputs to images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ...errors import InputError
from .reference import Box

__all__ = ["ImageFunction", "crop_images", "display_images", "min_max_image", "render_references"]

ImageFunction = Callable[[torch.Tensor], torch.Tensor]


def _fit(tensor: torch.Tensor, size: int, fill: float) -> torch.Tensor:
    """``(C, h, w)`` resized so its longer side is ``size`` (aspect kept), centred on a ``size``-square of ``fill``."""
    channels, height, width = tensor.shape
    scale = size / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    resized = F.interpolate(
        tensor[None].float(), size=(new_height, new_width), mode="bilinear", align_corners=False, antialias=scale < 1
    )[0].clamp(0, 1)
    out = torch.full((channels, size, size), fill, dtype=resized.dtype)
    top, left = (size - new_height) // 2, (size - new_width) // 2
    out[:, top : top + new_height, left : left + new_width] = resized
    return out


def _check_images(images: torch.Tensor, heatmaps: torch.Tensor | None, boxes: Sequence[Box]) -> None:
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise InputError(f"images must be shaped (n, 1 or 3, H, W) with values in [0, 1], got {tuple(images.shape)}")
    if heatmaps is not None and tuple(heatmaps.shape) != (images.shape[0], *images.shape[2:]):
        raise InputError(
            f"heatmaps must be shaped (n, H, W) = {(images.shape[0], *images.shape[2:])} to match the images, "
            f"got {tuple(heatmaps.shape)}"
        )
    if len(boxes) != images.shape[0]:
        raise InputError(f"give one box per image: got {len(boxes)} boxes for {images.shape[0]} images")


def crop_images(
    images: torch.Tensor, boxes: Sequence[Box], *, size: int = 112, background: float = 0.0, crop: bool = True
) -> torch.Tensor:
    """Images ``(n, C, H, W)`` cropped to ``boxes``, resized keeping their aspect ratio and padded to a square.

    Returns ``(n, C, size, size)``; values outside [0, 1] are clipped.
    """
    _check_images(images, None, boxes)
    out = []
    for image, (top, left, bottom, right) in zip(images.detach().cpu(), boxes, strict=True):
        if crop:
            image = image[:, top:bottom, left:right]
        out.append(_fit(image, size, background))
    return torch.stack(out)


def render_references(
    images: torch.Tensor,
    heatmaps: torch.Tensor,
    boxes: Sequence[Box],
    *,
    size: int = 112,
    opacity: float = 0.2,
    threshold: float = 0.2,
    background: float = 0.0,
    crop: bool = True,
) -> list[Image.Image]:
    """Reference pictures: each image cropped to its box, the part where the concept is irrelevant faded out.

    Inside the crop, a pixel counts as relevant when its heatmap value exceeds ``threshold`` times the crop's largest
    (positive) relevance, as in zennit-crp's ``vis_opaque_img`` (but without blurring). Other pixels are blended
    towards the flat ``background``: ``opacity * image + (1 - opacity) * background``. The result is resized so its
    longer side is ``size`` and padded with ``background`` to a square.

    Parameters
    ----------
    images
        ``(n, C, H, W)`` images for display, values in [0, 1] (not normalised for the model).
    heatmaps
        ``(n, H, W)`` the concept's heatmaps (e.g. from :func:`reference_heatmaps`).
    boxes
        ``(top, left, bottom, right)`` per image (e.g. from :func:`receptive_field_boxes`).
    size
        Side of the square output in pixels.
    opacity
        How much of the image survives in the irrelevant part: 0 gives flat ``background``, 1 no fading.
    threshold
        Fraction of the largest relevance in the crop below which a pixel is faded, in ``[0, 1)``.
    background
        Grey level of the fade and padding: 0 (default) darkens the irrelevant part as in zennit-crp and the CRP
        paper, which keeps bright objects on dark backgrounds readable; 1 is white, 0.5 grey.
    crop
        Crop to the boxes; without it the whole image is shown (still faded).

    Returns
    -------
    list of PIL.Image.Image
        ``size`` by ``size`` RGB images.
    """
    _check_images(images, heatmaps, boxes)
    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity must lie in [0, 1], got {opacity}")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold is a fraction of the largest relevance in [0, 1), got {threshold}")
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    pictures = []
    for image, heatmap, (top, left, bottom, right) in zip(
        images.detach().cpu().float(), heatmaps.detach().cpu().float(), boxes, strict=True
    ):
        if crop:
            image, heatmap = image[:, top:bottom, left:right], heatmap[top:bottom, left:right]
        peak = float(heatmap.max()) if heatmap.numel() else 0.0
        relevant = heatmap > threshold * peak if peak > 0 else torch.zeros_like(heatmap, dtype=torch.bool)
        faded = opacity * image + (1 - opacity) * background
        shown = torch.where(relevant[None], image, faded)
        fitted = _fit(shown, size, background)
        if fitted.shape[0] == 1:
            fitted = fitted.expand(3, -1, -1)
        array = (fitted.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        pictures.append(Image.fromarray(np.ascontiguousarray(array), mode="RGB"))
    return pictures


def min_max_image(inputs: torch.Tensor) -> torch.Tensor:
    """Model inputs ``(n, C, H, W)`` as images in [0, 1]: each sample min-max normalised over all its values.

    A constant sample becomes mid-grey. Use it as ``to_image`` when the inputs' normalisation is unknown; with a
    known one (mean and std), undoing it shows the true colours.
    """
    flat = inputs.detach().float().flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    span = torch.where(high > low, high - low, torch.ones_like(high))
    scaled = (flat - low[:, None]) / span[:, None]
    scaled = torch.where((high > low)[:, None], scaled, torch.full_like(scaled, 0.5))
    return scaled.reshape(inputs.shape)


def display_images(inputs: torch.Tensor, to_image: ImageFunction) -> torch.Tensor:
    """``to_image(inputs)`` checked, on the CPU, clipped to [0, 1]; greyscale made RGB."""
    images = to_image(inputs.detach()).detach().cpu().float()
    if images.dim() != 4 or images.shape[0] != inputs.shape[0] or images.shape[1] not in (1, 3):
        raise InputError(
            f"to_image must map model inputs {tuple(inputs.shape)} to images (n, 1 or 3, H, W), "
            f"got {tuple(images.shape)}"
        )
    if images.shape[2:] != inputs.shape[2:]:
        raise InputError(
            f"to_image must keep the inputs' height and width {tuple(inputs.shape[2:])} (the heatmaps and boxes are "
            f"in input pixels), got {tuple(images.shape[2:])}"
        )
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images.clamp(0, 1).contiguous()
