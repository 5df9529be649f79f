"""Many views of a few real photos whose landmarks follow exactly: the data of the part-location benchmark (issue 13).

The photos ship with scikit-image (``skimage.data``); their landmarks (eyes, nose, ...) were annotated by hand for this
project and are kept in ``benchmarks/data/photo_landmarks.json`` (row, column in the photo's own pixels). Each view is
one affine map of the photo: a random scale, a small rotation, an optional horizontal flip and a random shift, drawn
from a seeded generator, sampled bilinearly onto a ``size`` x ``size`` picture. The same map carries every landmark,
so its position in the view is exact (a landmark that leaves the picture becomes NaN: not visible). A flipped view
keeps each landmark's identity: the cat's own left eye stays ``left_eye`` wherever the flip puts it.

>>> views = photo_views("chelsea", count=2, size=64, seed=0)
>>> views.pictures.shape, views.landmarks.shape, views.names
(torch.Size([2, 3, 64, 64]), torch.Size([2, 3, 2]), ('left_eye', 'right_eye', 'nose'))
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["LANDMARKS", "PhotoViews", "photo_views", "view_maps"]

LANDMARKS = Path(__file__).resolve().parent / "data" / "photo_landmarks.json"


@dataclass(frozen=True)
class PhotoViews:
    """Views of one photo: pictures ``(V, 3, S, S)`` in [0, 1], landmarks ``(V, L, 2)`` (row, column in view pixels;
    NaN where outside), the landmarks' names, and the maps ``(V, 2, 3)`` from view to photo pixels."""

    pictures: torch.Tensor
    landmarks: torch.Tensor
    names: tuple[str, ...]
    maps: torch.Tensor


def view_maps(
    count: int, size: int, height: int, width: int, seed: int, *, scale: tuple[float, float] = (0.5, 1.0),
    degrees: float = 15.0, flip: bool = True,
) -> torch.Tensor:  # fmt: skip
    """``(count, 2, 3)`` affine maps ``[row, col] = A @ [view_row, view_col, 1]`` from view pixels to photo pixels.

    A view shows a square of side ``scale * min(height, width)`` (scale drawn uniformly), rotated by up to
    ``degrees``, mirrored left-right with probability 1/2 when ``flip``, centred at a uniformly drawn point that keeps
    the unrotated square inside the photo.
    """
    generator = torch.Generator().manual_seed(seed)
    draws = torch.rand(count, 5, generator=generator, dtype=torch.float64)
    maps = torch.zeros(count, 2, 3, dtype=torch.float64)
    for v, (s, a, f, u, w) in enumerate(draws.tolist()):
        side = (scale[0] + (scale[1] - scale[0]) * s) * min(height, width)
        angle = math.radians((2 * a - 1) * degrees)
        mirror = -1.0 if flip and f < 0.5 else 1.0
        centre_row = side / 2 + u * (height - side)
        centre_col = side / 2 + w * (width - side)
        step = side / size  # photo pixels per view pixel
        cos, sin = math.cos(angle) * step, math.sin(angle) * step
        # view offsets from its centre (dr, dc), the column mirrored, rotated, scaled, then moved to the centre
        linear = torch.tensor([[cos, -sin * mirror], [sin, cos * mirror]], dtype=torch.float64)
        middle = torch.tensor([(size - 1) / 2, (size - 1) / 2], dtype=torch.float64)
        maps[v, :, :2] = linear
        maps[v, :, 2] = torch.tensor([centre_row, centre_col], dtype=torch.float64) - linear @ middle
    return maps


def _sample(photo: torch.Tensor, maps: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear samples of ``photo`` (3, H, W) at each view pixel's photo position (zeros outside)."""
    height, width = photo.shape[-2:]
    grid_row, grid_col = torch.meshgrid(
        torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij"
    )
    points = torch.stack([grid_row, grid_col, torch.ones_like(grid_row)], -1).reshape(-1, 3)  # (S*S, 3)
    photo_points = torch.einsum("vij,pj->vpi", maps, points)  # (V, S*S, 2) rows, cols in photo pixels
    # grid_sample wants x (column) then y (row), each in [-1, 1] with align_corners=True mapping to pixel centres
    grid = torch.stack(
        [photo_points[..., 1] / (width - 1) * 2 - 1, photo_points[..., 0] / (height - 1) * 2 - 1], -1
    ).reshape(len(maps), size, size, 2)
    batch = photo[None].expand(len(maps), -1, -1, -1).double()
    return torch.nn.functional.grid_sample(batch, grid, mode="bilinear", align_corners=True).float()


def photo_views(
    name: str, *, count: int = 64, size: int = 224, seed: int = 0, landmarks_file: Path = LANDMARKS
) -> PhotoViews:
    """``count`` views of the scikit-image photo ``name`` with its hand-annotated landmarks (see the module)."""
    import skimage.data

    record = json.loads(landmarks_file.read_text(encoding="utf-8"))["photos"][name]
    photo = torch.from_numpy(getattr(skimage.data, name)().copy()).permute(2, 0, 1).float() / 255
    height, width = photo.shape[-2:]
    if [height, width] != record["size"]:
        raise ValueError(f"{name} is {height}x{width} here but was annotated at {record['size']}")
    names = tuple(record["landmarks"])
    points = torch.tensor([record["landmarks"][n] for n in names], dtype=torch.float64)  # (L, 2) photo pixels
    maps = view_maps(count, size, height, width, seed)
    linear, offset = maps[:, :, :2], maps[:, :, 2]
    # photo = linear @ view + offset  ->  view = linear^-1 (photo - offset)
    inside = torch.linalg.solve(linear[:, None], (points[None] - offset[:, None])[..., None])[..., 0]
    outside = ((inside < 0) | (inside > size - 1)).any(-1)
    inside[outside] = math.nan
    return PhotoViews(_sample(photo, maps, size), inside.float(), names, maps.float())
