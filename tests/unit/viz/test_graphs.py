"""Graph figures: a small graph is drawn as a tree, a wide one wraps into panels within the width cap."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from glocal.structure.concept_graph import ConceptEdge, ConceptGraph, ConceptNode
from glocal.viz.graphs import graph_figure

pytest.importorskip("matplotlib")


def _wide_graph(children: int, grandchildren: int):
    """A hand-made attribution graph: a root with ``children`` children of ``grandchildren`` children each."""
    nodes = [ConceptNode("top:0", "top", 0, (("top", 0),), 1.0, 1.0)]
    edges = []
    for c in range(children):
        path = (("top", 0), ("mid", c))
        nodes.append(ConceptNode(f"top:0/mid:{c}", "mid", c, path, 0.5, 0.5))
        edges.append(ConceptEdge(f"top:0/mid:{c}", "top:0", 0.5, 0.5 if c else -0.2, 0.1))
    for c in range(children):
        for g in range(grandchildren):
            path = (("top", 0), ("mid", c), ("low", g))
            nodes.append(ConceptNode(f"top:0/mid:{c}/low:{g}", "low", g, path, 0.3, 0.3))
            edges.append(ConceptEdge(nodes[-1].id, f"top:0/mid:{c}", 0.3, 1.24, 0.1))
    return ConceptGraph(
        tuple(nodes), tuple(edges), target=1, widths=(children, grandchildren), prediction=torch.ones(1, 2)
    )


def _pixels(figure) -> tuple[int, int]:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi)
    return Image.open(buffer).size


def test_small_graph_is_a_tree_and_a_wide_one_wraps_within_the_width_cap():
    small = graph_figure(_wide_graph(2, 2), dpi=50)
    assert _pixels(small) == (int(4 * 1.6 * 50), pytest.approx(small.get_size_inches()[1] * 50, abs=1))
    assert "Wrapped" not in small.texts[0].get_text() and "more than 100 %" in small.texts[0].get_text()
    graph = _wide_graph(12, 4)  # 48 leaves: 76.8 inches as a tree
    wide = graph_figure(graph, dpi=50, max_width=1000)
    width, height = _pixels(wide)
    assert width <= 1000 and height > width / 2  # wrapped: it grows downwards instead
    assert "Wrapped to fit" in wide.texts[0].get_text()
    titles = [axes.get_title() for axes in wide.axes[1:]]
    assert len(titles) == len(graph.nodes) and "low:3\n+124.0% of parent" in titles[-1]
    assert "mid:0\n-20.0% of parent" in titles[1]
    narrower = graph_figure(_wide_graph(2, 2), dpi=50, max_width=300)  # 320 px as a tree: smaller nodes instead
    assert _pixels(narrower)[0] == 300 and "Wrapped" not in narrower.texts[0].get_text()
    unbounded = graph_figure(graph, dpi=50, max_width=None)
    assert _pixels(unbounded)[0] == int(48 * 1.6 * 50)  # the plain tree, as wide as it needs
