"""A part graph as report data: :func:`parts_analysis` turns a :class:`~glocal.parts.PartGraph` into an
:class:`~glocal.report.data.Analysis` (a paragraph, the graph's picture and a table of its nodes) that
:func:`~glocal.report.build_report` shows after the atlas (``analyses=[...]``). Nothing is recomputed here.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from PIL import Image

from .data import Analysis, Picture, Table
from .pictures import image_png

if TYPE_CHECKING:
    from ..parts.graph import PartGraph

__all__ = ["PART_GRAPH_WIDTH", "parts_analysis"]

PART_GRAPH_WIDTH = 1300
"""The widest part graph picture in a report, in pixels (the page's width); wider drawings are scaled down."""


def _explained(targets: Sequence[int], class_names: Sequence[str] | None) -> str:
    def name(target: int) -> str:
        known = class_names is not None and 0 <= target < len(class_names) and str(class_names[target]) != str(target)
        return f"{class_names[target]} (class {target})" if class_names is not None and known else f"class {target}"

    unique = sorted(set(targets))
    if len(unique) == 1:
        return f"explained for {name(unique[0])}"
    listed = ", ".join(name(t) for t in unique[:6]) + (", ..." if len(unique) > 6 else "")
    return f"each explained for its own class ({listed})"


def _settings_text(graph: PartGraph) -> str:
    settings = graph.settings
    pieces = []
    if "threshold" in settings:
        pieces.append(f"whose share of the relevance there is at least {settings['threshold']:g} times a fair share")
    if "min_support" in settings:
        pieces.append(f"in at least {settings['min_support']:.0%} of the images")
    if "radius" in settings:
        pieces.append(f"and that find their part within {settings['radius']:g} of the image diagonal of each other")
    return " ".join(pieces)


def parts_analysis(
    graph: PartGraph,
    images: torch.Tensor | None = None,
    *,
    class_names: Sequence[str] | None = None,
    max_nodes: int = 8,
    title: str = "",
) -> Analysis:
    """The part graph as a report analysis: what it shows, its picture (:func:`glocal.viz.part_graph_figure`, the
    most relevant ``max_nodes`` nodes per layer) and a table of every node (layer, node, channels, support, mean
    score, strongest child and the share of the node's relevance it explains).

    Parameters
    ----------
    graph
        The result of :func:`~glocal.parts.part_graph` (with ``heatmaps=True`` for heatmap thumbnails).
    images
        The images the graph was built from, ``(N, 1 or 3, H, W)``, for the thumbnails; optional.
    class_names
        Names of the model's outputs, for the paragraph.
    max_nodes
        The most nodes per layer in the picture (the table lists all).
    title
        The analysis's heading (default: "Parts: an explanatory graph of object parts").
    """
    counts = ", ".join(f"{layer}: {len(graph.layer_nodes(layer))}" for layer in graph.layers)
    settings = _settings_text(graph)
    text = (
        f"The explanatory part graph of {len(graph.targets)} images, {_explained(graph.targets, class_names)}, over "
        f"the layers {' > '.join(graph.layers)} (top first), with part nodes per layer {counts}. A part node groups "
        f"the channels of a layer {settings + ' ' if settings else ''}that find their part at the same place across "
        "the images; below the top layer, the nodes are found in the relevance of one part above and are its "
        "sub-parts. A node's support is the share of images in which it is present, its score its relevance. An edge "
        "is the relevance a part passes to a sub-part, given as a share of the part's relevance (the rest goes to "
        "other channels)."
    )
    figure = graph.figure(images, max_nodes=max_nodes)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi)
    png = image_png(Image.open(buffer), PART_GRAPH_WIDTH)
    shown = sum(min(len(graph.layer_nodes(layer)), max_nodes) for layer in graph.layers)
    picture = Picture(
        f"The part graph ({shown} of {len(graph.nodes)} nodes drawn): layers as rows, each node its best image "
        "cropped around the part with its heatmap; lines wider for a larger share",
        png,
        f"part graph over the layers {', '.join(graph.layers)}; the table below lists the same nodes and edges",
    )
    rows = []
    for node in graph.nodes:
        children = graph.children(node.id)
        child, share = (children[0][0].id, f"{children[0][1].share:.1%}") if children else ("", "")
        rows.append(
            (
                node.layer,
                node.id,
                ", ".join(map(str, node.channels)),
                f"{node.support:.0%}",
                f"{node.mean_score:.4g}",
                child,
                share,
            )
        )
    table = Table(
        "Part nodes, most relevant first per layer",
        ("layer", "node", "channels", "support", "mean score", "strongest child", "its share"),
        tuple(rows),
        (False, False, False, True, True, False, True),
    )
    return Analysis(title or "Parts: an explanatory graph of object parts", text, tables=(table,), pictures=(picture,))
