"""Heatmaps as images, and matplotlib's figure API for the drawings that need it.

:func:`heatmap_image` needs only Pillow. matplotlib is an optional dependency (``pip install glocal[viz]``), imported
by :func:`require_matplotlib` when a figure is first drawn; figures are built as :class:`matplotlib.figure.Figure`
objects and rendered with the Agg canvas, so pyplot's global state is never touched.

>>> import torch
>>> heatmap_image(torch.tensor([[-1.0, 0.0, 1.0]])).getpixel((1, 0))   # zero is the colour map's centre: white
(255, 255, 255)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import zennit.image
from PIL import Image

__all__ = ["heatmap_image", "require_matplotlib"]


def require_matplotlib() -> Any:
    """Import matplotlib's object-oriented figure API, or say how to install it."""
    try:
        import matplotlib.figure
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError as error:
        raise ImportError(
            "glocal's figures need matplotlib, an optional dependency; install it with `pip install glocal[viz]`"
        ) from error
    return matplotlib.figure.Figure, FigureCanvasAgg


def heatmap_image(
    heatmap: torch.Tensor | np.ndarray,
    *,
    symmetric: bool = True,
    cmap: str = "bwr",
    level: float = 1.0,
    vmax: float | None = None,
    percentile: float = 100.0,
) -> Image.Image:
    """A relevance heatmap as an RGB image.

    Parameters
    ----------
    heatmap
        ``(H, W)`` relevance per pixel.
    symmetric
        Scale by the largest absolute value, so that 0 lands on the centre of the colour map (white for ``"bwr"``),
        positive relevance on its upper half (red) and negative on its lower half (blue). Otherwise the minimum maps
        to the lowest and the maximum to the highest colour.
    cmap
        A zennit colour map name (``"bwr"``, ``"coldnhot"``, ``"france"``, ...; see :data:`zennit.image.CMAPS`) or a
        zennit colour map code such as ``"00f,80:fff,f00"``.
    level
        The colour map's level (see :func:`zennit.image.palette`): above 1 saturates sooner.
    vmax
        With ``symmetric``, the absolute value that gets the fullest colour (default: the largest in ``heatmap``);
        use one value for several heatmaps to compare them on one scale.
    percentile
        Without ``vmax``, scale by this percentile of the absolute values instead of the largest one (e.g. 99.5),
        so that a few extreme pixels do not wash out the rest; values beyond it get the fullest colour.

    Returns
    -------
    PIL.Image.Image
        ``W`` by ``H`` RGB image. A heatmap that is zero everywhere gives the centre colour everywhere.

    Examples
    --------
    >>> image = heatmap_image(torch.tensor([[-2.0, 0.0, 2.0]]))
    >>> [image.getpixel((x, 0)) for x in range(3)]   # blue, white, red
    [(0, 0, 255), (255, 255, 255), (255, 0, 0)]
    """
    array = heatmap.detach().cpu().double().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap)
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(
            f"a heatmap has shape (H, W), got shape {tuple(array.shape)}; pick one sample, e.g. explanation.heatmap[0]"
        )
    if not np.isfinite(array).all():
        raise ValueError("the heatmap contains NaN or infinite values")
    if symmetric:
        bound = float(np.percentile(np.abs(array), percentile)) if vmax is None else float(vmax)
        if bound <= 0:
            bound = 1.0  # an all-zero map: everything at the centre
        scaled = (array / bound + 1.0) / 2.0
    else:
        low, high = float(np.percentile(array, 100 - percentile)), float(np.percentile(array, percentile))
        scaled = (array - low) / (high - low) if high > low else np.full_like(array, 0.5)
    indices = np.rint(np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)
    colours = np.asarray(zennit.image.palette(cmap, level), dtype=np.uint8).reshape(256, 3)
    return Image.fromarray(np.ascontiguousarray(colours[indices]))
