"""Pictures of explanations: heatmaps as images, and one figure per sample with its top concepts.

:func:`heatmap_image` needs only Pillow. :func:`concept_figure` and :func:`save_concept_figures` draw with matplotlib,
an optional dependency (``pip install glocal[viz]``) imported when they are first called. They build
:class:`matplotlib.figure.Figure` objects directly and render them with the Agg canvas, so pyplot's global state
(backend, current figure, open-figure registry) is never touched.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from ..attribution.explain import ConceptExplanation
from .images import heatmap_image, require_matplotlib

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..structure.attribution_graph import ConceptGraph
    from ..structure.paths import ConceptPath

__all__ = [
    "GRAPH_MAX_WIDTH",
    "concept_figure",
    "figure_size",
    "graph_figure",
    "path_figure",
    "save_concept_figures",
]

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


GRAPH_MAX_WIDTH = 2000
"""Widest graph picture in pixels (at the figure's dpi) before :func:`graph_figure` wraps the tree into panels."""

SHRINK = 0.75
"""The smallest node size, as a fraction of the ``size`` asked for, that :func:`graph_figure` draws a tree with before
it wraps the tree into panels."""

_SHARE_NOTE = (
    "Each node: layer:concept, its conditional heatmap (red: for, blue: against the target), and its relevance as a "
    "signed % of its parent's. Shares are signed, so when some children count against the parent, the others can add "
    "up to more than 100 %."
)


def _children(graph: ConceptGraph) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {node.id: [] for node in graph.nodes}
    for edge in graph.edges:
        children[edge.parent].append(edge.child)
    return children


def _slots(children: Mapping[str, list[str]], top: str) -> tuple[dict[str, float], float]:
    """A slot (leaf position, parents centred over their children) for ``top`` and its descendants, and the number
    of leaf slots they take."""
    slots: dict[str, float] = {}
    next_slot = 0.0

    def place(node_id: str) -> float:
        nonlocal next_slot
        if not children[node_id]:
            slots[node_id] = next_slot
            next_slot += 1.0
        else:
            below = [place(child) for child in children[node_id]]
            slots[node_id] = (below[0] + below[-1]) / 2
        return slots[node_id]

    place(top)
    return slots, next_slot


@dataclass(frozen=True)
class _Layout:
    """Node centres in inches from the top left of a ``width`` by ``height`` inch figure; ``across`` edges run left
    to right (wrapped panels), the others top down; ``panels`` are ``(left, top, width, height)`` frames."""

    width: float
    height: float
    centres: dict[str, tuple[float, float]]
    across: frozenset[str]
    panels: tuple[tuple[float, float, float, float], ...] = ()


def _tree_layout(graph: ConceptGraph, size: float, margin: float, header: float) -> _Layout:
    """The root on top, each level one row below, leaves side by side."""
    slots, count = _slots(_children(graph), graph.root.id)
    centres = {
        node.id: ((margin + slots[node.id] + 0.5) * size, header + node.depth * size * 1.45 + size * 0.6)
        for node in graph.nodes
    }
    levels = max(node.depth for node in graph.nodes) + 1
    return _Layout(
        width=max((count + margin) * size, 3.0),
        height=header + levels * size * 1.45 + 0.1,
        centres=centres,
        across=frozenset(),
    )


def _wrapped_layout(graph: ConceptGraph, size: float, margin: float, header: float, max_width: float) -> _Layout:
    """The root on top; below, one panel per child of the root with that child's subtree drawn left to right
    (levels as columns, leaves stacked), panels packed in rows no wider than ``max_width`` inches."""
    children = _children(graph)
    depth = {node.id: node.depth for node in graph.nodes}
    column, row, gap = size * 1.35, size * 1.1, 0.25
    levels = max(depth.values())
    panel_width = levels * column
    per_row = max(1, int((max_width - gap) // (panel_width + gap)))
    heads = children[graph.root.id]
    root_row = size * 1.2
    centres: dict[str, tuple[float, float]] = {}
    panels: list[tuple[float, float, float, float]] = []
    top = header + root_row
    for first in range(0, len(heads), per_row):
        group = heads[first : first + per_row]
        height = 0.0
        for position, head in enumerate(group):
            slots, count = _slots(children, head)
            left = gap + position * (panel_width + gap)
            for node_id, slot in slots.items():
                centres[node_id] = (left + (depth[node_id] - 0.5) * column, top + 0.3 + (slot + 0.5) * row)
            panels.append((left - 0.1, top, panel_width + 0.1, count * row + 0.3))
            height = max(height, count * row + 0.3)
        top += height + gap
    width = max(gap + min(per_row, max(len(heads), 1)) * (panel_width + gap), (margin + 1) * size + 0.5, 3.0)
    centres[graph.root.id] = (width / 2 + (margin * size / 2), header + size * 0.6)
    across = frozenset(child for head in heads for child in _descendants(children, head))
    return _Layout(width=width, height=top + 0.1, centres=centres, across=across, panels=tuple(panels))


def _descendants(children: Mapping[str, list[str]], top: str) -> list[str]:
    found, stack = [], list(children[top])
    while stack:
        node_id = stack.pop()
        found.append(node_id)
        stack.extend(children[node_id])
    return found


def graph_figure(
    graph: ConceptGraph,
    *,
    inputs: torch.Tensor | None = None,
    size: float = 1.6,
    cmap: str = "bwr",
    percentile: float = 99.5,
    dpi: float = 100.0,
    max_width: int | None = GRAPH_MAX_WIDTH,
) -> Figure:
    """An attribution graph drawn as a tree, every node with its conditional heatmap.

    A node is titled ``layer:concept`` with its signed share of its parent's relevance; lines join children to
    parents, thicker for a larger share of the parent (red for a positive share, blue for a negative one). Nodes
    without a heatmap (``attribution_graph(..., heatmaps=False)``) are drawn as labelled boxes.

    While the tree fits in ``max_width`` pixels it is drawn top down: the root on top, each level one row below
    (with nodes down to :data:`SHRINK` times ``size`` where that makes it fit). A wider tree is wrapped: the root on
    top and one framed panel per child of the root, holding that child (left) and its descendants (to the right,
    leaves stacked), the panels packed in rows no wider than ``max_width``; the picture then grows in height, never
    beyond ``max_width`` in width (unless one panel alone is wider).

    Parameters
    ----------
    graph
        The result of :func:`~glocal.attribution_graph`.
    inputs
        The sample ``(C, H, W)`` or ``(1, C, H, W)`` in [0, 1], drawn left of the root; optional.
    size
        Inches per node.
    cmap, percentile
        As for :func:`heatmap_image`.
    dpi
        Resolution the figure is drawn and saved at.
    max_width
        The widest picture in pixels before the tree is wrapped into panels; ``None``: never wrap.
    """
    figure_class, canvas_class = require_matplotlib()
    margin = 1.0 if inputs is not None else 0.0
    slots = _slots(_children(graph), graph.root.id)[1] + margin
    limit = math.inf if max_width is None else max_width / dpi
    if slots * size > limit >= slots * size * SHRINK:  # a little too wide: smaller nodes rather than panels
        size = limit / slots
    tree_width = slots * size
    wrapped = tree_width > limit
    note_width = max(min(tree_width, limit), 6.0)
    text = _SHARE_NOTE + (
        " Wrapped to fit: one panel per child of the root, its descendants to its right." if wrapped else ""
    )
    note = textwrap.fill(text, int(note_width * 15))
    header = 0.2 + 0.14 * (note.count("\n") + 1)
    if wrapped:
        layout = _wrapped_layout(graph, size, margin, header, limit)
    else:
        layout = _tree_layout(graph, size, margin, header)
    figure = figure_class(figsize=(layout.width, layout.height), dpi=dpi)
    canvas_class(figure)
    fig_w, fig_h = layout.width, layout.height
    figure.text(0.5, 1 - 0.1 / fig_h, note, fontsize=7.5, color="#444444", ha="center", va="top")
    box = 0.78 * size  # node picture size, inches
    title = 0.32  # inches of title above a node picture

    def point(node_id: str) -> tuple[float, float]:
        x, y = layout.centres[node_id]
        return x / fig_w, 1 - y / fig_h

    share_of_parent = {edge.child: edge.share for edge in graph.edges}
    lines = figure.add_axes((0, 0, 1, 1))
    lines.set_xlim(0, 1)
    lines.set_ylim(0, 1)
    lines.set_axis_off()
    for left, top, width, height in layout.panels:
        lines.add_patch(_rectangle(left / fig_w, 1 - (top + height) / fig_h, width / fig_w, height / fig_h, "#f3f3f3"))
    for edge in graph.edges:
        if edge.child not in layout.centres or edge.parent not in layout.centres:
            continue
        if edge.child in layout.across:
            (x0, y0), (x1, y1) = point(edge.parent), point(edge.child)
            xs, ys = [x0 + box / 2 / fig_w, x1 - box / 2 / fig_w], [y0, y1]
        elif layout.panels and graph.node(edge.parent).depth == 0:
            continue  # wrapped: the panels' heads are the root's children (their titles give the shares)
        else:
            (x0, y0), (x1, y1) = point(edge.parent), point(edge.child)
            xs, ys = [x0, x1], [y0 - box / 2 / fig_h, y1 + box / 2 / fig_h + title / fig_h]
        lines.plot(
            xs,
            ys,
            color="#c0392b" if edge.share >= 0 else "#2c6fbb",
            linewidth=0.6 + 5.0 * min(abs(edge.share), 1.0),
            alpha=0.7,
            solid_capstyle="round",
        )
    for node in graph.nodes:
        x, y = point(node.id)
        axes = figure.add_axes((x - box / 2 / fig_w, y - box / 2 / fig_h, box / fig_w, box / fig_h))
        axes.set_xticks([])
        axes.set_yticks([])
        if node.heatmap is not None:
            axes.imshow(heatmap_image(node.heatmap, cmap=cmap, percentile=percentile), interpolation="nearest")
        else:
            axes.set_facecolor("#f4f4f4")
        if node.depth:
            text = f"{node.layer}:{node.concept}\n{share_of_parent[node.id]:+.1%} of parent"
        else:
            text = f"{node.layer}:{node.concept}\nroot, relevance {node.relevance:.3g}"
        axes.set_title(text, fontsize=7 if node.depth else 9, pad=2)
    if inputs is not None:
        array = _input_array(inputs)
        x, y = point(graph.root.id)
        axes = figure.add_axes((x - (box / 2 + size * 1.1) / fig_w, y - box / 2 / fig_h, box / fig_w, box / fig_h))
        axes.imshow(array, cmap="gray" if array.ndim == 2 else None)
        axes.set_title(f"input (target {graph.target})", fontsize=8, pad=2)
        axes.set_axis_off()
    return figure


def _rectangle(left: float, bottom: float, width: float, height: float, colour: str) -> Any:
    from matplotlib.patches import FancyBboxPatch

    return FancyBboxPatch(
        (left, bottom), width, height, boxstyle="round,pad=0,rounding_size=0.004", facecolor=colour, edgecolor="#d0d0d0"
    )


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
    figure_class, canvas_class = require_matplotlib()
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
        if step.heatmap is not None:
            axes.imshow(heatmap_image(step.heatmap, cmap=cmap, percentile=percentile), interpolation="nearest")
        else:  # a path loaded from JSON saved without heatmaps
            axes.set_facecolor("#f4f4f4")
        share = "of the layer" if index == 0 else "of the step above"
        mark = " (followed)" if step.followed else ""
        axes.set_title(f"{step.layer}:{step.concept}{mark}\n{step.share:+.1%} {share}", fontsize=8)
        axes.set_xticks([])
        axes.set_yticks([])
        below = "\n".join(f"{c.layer}:{c.concept} {c.share:+.1%}" for c in step.candidates[:candidates])
        axes.set_xlabel(f"next:\n{below}" if below else "", fontsize=7)
    return figure
