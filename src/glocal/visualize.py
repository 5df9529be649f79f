"""Pictures of explanations: heatmaps as images, and one figure per sample with its top concepts.

:func:`heatmap_image` needs only Pillow. :func:`concept_figure` and :func:`save_concept_figures` draw with matplotlib,
an optional dependency (``pip install glocal[viz]``) imported when they are first called. They build
:class:`matplotlib.figure.Figure` objects directly and render them with the Agg canvas, so pyplot's global state
(backend, current figure, open-figure registry) is never touched.

>>> import torch
>>> heatmap_image(torch.tensor([[-1.0, 0.0, 1.0]])).getpixel((1, 0))   # zero is the colour map's centre: white
(255, 255, 255)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import zennit.image
from PIL import Image

from .explain import ConceptExplanation

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .attribution_graph import ConceptGraph
    from .paths import ConceptPath

__all__ = ["concept_figure", "figure_size", "graph_figure", "heatmap_image", "path_figure", "save_concept_figures"]

Images = torch.Tensor | Sequence[Image.Image] | Sequence[np.ndarray]

HEADER_INCHES = 0.55
"""Height of the figure header (the class names and the layer), in inches."""
TITLE_INCHES = 0.45
"""Height of the title strip above each row of panels, in inches."""


def _require_matplotlib() -> Any:
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
    figure_class, canvas_class = _require_matplotlib()
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


def _tree_positions(graph: ConceptGraph) -> dict[str, tuple[float, int]]:
    """x (leaf slots, parents centred over their children) and depth of every node of a tree-shaped graph."""
    children: dict[str, list[str]] = {node.id: [] for node in graph.nodes}
    for edge in graph.edges:
        children[edge.parent].append(edge.child)
    positions: dict[str, tuple[float, int]] = {}
    next_slot = [0.0]

    def place(node_id: str, depth: int) -> float:
        if not children[node_id]:
            x = next_slot[0]
            next_slot[0] += 1.0
        else:
            xs = [place(child, depth + 1) for child in children[node_id]]
            x = (xs[0] + xs[-1]) / 2
        positions[node_id] = (x, depth)
        return x

    place(graph.root.id, 0)
    return positions


def graph_figure(
    graph: ConceptGraph,
    *,
    inputs: torch.Tensor | None = None,
    size: float = 1.6,
    cmap: str = "bwr",
    percentile: float = 99.5,
    dpi: float = 100.0,
) -> Figure:
    """An attribution graph drawn as a tree: the root on top, each level below, every node with its heatmap.

    A node is titled ``layer:concept`` with its share of its parent's relevance; lines join children to parents,
    thicker for a larger share of the parent. Nodes without a heatmap (``attribution_graph(..., heatmaps=False)``)
    are drawn as labelled boxes.

    Parameters
    ----------
    graph
        The result of :func:`~glocal.attribution_graph.attribution_graph`.
    inputs
        The sample ``(C, H, W)`` or ``(1, C, H, W)`` in [0, 1], drawn left of the root; optional.
    size
        Inches per node.
    cmap, percentile
        As for :func:`heatmap_image`.
    dpi
        Resolution the figure is saved at.
    """
    figure_class, canvas_class = _require_matplotlib()
    positions = _tree_positions(graph)
    slots = max(x for x, _ in positions.values()) + 1
    levels = max(depth for _, depth in positions.values()) + 1
    margin = 1.0 if inputs is not None else 0.0
    width_in = (slots + margin) * size
    height_in = levels * size * 1.45 + 0.5
    figure = figure_class(figsize=(max(width_in, 3.0), height_in), dpi=dpi)
    canvas_class(figure)
    fig_w, fig_h = figure.get_size_inches()
    box = 0.78 * size  # node picture size, inches

    def centre(node_id: str) -> tuple[float, float]:
        x, depth = positions[node_id]
        return ((margin + x + 0.5) * size / fig_w, 1 - (0.5 + depth * size * 1.45 + size * 0.6) / fig_h)

    share_of_parent = {edge.child: edge.share for edge in graph.edges}
    lines = figure.add_axes((0, 0, 1, 1))
    lines.set_xlim(0, 1)
    lines.set_ylim(0, 1)
    lines.set_axis_off()
    for edge in graph.edges:
        (x0, y0), (x1, y1) = centre(edge.parent), centre(edge.child)
        lines.plot(
            [x0, x1],
            [y0 - box / 2 / fig_h, y1 + box / 2 / fig_h + 0.32 / fig_h],
            color="#c0392b" if edge.share >= 0 else "#2c6fbb",
            linewidth=0.6 + 5.0 * min(abs(edge.share), 1.0),
            alpha=0.7,
            solid_capstyle="round",
        )
    for node in graph.nodes:
        x, y = centre(node.id)
        axes = figure.add_axes((x - box / 2 / fig_w, y - box / 2 / fig_h, box / fig_w, box / fig_h))
        axes.set_xticks([])
        axes.set_yticks([])
        if node.heatmap is not None:
            axes.imshow(heatmap_image(node.heatmap, cmap=cmap, percentile=percentile), interpolation="nearest")
        else:
            axes.set_facecolor("#f4f4f4")
        if node.depth:
            title = f"{node.layer}:{node.concept}\n{share_of_parent[node.id]:+.1%} of parent"
        else:
            title = f"{node.layer}:{node.concept}\nroot, relevance {node.relevance:.3g}"
        axes.set_title(title, fontsize=7 if node.depth else 9, pad=2)
    if inputs is not None:
        image = inputs.detach().cpu()
        image = image[0] if image.dim() == 4 else image
        array = image.permute(1, 2, 0).clamp(0, 1).numpy()
        if array.shape[2] == 1:
            array = array[:, :, 0]
        x, y = centre(graph.root.id)
        axes = figure.add_axes((x - (box / 2 + size * 1.1) / fig_w, y - box / 2 / fig_h, box / fig_w, box / fig_h))
        axes.imshow(array, cmap="gray" if array.ndim == 2 else None)
        axes.set_title(f"input (target {graph.target})", fontsize=8, pad=2)
        axes.set_axis_off()
    return figure


def _input_array(inputs: torch.Tensor) -> np.ndarray:
    image = inputs.detach().cpu().float()
    image = image[0] if image.dim() == 4 else image
    array = image.permute(1, 2, 0).clamp(0, 1).numpy()
    return array[:, :, 0] if array.shape[2] == 1 else array


def path_figure(
    path: ConceptPath,
    *,
    inputs: torch.Tensor | None = None,
    size: float = 2.2,
    candidates: int = 3,
    cmap: str = "bwr",
    percentile: float = 99.5,
    dpi: float = 100.0,
) -> Figure:
    """A concept path as a strip: the input, then each step's conditional heatmap, left to right.

    Each step is titled ``layer:concept`` with its share of the previous step's relevance (followed steps marked);
    below it, the step's top ``candidates`` next concepts with their shares.
    """
    figure_class, canvas_class = _require_matplotlib()
    panels = len(path.steps) + (inputs is not None)
    figure = figure_class(figsize=(panels * size, size * 1.45), dpi=dpi)
    canvas_class(figure)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.2, top=0.8, wspace=0.08)
    figure.suptitle(f"concept path for target {path.target}: {path}", fontsize=10)
    column = 1
    if inputs is not None:
        axes = figure.add_subplot(1, panels, column)
        array = _input_array(inputs)
        axes.imshow(array, cmap="gray" if array.ndim == 2 else None)
        axes.set_title("input", fontsize=9)
        axes.set_axis_off()
        column += 1
    for index, step in enumerate(path.steps):
        axes = figure.add_subplot(1, panels, column + index)
        axes.imshow(heatmap_image(step.heatmap, cmap=cmap, percentile=percentile), interpolation="nearest")
        share = "of the layer" if index == 0 else "of the step above"
        mark = " (followed)" if step.followed else ""
        axes.set_title(f"{step.layer}:{step.concept}{mark}\n{step.share:+.1%} {share}", fontsize=8)
        axes.set_xticks([])
        axes.set_yticks([])
        below = "\n".join(f"{c.layer}:{c.concept} {c.share:+.1%}" for c in step.candidates[:candidates])
        axes.set_xlabel(f"next:\n{below}" if below else "", fontsize=7)
    return figure
