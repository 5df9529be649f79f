"""Photos and image files as pictures: ``(C, size, size)`` tensors in [0, 1], cut the way a preset's model expects."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError

__all__ = ["IMAGE_SUFFIXES", "load_pictures", "square_picture"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def square_picture(photo: np.ndarray, size: int, zoom: float = 1.0, channels: int = 3) -> torch.Tensor:
    """A photo ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` (uint8 or float in [0, 1]) as ``(channels, size, size)``:
    the shorter side resized to ``size * zoom``, the centre square of ``size`` pixels cut out.

    >>> square_picture(np.full((30, 60, 3), 255, dtype=np.uint8), 16).shape
    torch.Size([3, 16, 16])
    """
    array = np.asarray(photo)
    image = torch.from_numpy(np.ascontiguousarray(array)).float()
    if array.dtype == np.uint8:
        image = image / 255
    image = image[..., None] if image.dim() == 2 else image[..., :3]
    image = image.permute(2, 0, 1)
    if channels == 1 and image.shape[0] == 3:
        image = (image * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    elif channels == 3 and image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    scale = size * zoom / min(image.shape[1:])
    resized = torch.nn.functional.interpolate(
        image[None],
        scale_factor=scale,
        mode="bilinear",
        antialias=True,
        align_corners=False,
        recompute_scale_factor=True,
    )[0]
    top, left = (resized.shape[1] - size) // 2, (resized.shape[2] - size) // 2
    return resized[:, top : top + size, left : left + size].clamp(0, 1)


def load_pictures(paths: Sequence[str | Path], size: int, channels: int = 3, zoom: float = 1.0) -> torch.Tensor:
    """Image files as pictures ``(N, channels, size, size)`` in [0, 1] (see :func:`square_picture`)."""
    from PIL import Image, UnidentifiedImageError

    pictures = []
    for path in paths:
        try:
            with Image.open(path) as image:
                array = np.array(image.convert("RGB"))  # a writable copy: torch warns about read-only arrays
        except (FileNotFoundError, IsADirectoryError):
            raise InputError(
                f"no image file at {path}; give existing image files ({', '.join(IMAGE_SUFFIXES)})"
            ) from None
        except UnidentifiedImageError:
            raise InputError(
                f"{path} is not an image Pillow can read; give {', '.join(IMAGE_SUFFIXES)} files"
            ) from None
        pictures.append(square_picture(array, size, zoom, channels))
    if not pictures:
        raise InputError("no image files were given")
    return torch.stack(pictures)
