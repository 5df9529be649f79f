"""Concept figures: one figure per sample with its input, its heatmap and its top concepts' conditional heatmaps.

:func:`concept_figure` and :func:`save_concept_figures` draw a :class:`~glocal.ConceptExplanation` with matplotlib,
an optional dependency (``pip install glocal[viz]``) imported when they are first called. They build
:class:`matplotlib.figure.Figure` objects directly and render them with the Agg canvas, so pyplot's global state
(backend, current figure, open-figure registry) is never touched. :func:`figure_size` says how large such a figure is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from ..attribution.explain import ConceptExplanation
from .images import heatmap_image, require_matplotlib

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["HEADER_INCHES", "TITLE_INCHES", "concept_figure", "figure_size", "save_concept_figures"]


Images = torch.Tensor | Sequence[Image.Image] | Sequence[np.ndarray]

HEADER_INCHES = 0.55
"""Height of the figure header (the class names and the layer), in inches."""
TITLE_INCHES = 0.45
"""Height of the title strip above each row of panels, in inches."""


def _image_array(images: Images, sample: int) -> np.ndarray:
    """Sample ``sample`` of ``images`` as an ``(H, W, 3)`` float array in [0, 1]."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must be a batch shaped (N, 3, H, W) (or (N, 1, H, W)) with values in [0, 1], got shape "
                f"{tuple(images.shape)}"
            )
        array = images[sample].detach().cpu().float().permute(1, 2, 0).numpy()
        if array.shape[2] == 1:
            array = np.repeat(array, 3, axis=2)
        return np.clip(array, 0.0, 1.0)
    item = images[sample]
    if isinstance(item, Image.Image):
        return np.asarray(item.convert("RGB"), dtype=np.float64) / 255.0
    array = np.asarray(item)
    if array.dtype == np.uint8:
        array = array / 255.0
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.clip(array.astype(np.float64), 0.0, 1.0)


def _class_name(index: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= index < len(class_names):
        return f"{class_names[index]} (class {index})"
    return f"class {index}"


def figure_size(panels: int, columns: int, aspect: float = 1.0, panel_size: float = 2.5) -> tuple[float, float]:
    """Width and height in inches of a :func:`concept_figure` with ``panels`` panels.

    Parameters
    ----------
    panels
        Number of pictures (the image, the heatmap and one per concept).
    columns
        Most panels per row.
    aspect
        Height over width of one picture.
    panel_size
        Width of one panel in inches.

    Examples
    --------
    >>> figure_size(panels=8, columns=4)   # two rows of four square panels, plus titles and the header
    (10.0, 6.45)
    """
    columns = max(1, min(columns, panels))
    rows = math.ceil(panels / columns)
    width = columns * panel_size
    height = HEADER_INCHES + rows * (panel_size * aspect + TITLE_INCHES)
    return round(width, 6), round(height, 6)


def concept_figure(
    explanation: ConceptExplanation,
    images: Images,
    *,
    class_names: Sequence[str] | None = None,
    sample: int = 0,
    columns: int = 4,
    panel_size: float = 2.5,
    cmap: str = "bwr",
    level: float = 1.0,
    percentile: float = 99.5,
    dpi: float = 100.0,
) -> Figure:
    """One sample's explanation: the input, its plain heatmap and each top concept's conditional heatmap.

    Each concept panel is titled with the concept id and its relevance share in percent (signed: a negative share
    speaks against the explained class); the header gives the classes and the selected concepts' shares together.
    Every heatmap is scaled on its own, symmetrically around zero, so the panels show where each concept's relevance
    lies, and the shares how much there is.

    Parameters
    ----------
    explanation
        The result of a :class:`~glocal.ConceptExplainer` call.
    images
        The inputs as people see them: ``(N, 3, H, W)`` tensor with values in [0, 1] (not normalised for the model),
        or a list of PIL images or ``(H, W, 3)`` arrays.
    class_names
        Names of the model's outputs, for the header (e.g. the ImageNet categories).
    sample
        Which sample of the batch to draw.
    columns
        Most panels per row.
    panel_size
        Width of one panel in inches.
    cmap, level, percentile
        Colour map and scaling of the heatmaps, as for :func:`heatmap_image`. LRP heatmaps of deep models often
        have a few extreme pixels; scaling by the 99.5th percentile of absolute relevance keeps the rest visible.
    dpi
        Resolution the figure is saved at.

    Returns
    -------
    matplotlib.figure.Figure
        ``2 + K`` axes for ``K`` concepts, in reading order; ``figure_size(2 + K, columns, H / W, panel_size)``
        inches.
    """
    figure_class, canvas_class = require_matplotlib()
    n = explanation.heatmap.shape[0]
    if not 0 <= sample < n:
        raise IndexError(f"sample {sample} is out of range: the explanation has {n} samples (0 to {n - 1})")
    image = _image_array(images, sample)
    heatmap = explanation.heatmap[sample]
    ids = explanation.concept_ids[sample]
    shares = explanation.concept_shares[sample]
    panels = 2 + len(ids)
    height, width = heatmap.shape[-2:]
    aspect = height / width
    size = figure_size(panels, columns, aspect, panel_size)
    columns = max(1, min(columns, panels))
    rows = math.ceil(panels / columns)

    figure = figure_class(figsize=size, dpi=dpi)
    canvas_class(figure)
    predicted = int(explanation.prediction[sample].argmax())
    explained = int(explanation.targets[sample])
    if explained == predicted:
        header = f"predicted and explained: {_class_name(explained, class_names)}"
    else:
        header = f"predicted: {_class_name(predicted, class_names)}    explained: {_class_name(explained, class_names)}"
    together = f"; these {len(ids)} together: {float(shares.sum()):+.1%}" if ids else ""
    subheader = f"concepts (channels) of layer {explanation.layer!r} with their share of its relevance{together}"
    figure.suptitle(f"{header}\n{subheader}", fontsize=11, y=1 - 0.08 / size[1])
    top = 1 - (HEADER_INCHES + TITLE_INCHES) / size[1]
    figure.subplots_adjust(
        left=0.01, right=0.99, bottom=0.01, top=top, wspace=0.04, hspace=TITLE_INCHES / (panel_size * aspect)
    )

    pictures: list[tuple[Any, str]] = [
        (image, "input"),
        (heatmap_image(heatmap, cmap=cmap, level=level, percentile=percentile), "heatmap (all concepts)"),
    ]
    for k, (concept_id, share) in enumerate(zip(ids, shares.tolist(), strict=False)):
        concept_map = heatmap_image(
            explanation.concept_heatmaps[sample, k], cmap=cmap, level=level, percentile=percentile
        )
        pictures.append((concept_map, f"concept {concept_id}\n{share:+.1%}"))
    for index, (picture, title) in enumerate(pictures):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(picture, aspect="equal", interpolation="nearest" if index else "antialiased")
        axes.set_title(title, fontsize=9)
        axes.set_axis_off()
    return figure


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "class"


def save_concept_figures(
    explanation: ConceptExplanation,
    images: Images,
    out_dir: str | Path,
    class_names: Sequence[str] | None = None,
    *,
    names: Sequence[str] | None = None,
    **figure_options: Any,
) -> list[Path]:
    """Write one :func:`concept_figure` PNG per sample to ``out_dir`` (created if missing).

    Parameters
    ----------
    explanation, images, class_names
        As for :func:`concept_figure`.
    out_dir
        Folder for the PNGs.
    names
        File stems, one per sample (default: ``"{sample:03d}-{explained class}"``).
    **figure_options
        Passed on to :func:`concept_figure` (``columns``, ``panel_size``, ``cmap``, ``level``, ``percentile``, ``dpi``).

    Returns
    -------
    list of pathlib.Path
        The files written, in sample order.
    """
    n = explanation.heatmap.shape[0]
    if names is not None and len(names) != n:
        raise ValueError(f"got {len(names)} names for {n} samples; give one file stem per sample")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for sample in range(n):
        if names is not None:
            stem = names[sample]
        else:
            explained = int(explanation.targets[sample])
            known = class_names is not None and 0 <= explained < len(class_names)
            stem = f"{sample:03d}-{_slug(class_names[explained] if class_names and known else str(explained))}"
        figure = concept_figure(explanation, images, class_names=class_names, sample=sample, **figure_options)
        path = out / f"{stem}.png"
        figure.savefig(path, dpi=figure.dpi)
        paths.append(path)
    return paths
