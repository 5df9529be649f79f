"""Reference grids: a concept's rendered reference images tiled into one picture (PIL only, no matplotlib).

The references themselves are computed in :mod:`glocal.index.references`; :meth:`~glocal.Reference.grid` draws with
:func:`reference_grid`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw

__all__ = ["reference_grid"]


def reference_grid(
    images: Sequence[Image.Image],
    *,
    columns: int = 4,
    title: str | None = None,
    margin: int = 4,
    background: tuple[int, int, int] = (255, 255, 255),
    empty_size: int = 64,
) -> Image.Image:
    """Tile images (of any sizes) row by row into one RGB image, with an optional title strip on top.

    Without images (a concept without references) the result is one empty grey cell of ``empty_size`` pixels
    marked "none", so that a figure keeps its layout.
    """
    if columns < 1:
        raise ValueError(f"columns must be a positive number, got {columns}")
    if not images:
        cell = Image.new("RGB", (empty_size, empty_size), (200, 200, 200))
        ImageDraw.Draw(cell).text((4, empty_size // 2 - 6), "none", fill=(90, 90, 90))
        images = [cell]
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    cell_width = max(image.width for image in images)
    cell_height = max(image.height for image in images)
    title_height = 18 if title else 0
    width = columns * cell_width + (columns + 1) * margin
    height = title_height + rows * cell_height + (rows + 1) * margin
    grid = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((margin, 3), title, fill=(0, 0, 0))
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        x = margin + column * (cell_width + margin) + (cell_width - image.width) // 2
        y = title_height + margin + row * (cell_height + margin) + (cell_height - image.height) // 2
        grid.paste(image.convert("RGB"), (x, y))
    return grid
