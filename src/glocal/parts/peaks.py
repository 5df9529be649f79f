"""Where a heatmap points: the peak of the heatmap after a Gaussian blur.

A conditional heatmap is a pixel-wise redistribution of relevance; its single largest pixel jumps between edges of
the same part from image to image. Blurring first (a Gaussian of standard deviation ``sigma`` pixels, separable,
borders extended by replication) makes the peak the centre of the densest relevance, which is what a part's position
should mean. ``sigma = 0`` keeps the raw argmax. Ties go to the first pixel in row-major order.

>>> heatmap = torch.zeros(1, 5, 7)
>>> heatmap[0, 1, 2], heatmap[0, 3, 5] = 1.0, 0.8
>>> heatmap[0, 3, 4] = heatmap[0, 3, 6] = heatmap[0, 2, 5] = heatmap[0, 4, 5] = 0.6    # a dense blob round (3, 5)
>>> heatmap_peaks(heatmap, sigma=0).tolist(), heatmap_peaks(heatmap, sigma=1.0).tolist()
([[1.0, 2.0]], [[3.0, 5.0]])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InputError

__all__ = ["gaussian_blur", "heatmap_peaks"]


def _kernel(sigma: float, dtype: torch.dtype) -> torch.Tensor:
    half = max(1, math.ceil(3 * sigma))
    steps = torch.arange(-half, half + 1, dtype=dtype)
    kernel = torch.exp(-0.5 * (steps / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(heatmaps: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(N, H, W)`` heatmaps blurred by a Gaussian of ``sigma`` pixels (replicated borders); ``sigma = 0``: as
    given."""
    if heatmaps.dim() != 3:
        raise InputError(f"heatmaps must be (N, height, width), got {tuple(heatmaps.shape)}")
    if sigma < 0:
        raise InputError(f"sigma must be >= 0 pixels, got {sigma}")
    if sigma == 0:
        return heatmaps
    kernel = _kernel(sigma, heatmaps.dtype).to(heatmaps.device)
    half = kernel.numel() // 2
    out = heatmaps[:, None]
    out = F.conv2d(F.pad(out, (0, 0, half, half), mode="replicate"), kernel.view(1, 1, -1, 1))
    out = F.conv2d(F.pad(out, (half, half, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    return out[:, 0]


def heatmap_peaks(heatmaps: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(N, 2)`` float ``(row, column)`` of each blurred heatmap's largest value."""
    blurred = gaussian_blur(heatmaps.detach().float(), sigma)
    flat = blurred.flatten(1).argmax(1)
    width = heatmaps.shape[-1]
    return torch.stack([flat // width, flat % width], dim=1).float()
