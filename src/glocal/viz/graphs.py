"""Graph and path figures: an attribution graph drawn as a tree of conditional heatmaps, a concept path as a strip.

:func:`graph_figure` draws a :class:`~glocal.ConceptGraph` top down, or wrapped into panels when the tree is wider
than a picture should be; :func:`path_figure` draws a :class:`~glocal.ConceptPath`. Both need matplotlib (``pip
install glocal[viz]``), imported when they are first called; figures are built as :class:`matplotlib.figure.Figure`
objects and rendered with the Agg canvas, so pyplot's global state is never touched.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .images import heatmap_image, require_matplotlib

if TYPE_CHECKING:  # the results are drawn, never imported: structure's .figure() methods call this module
    from matplotlib.figure import Figure

    from ..structure.concept_graph import ConceptGraph
    from ..structure.paths import ConceptPath

__all__ = ["GRAPH_MAX_WIDTH", "SHRINK", "graph_figure", "path_figure"]


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
