"""An attribution graph (:class:`~glocal.ConceptGraph`) as report data: nodes with their heatmaps at display size."""

from __future__ import annotations

from typing import Any

from .data import GraphData, GraphEdgeData, GraphNodeData
from .pictures import SIZES, heatmap_png

__all__ = ["report_graph"]


def report_graph(graph: Any) -> GraphData:
    """``graph`` (a :class:`~glocal.ConceptGraph`; with ``heatmaps=True`` for the node heatmaps) as plain data."""
    return GraphData(
        root=graph.root.id,
        target=int(graph.target),
        widths=tuple(graph.widths),
        nodes=tuple(
            GraphNodeData(
                id=node.id,
                layer=node.layer,
                concept=int(node.concept),
                depth=node.depth,
                parent=node.parent,
                relevance=float(node.relevance),
                share_of_root=float(node.share_of_root),
                heatmap=None if node.heatmap is None else heatmap_png(node.heatmap, SIZES["heatmap"]),
            )
            for node in graph.nodes
        ),
        edges=tuple(
            GraphEdgeData(
                child=edge.child, parent=edge.parent, relevance=float(edge.relevance), share=float(edge.share)
            )
            for edge in graph.edges
        ),
    )
