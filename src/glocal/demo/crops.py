"""A reference image set that ships offline: the natural photos of scikit-image (and matplotlib) cut into crops.

MobileNetV2's references (RelMax and ActMax samples of a concept) need a set of natural images to rank. ImageNet does
not ship offline, but scikit-image bundles about a dozen real photos (a cat, a cup of coffee, an astronaut, a rocket,
a motorcycle, the Hubble deep field, a stained tissue slide, a retina, the cameraman, coins, brick, grass and gravel
textures) and matplotlib one more (a portrait of Grace Hopper). :class:`PhotoCrops` cuts each of them into square
crops at several scales (the whole shorter side, then smaller windows on an overlapping grid), resized to one size
and normalised for the model: a map-style dataset of a few hundred images with fur, eyes, faces, textiles, metal,
wheels, liquid, stars, tissue, stone and grass in them.

Why the references mean something: each crop is a real photo region, and the concept index ranks all crops by how
much a concept is used (RelMax) or excited (ActMax), so a concept's top crops show what it responds to among these
regions. Their limits: a few hundred crops of ~15 photos are not ImageNet's 1.3 million images; a concept whose
pattern appears in none of the photos (e.g. feathers or text in a foreign script) gets the nearest thing the photos
have, and neighbouring crops of one photo repeat the same content.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..presets import PresetError

__all__ = ["CROP_PHOTOS", "PhotoCrops", "load_photo"]

CROP_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "stereo_motorcycle",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "coins",
    "brick",
    "grass",
    "gravel",
    "grace_hopper",
)
"""The natural photos that ship offline: ``skimage.data``'s colour and grey photos and textures (grey ones are
repeated into three channels), and ``grace_hopper`` from matplotlib's sample data. Left out: drawings and synthetic
images (``logo``, ``colorwheel``, ``text``, ``page``, phantoms) and photos that would need a download."""

FRACTIONS = (1.0, 0.6, 0.36)
"""Crop sides as fractions of a photo's shorter side: the whole photo's centre, then two finer scales."""


def load_photo(name: str) -> np.ndarray:
    """A photo of :data:`CROP_PHOTOS` as an ``(H, W, 3)`` uint8 array."""
    if name == "grace_hopper":
        try:
            import matplotlib.cbook
        except ImportError:
            raise PresetError("the photo crops need matplotlib; install it with `pip install glocal[demo]`") from None
        from PIL import Image

        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        with Image.open(str(path)) as image:
            return np.array(image.convert("RGB"))
    try:
        import skimage.data
    except ImportError:
        raise PresetError("the photo crops need scikit-image; install it with `pip install glocal[demo]`") from None
    loader = getattr(skimage.data, name, None)
    if loader is None:
        raise PresetError(f"skimage.data has no photo {name!r}; pick from {', '.join(CROP_PHOTOS)}")
    photo = loader()
    if isinstance(photo, tuple):  # stereo pairs come with their disparity map
        photo = photo[0]
    array = np.asarray(photo)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.array(array[..., :3], dtype=np.uint8)  # a writable copy


@dataclass(frozen=True)
class Crop:
    """Where a crop lies: photo number and its square ``(top, left, side)`` in that photo's pixels."""

    photo: int
    top: int
    left: int
    side: int


def crop_grid(height: int, width: int, fractions: Sequence[float], overlap: float) -> list[tuple[int, int, int]]:
    """Square windows ``(top, left, side)`` over a ``height x width`` photo: per fraction of the shorter side, an
    evenly spaced grid whose neighbours overlap by about ``overlap`` of a side.

    >>> crop_grid(100, 200, (1.0,), 0.5)
    [(0, 0, 100), (0, 50, 100), (0, 100, 100)]
    """
    windows = []
    for fraction in fractions:
        side = max(1, round(min(height, width) * fraction))
        step = side * (1 - overlap)
        rows = 1 + math.ceil(max(height - side, 0) / step - 1e-9)
        columns = 1 + math.ceil(max(width - side, 0) / step - 1e-9)
        tops = np.linspace(0, height - side, rows).round().astype(int) if rows > 1 else [(height - side) // 2]
        lefts = np.linspace(0, width - side, columns).round().astype(int) if columns > 1 else [(width - side) // 2]
        windows += [(int(top), int(left), side) for top in tops for left in lefts]
    return windows


class PhotoCrops(torch.utils.data.Dataset[torch.Tensor]):
    """Square crops of photos at several scales, each resized to ``size`` pixels and normalised: a map-style dataset.

    Items are normalised inputs ``(3, size, size)`` (no labels: an index over it ranks by the model's predictions).

    Parameters
    ----------
    photos
        Names from :data:`CROP_PHOTOS`.
    size
        Side of every crop after resizing.
    normalise
        Pictures ``(N, 3, size, size)`` in [0, 1] to model inputs.
    fractions, overlap
        Scales and overlap of the crop grid (see :func:`crop_grid`).

    Examples
    --------
    >>> crops = PhotoCrops(["coins"], size=32, normalise=lambda x: x)
    >>> len(crops), tuple(crops[0].shape)
    (49, (3, 32, 32))
    """

    def __init__(
        self,
        photos: Sequence[str] = CROP_PHOTOS,
        *,
        size: int = 112,
        normalise: Callable[[torch.Tensor], torch.Tensor],
        fractions: Sequence[float] = FRACTIONS,
        overlap: float = 0.5,
    ) -> None:
        self.names = tuple(photos)
        self.size = size
        self.normalise = normalise
        self.photos = [torch.from_numpy(load_photo(name)).permute(2, 0, 1).contiguous() for name in self.names]
        self.crops = [
            Crop(number, top, left, side)
            for number, photo in enumerate(self.photos)
            for top, left, side in crop_grid(photo.shape[1], photo.shape[2], fractions, overlap)
        ]

    def __len__(self) -> int:
        return len(self.crops)

    def picture(self, index: int) -> torch.Tensor:
        """Crop ``index`` as a picture ``(3, size, size)`` in [0, 1]."""
        crop = self.crops[index]
        window = self.photos[crop.photo][:, crop.top : crop.top + crop.side, crop.left : crop.left + crop.side]
        resized = torch.nn.functional.interpolate(
            window[None].float() / 255,
            size=(self.size, self.size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        return resized[0].clamp(0, 1)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.normalise(self.picture(index)[None])[0]

    def source(self, index: int) -> str:
        """Which photo crop ``index`` comes from, and where: ``"coffee 120,80 +200"``."""
        crop = self.crops[index]
        return f"{self.names[crop.photo]} {crop.top},{crop.left} +{crop.side}"
