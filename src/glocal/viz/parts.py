"""Part graph figures: an explanatory part graph drawn layer by layer, and a part graph's nodes located on one image.

:func:`part_graph_figure` draws a :class:`~glocal.parts.PartGraph` with its layers as rows (the top layer first),
each node as a thumbnail of its part on its best image, and lines between the rows for the relevance flowing from a
part into the part above it. :func:`part_positions_figure` draws one image with a marker per node where the node finds
its part. Both need matplotlib (``pip install glocal[viz]``), imported when they are first called; figures are built as
:class:`matplotlib.figure.Figure` objects and rendered with the Agg canvas, so pyplot's global state is never touched.

>>> channel_text((3, 5, 7, 9, 11, 12))
'ch 3, 5, +4'
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import InputError
from .images import heatmap_image, require_matplotlib

if TYPE_CHECKING:  # the graph is drawn, never imported: PartGraph.figure() calls this module
    from matplotlib.figure import Figure

    from ..parts.graph import PartGraph, PartNode

__all__ = [
    "LAYER_COLOURS",
    "LAYER_MARKERS",
    "MIN_CROP",
    "channel_text",
    "crop_box",
    "part_graph_figure",
    "part_positions_figure",
]

LAYER_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
"""One colour per layer (top first) for markers and row headings; repeats after eight layers."""

LAYER_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
"""One marker shape per layer (top first), so that the layers stay apart without colour."""

MIN_CROP = 12
"""The smallest side of a node's thumbnail crop, in pixels: a quarter of a small image (MNIST's 28 pixels) shows too
little around the part."""

_NOTE = (
    "Rows: the chosen layers, top first. Each node: its id, channels and support (the share of images in which the "
    "part is present); its picture is {picture} (red: for, blue: against the target). Lines: relevance flowing from "
    "a part into a part of the row above, wider and darker for a larger share of the upper part's relevance"
)
_PICTURES = {
    True: "its best image cropped around the part, the node's conditional heatmap over it",
    False: "its conditional heatmap on its best image, cropped around the part",
}


def channel_text(channels: Sequence[int], shown: int = 2) -> str:
    """The channels as a short label: all of them while few, else the first ``shown`` and how many more.

    >>> channel_text((4,)), channel_text((3, 5, 7)), channel_text(range(10))
    ('ch 4', 'ch 3, 5, 7', 'ch 0, 1, +8')
    """
    channels = list(channels)
    if len(channels) <= shown + 1:
        return "ch " + ", ".join(map(str, channels))
    return "ch " + ", ".join(map(str, channels[:shown])) + f", +{len(channels) - shown}"


def crop_box(
    position: Sequence[float], image_size: Sequence[int], fraction: float, least: int = MIN_CROP
) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a crop of ``fraction`` of each image side (but at least ``least`` pixels,
    at most the side) centred on ``position`` (row, column), moved inside the image where it would cross its border.

    >>> crop_box((1.0, 27.0), (28, 28), 0.25)   # 12 by 12 pixels, pushed inside at the top and the right
    (0, 16, 12, 12)
    >>> crop_box((100.0, 100.0), (224, 224), 0.25)
    (72, 72, 56, 56)
    """
    box = []
    for centre, side in zip(position, image_size, strict=True):
        extent = min(side, max(least, round(fraction * side)))
        start = math.floor(float(centre) - extent / 2 + 0.5) if np.isfinite(centre) else (side - extent) // 2
        box.append((min(max(start, 0), side - extent), extent))
    (top, height), (left, width) = box
    return top, left, height, width


def _pictures(images: torch.Tensor, count: int, image_size: tuple[int, int]) -> torch.Tensor:
    """``images`` checked against the graph: ``(count, 1 or 3, H, W)`` at the graph's image size."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(
            f"images must be a batch shaped (N, 1 or 3, H, W), the images the graph was built from, got {shape}"
        )
    if images.shape[0] != count or tuple(images.shape[2:]) != tuple(image_size):
        raise InputError(
            f"the graph was built from {count} images of {image_size[0]}x{image_size[1]} pixels, got "
            f"{images.shape[0]} of {images.shape[2]}x{images.shape[3]}; pass the same images, in the same order"
        )
    return images


def _rgb(picture: torch.Tensor) -> np.ndarray:
    """A ``(1 or 3, H, W)`` picture as an ``(H, W, 3)`` array in [0, 1]: kept as it is when it already lies in
    [0, 1], else (a normalised model input) stretched from its minimum to its maximum."""
    array = picture.detach().cpu().double().permute(1, 2, 0).numpy()
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.clip(array, 0.0, 1.0)


def _overlay(picture: np.ndarray | None, heatmap: torch.Tensor, cmap: str, percentile: float) -> np.ndarray:
    """The heatmap's colours over the (greyed) picture, opaque where the relevance is large; without a picture, the
    heatmap alone."""
    colours = np.asarray(heatmap_image(heatmap, cmap=cmap, percentile=percentile), dtype=np.float64) / 255.0
    if picture is None:
        return colours
    magnitude = heatmap.detach().cpu().double().abs().numpy()
    bound = float(np.percentile(magnitude, percentile)) or 1.0
    alpha = np.clip(magnitude / bound, 0.0, 1.0)[..., None] * 0.6  # the part stays visible under its relevance
    grey = picture.mean(axis=2, keepdims=True).repeat(3, axis=2) * 0.8 + 0.2
    return grey * (1 - alpha) + colours * alpha


def _node_label(node: PartNode) -> str:
    return f"{node.id}\n{channel_text(node.channels)}\nsupport {node.support:.0%}"


def part_graph_figure(
    graph: PartGraph,
    images: torch.Tensor | None = None,
    *,
    size: float = 1.3,
    max_nodes: int = 8,
    title: str | None = None,
    crop: float = 0.25,
    cmap: str = "bwr",
    percentile: float = 99.5,
    dpi: float = 100.0,
) -> Figure:
    """An explanatory part graph: layers as rows (top first), nodes as thumbnails, edges as lines between the rows.

    Each node is drawn as a crop (``crop`` of each image side, moved inside the image at its border) around its
    position in its example image (:attr:`~glocal.parts.PartNode.example`, where it scores highest): the image with
    the node's conditional heatmap over it, or, for a node without a heatmap, the image with a marker at the
    position; without ``images``, the heatmap alone (or an empty box). Its label gives the node id, its channels
    (:func:`channel_text`) and its support in percent. Lines join each child to its parent in the row above, wider
    and more opaque for a larger share of the parent's relevance, relative to the largest share drawn (which the
    note above the rows gives: the shares of a parent's children are often small, as other channels carry the rest).

    Parameters
    ----------
    graph
        The result of :func:`~glocal.parts.part_graph`.
    images
        The images the graph was built from, ``(N, 1 or 3, H, W)`` in the graph's order and size; pictures in [0, 1]
        or normalised model inputs (stretched to [0, 1] for drawing). Optional.
    size
        Inches per node picture.
    max_nodes
        The most nodes drawn per layer (the most relevant ones); the rest are left out, and the heading says so.
    title
        A line above the figure (default: the layers and the number of images).
    crop
        The thumbnail's side as a fraction of the image's (at least :data:`MIN_CROP` pixels).
    cmap, percentile
        As for :func:`~glocal.viz.heatmap_image`.
    dpi
        Resolution the figure is drawn and saved at.

    Returns
    -------
    matplotlib.figure.Figure
        One full-figure axes holding the edge lines (``Line2D`` with gid ``"edge:parent->child"``), then one axes
        per drawn node, row by row, most relevant first.
    """
    figure_class, canvas_class = require_matplotlib()
    if max_nodes < 1:
        raise InputError(f"max_nodes must be at least 1, got {max_nodes}")
    if not graph.layers:
        raise InputError("the graph has no layers to draw")
    if images is not None:
        images = _pictures(images, len(graph.targets), graph.image_size)
    rows = [(layer, graph.layer_nodes(layer)) for layer in graph.layers]
    columns = max(1, *(min(len(nodes), max_nodes) for _, nodes in rows))
    cell, label, heading, gap = size * 1.25, 0.5, 1.5, 0.55  # inches: column, node label, row heading, row gap
    row_height = label + size + gap
    drawn = {node.id for _, nodes in rows for node in nodes[:max_nodes]}
    edges = sorted((e for e in graph.edges if e.parent in drawn and e.child in drawn), key=lambda e: abs(e.share))
    widest = max((abs(edge.share) for edge in edges), default=0.0)
    text = _NOTE.format(picture=_PICTURES[images is not None]) + (
        f", relative to the widest ({widest:.0%} of its upper part's relevance)." if widest else "."
    )
    note = textwrap.fill(text, int(max(heading + columns * cell, 6.0) * 12.5))
    top = 0.3 + 0.16 * (note.count("\n") + 1) + 0.1
    width = max(heading + columns * cell + 0.2, 6.0)
    height = top + len(rows) * row_height - gap + 0.15
    figure = figure_class(figsize=(width, height), dpi=dpi)
    canvas_class(figure)
    lines = figure.add_axes((0, 0, 1, 1))
    lines.set_xlim(0, width)
    lines.set_ylim(height, 0)  # inches from the top left
    lines.set_axis_off()
    heading_text = title or f"part graph of {len(graph.targets)} images, layers {' > '.join(graph.layers)}"
    lines.text(width / 2, 0.08, heading_text, fontsize=11, ha="center", va="top")
    lines.text(width / 2, 0.32, note, fontsize=8.5, color="#444444", ha="center", va="top")

    boxes: dict[str, tuple[float, float]] = {}  # node id -> (centre x, top of label y), inches
    above: list[str] = []
    for row, (layer, nodes) in enumerate(rows):
        y = top + row * row_height
        # under their parents, left to right as the parents are (the edges do not cross), the strongest first
        shown = sorted(nodes[:max_nodes], key=lambda n: above.index(n.parent) if n.parent in above else len(above))
        above = [node.id for node in shown]
        left = heading + (columns - len(shown)) * cell / 2
        colour = LAYER_COLOURS[row % len(LAYER_COLOURS)]
        more = f"\n({len(shown)} of {len(nodes)} nodes)" if len(nodes) > len(shown) else f"\n{len(nodes)} nodes"
        lines.text(0.15, y + label + size / 2, textwrap.fill(layer, 16) + more, fontsize=10, color=colour, va="center")
        for k, node in enumerate(shown):
            boxes[node.id] = (left + (k + 0.5) * cell, y)
    for edge in edges:
        (x0, y0), (x1, y1) = boxes[edge.parent], boxes[edge.child]
        strength = abs(edge.share) / widest
        (line,) = lines.plot(
            [x0, x1],
            [y0 + label + size + 0.04, y1 - 0.02],
            color="#c0392b" if edge.share >= 0 else "#2c6fbb",
            linewidth=0.5 + 5.5 * strength,
            alpha=0.2 + 0.7 * strength,
            solid_capstyle="round",
        )
        line.set_gid(f"edge:{edge.parent}->{edge.child}")
    for node_id, (x, y) in boxes.items():
        node = graph.node(node_id)
        axes = figure.add_axes(((x - size / 2) / width, 1 - (y + label + size) / height, size / width, size / height))
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_title(_node_label(node), fontsize=8.5, pad=2, linespacing=1.1)
        _draw_node(axes, node, images, crop, cmap, percentile)
    return figure


def _draw_node(
    axes: Any, node: PartNode, images: torch.Tensor | None, crop: float, cmap: str, percentile: float
) -> None:
    example = node.example
    picture = None if images is None else _rgb(images[example])
    heatmap = node.heatmap
    if heatmap is not None:
        shown = _overlay(picture, heatmap.reshape(heatmap.shape[-2:]), cmap, percentile)
    elif picture is not None:
        shown = picture
    else:
        axes.set_facecolor("#f4f4f4")
        axes.text(0.5, 0.5, "no heatmap kept", ha="center", va="center", fontsize=8, color="#777777")
        return
    row, column = node.positions[example]
    top, left, height, width = crop_box((row, column), shown.shape[:2], crop)
    axes.imshow(shown[top : top + height, left : left + width], interpolation="nearest")
    if node.heatmap is None:
        axes.plot([column - left], [row - top], marker="+", color="#d62728", markersize=14, markeredgewidth=2)
        axes.set_xlim(-0.5, width - 0.5)
        axes.set_ylim(height - 0.5, -0.5)


def part_positions_figure(
    graph: PartGraph | Sequence[str],
    image: torch.Tensor,
    positions: torch.Tensor | Sequence[Sequence[float]],
    *,
    present: torch.Tensor | Sequence[bool] | None = None,
    title: str | None = None,
    size: float = 5.0,
    dpi: float = 100.0,
) -> Figure:
    """One image with a marker per part node where the node finds its part.

    Markers have one colour and shape per layer (the legend names the layers); each is labelled with the node's rank
    in its layer (the ``k`` of its id ``"layer:k"``; nodes of a layer at one place share a label, ``"0, 1"``). Nodes
    that are not present in the image are drawn hollow.

    Parameters
    ----------
    graph
        The part graph, or the node ids ``"layer:k"`` (e.g. :attr:`glocal.parts.PartLocations.node_ids`).
    image
        ``(1 or 3, H, W)`` or ``(1, 1 or 3, H, W)``: a picture in [0, 1] or a normalised model input.
    positions
        ``(nodes, 2)``: each node's ``(row, column)`` in input pixels, in the order of the graph's nodes; NaN rows
        are not drawn.
    present
        ``(nodes,)``: whether each node is present in the image (default: all).
    title
        A line above the image.
    size
        Inches of the image's longer side.
    dpi
        Resolution the figure is drawn and saved at.

    Returns
    -------
    matplotlib.figure.Figure
        One axes; its markers are ``Line2D`` objects with gid ``"present:layer"`` and ``"absent:layer"``, whose data
        are the columns (x) and rows (y) of the positions.
    """
    figure_class, canvas_class = require_matplotlib()
    ids = [node.id for node in graph.nodes] if hasattr(graph, "nodes") else [str(node_id) for node_id in graph]
    picture = image.detach()
    if picture.dim() == 4 and picture.shape[0] == 1:
        picture = picture[0]
    if picture.dim() != 3 or picture.shape[0] not in (1, 3):
        raise InputError(
            f"image must be one picture shaped (1 or 3, H, W) or (1, 1 or 3, H, W), got {tuple(image.shape)}; pick "
            "one image of the batch, e.g. images[0]"
        )
    points = torch.as_tensor(positions, dtype=torch.float64)
    if points.shape != (len(ids), 2):
        raise InputError(
            f"positions must be one (row, column) per node, ({len(ids)}, 2), got {tuple(points.shape)}; for a "
            "PartLocations result pass locations.positions[sample]"
        )
    shown = torch.ones(len(ids), dtype=torch.bool) if present is None else torch.as_tensor(present, dtype=torch.bool)
    if shown.shape != (len(ids),):
        raise InputError(f"present must be one flag per node, ({len(ids)},), got {tuple(shown.shape)}")
    height, width = picture.shape[-2:]
    scale = size / max(height, width)
    figure = figure_class(figsize=(width * scale + 2.2, height * scale + 0.6), dpi=dpi)
    canvas_class(figure)
    axes = figure.add_axes((0.02, 0.02, width * scale / (width * scale + 2.2), 1 - 0.6 / (height * scale + 0.6)))
    axes.imshow(_rgb(picture), interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(title or "where each part node finds its part", fontsize=10)
    layers = list(dict.fromkeys(node_id.rpartition(":")[0] for node_id in ids))
    for rank, layer in enumerate(layers):
        colour, marker = LAYER_COLOURS[rank % len(LAYER_COLOURS)], LAYER_MARKERS[rank % len(LAYER_MARKERS)]
        members = [i for i, node_id in enumerate(ids) if node_id.rpartition(":")[0] == layer]
        for state, filled in (("present", True), ("absent", False)):
            chosen = [i for i in members if bool(shown[i]) == filled and not points[i].isnan().any()]
            (line,) = axes.plot(
                [float(points[i, 1]) for i in chosen],
                [float(points[i, 0]) for i in chosen],
                linestyle="none",
                marker=marker,
                markersize=14 - 3 * min(rank, 2),  # upper layers larger and on top: a part over its sub-part
                zorder=3 + len(layers) - rank,
                markeredgewidth=1.5,
                markerfacecolor=colour if filled else "none",
                markeredgecolor="white" if filled else colour,
                color=colour,
                alpha=1.0 if filled else 0.8,
                label=layer if filled else f"{layer} (absent)",
            )
            line.set_gid(f"{state}:{layer}")
            if not filled:  # a hollow marker keeps a white rim, to be seen on dark pictures too
                line.set_path_effects([_outline(3.5)])
            labels: dict[tuple[float, float], list[str]] = {}  # nodes at one place share one label: "0, 1"
            near = 0.02 * max(height, width)  # closer than this, two labels would print over each other
            for i in chosen:
                point = (float(points[i, 0]), float(points[i, 1]))
                place = next((p for p in labels if abs(p[0] - point[0]) + abs(p[1] - point[1]) <= near), point)
                labels.setdefault(place, []).append(ids[i].rpartition(":")[2])
            for (row, column), ranks in labels.items():
                axes.annotate(
                    ", ".join(ranks),
                    (column, row),
                    xytext=(7, 5 - 12 * (rank % 3)),  # each layer's labels at their own height: none hides another
                    textcoords="offset points",
                    fontsize=8,
                    fontweight="bold",
                    color=colour,
                    path_effects=[_outline()],
                )
    axes.set_xlim(-0.5, width - 0.5)
    axes.set_ylim(height - 0.5, -0.5)
    handles = [line for line in axes.get_lines() if len(line.get_xdata())]
    axes.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        fontsize=8,
        title="layer (label: node k)",
        borderaxespad=0,
    )
    return figure


def _outline(width: float = 2.5) -> Any:
    from matplotlib import patheffects

    return patheffects.withStroke(linewidth=width, foreground="white")
