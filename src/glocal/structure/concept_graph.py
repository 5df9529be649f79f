"""The result of an attribution graph: concepts as nodes, the relevance between them as edges, and their exports.

:class:`ConceptGraph` is what :func:`~glocal.structure.attribution_graph.attribution_graph` returns: a tree of
:class:`ConceptNode` s, each identified by its path from the root, joined by :class:`ConceptEdge` s from child to
parent. It saves to and loads from JSON, converts to ``networkx`` and Graphviz DOT, and draws itself through
:mod:`glocal.viz` (imported only when drawing).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import InputError
from ..serialize import heatmap_entry, heatmap_from, read_json, tensor_from_dict, tensor_to_dict, write_json
from .steps import Steps, path_id

if TYPE_CHECKING:
    import networkx
    from matplotlib.figure import Figure

__all__ = ["ConceptEdge", "ConceptGraph", "ConceptNode"]


@dataclass(frozen=True)
class ConceptNode:
    """One concept in an attribution graph, reached from the root along ``path``.

    Attributes
    ----------
    id
        The path as text, ``"layer:concept/layer:concept/..."`` from the root: unique in the graph.
    layer, concept
        The concept itself (the last element of ``path``).
    path
        ``((layer, concept), ...)`` from the root to this node.
    relevance
        ``R(node | path above it)``: the node's relevance when the relevance flows through its ancestors only.
    share_of_root
        ``relevance / R(root)``.
    heatmap
        The node's conditional heatmap ``(H, W)`` (input relevance through the whole path), when computed.
    """

    id: str
    layer: str
    concept: int
    path: Steps
    relevance: float
    share_of_root: float
    heatmap: torch.Tensor | None = field(default=None, compare=False, repr=False)

    @property
    def depth(self) -> int:
        return len(self.path) - 1

    @property
    def parent(self) -> str | None:
        return path_id(self.path[:-1]) if len(self.path) > 1 else None


@dataclass(frozen=True)
class ConceptEdge:
    """Relevance flowing from a child concept into its parent (the three values are defined in
    :mod:`glocal.structure.attribution_graph`)."""

    child: str
    parent: str
    relevance: float
    share: float
    normalized: float


@dataclass(frozen=True)
class ConceptGraph:
    """The result of :func:`~glocal.structure.attribution_graph.attribution_graph`: a tree of concepts rooted at the
    decomposed concept.

    Nodes are identified by their path, so a lower concept reached through two parents appears twice, each time with
    the relevance it passes along that path.
    """

    nodes: tuple[ConceptNode, ...]
    edges: tuple[ConceptEdge, ...]
    target: int
    widths: tuple[int, ...]
    prediction: torch.Tensor = field(compare=False, repr=False)
    per_layer: bool = False

    @property
    def root(self) -> ConceptNode:
        return self.nodes[0]

    def node(self, node_id: str) -> ConceptNode:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(f"no node {node_id!r} in the graph; ids look like {self.nodes[0].id!r}")

    def children(self, node_id: str) -> list[tuple[ConceptNode, ConceptEdge]]:
        """The children of a node with the edges into it, most relevant first."""
        return [(self.node(edge.child), edge) for edge in self.edges if edge.parent == node_id]

    # -- export -----------------------------------------------------------------------------------------------------

    def to_dict(self, heatmaps: bool = False) -> dict[str, Any]:
        """JSON-serialisable form; the nodes' heatmaps only with ``heatmaps=True`` (nested lists, large)."""
        return {
            "target": self.target,
            "widths": list(self.widths),
            "per_layer": self.per_layer,
            "prediction": tensor_to_dict(self.prediction),
            "nodes": [
                {
                    "id": node.id,
                    "layer": node.layer,
                    "concept": node.concept,
                    "path": [[name, c] for name, c in node.path],
                    "depth": node.depth,
                    "parent": node.parent,
                    "relevance": node.relevance,
                    "share_of_root": node.share_of_root,
                    **heatmap_entry(node.heatmap, heatmaps),
                }
                for node in self.nodes
            ],
            "edges": [
                {
                    "child": edge.child,
                    "parent": edge.parent,
                    "relevance": edge.relevance,
                    "share": edge.share,
                    "normalized": edge.normalized,
                }
                for edge in self.edges
            ],
        }

    def to_json(self, path: str | Path | None = None, indent: int | None = 2, heatmaps: bool = False) -> str:
        """The graph as JSON text (see :meth:`to_dict`); also written to ``path`` when given."""
        return write_json(self.to_dict(heatmaps=heatmaps), path, indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConceptGraph:
        """The graph back from :meth:`to_dict`'s form (heatmaps where they were saved, else ``None``)."""
        try:
            nodes = tuple(
                ConceptNode(
                    id=str(item["id"]),
                    layer=str(item["layer"]),
                    concept=int(item["concept"]),
                    path=tuple((str(name), int(c)) for name, c in item["path"]),
                    relevance=float(item["relevance"]),
                    share_of_root=float(item["share_of_root"]),
                    heatmap=heatmap_from(item),
                )
                for item in data["nodes"]
            )
            edges = tuple(
                ConceptEdge(
                    child=str(item["child"]),
                    parent=str(item["parent"]),
                    relevance=float(item["relevance"]),
                    share=float(item["share"]),
                    normalized=float(item["normalized"]),
                )
                for item in data["edges"]
            )
            prediction = data.get("prediction")
            return cls(
                nodes=nodes,
                edges=edges,
                target=int(data["target"]),
                widths=tuple(int(w) for w in data["widths"]),
                prediction=tensor_from_dict(prediction) if prediction is not None else torch.empty(0),
                per_layer=bool(data.get("per_layer", False)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(
                f"not an attribution graph in ConceptGraph.to_dict's form ({type(error).__name__}: {error}); "
                "load what ConceptGraph.to_json wrote"
            ) from error

    @classmethod
    def from_json(cls, source: str | Path) -> ConceptGraph:
        """The graph back from :meth:`to_json`: a file path, or the JSON text itself."""
        return cls.from_dict(read_json(source))

    def to_networkx(self) -> networkx.DiGraph:
        """A ``networkx.DiGraph`` with edges child -> parent (needs ``networkx``)."""
        try:
            import networkx
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("to_networkx needs networkx: pip install networkx") from error
        graph = networkx.DiGraph(target=self.target)
        for node in self.nodes:
            graph.add_node(
                node.id,
                layer=node.layer,
                concept=node.concept,
                depth=node.depth,
                relevance=node.relevance,
                share_of_root=node.share_of_root,
            )
        for edge in self.edges:
            graph.add_edge(
                edge.child, edge.parent, relevance=edge.relevance, share=edge.share, normalized=edge.normalized
            )
        return graph

    def to_dot(self, images: Mapping[str, str | Path] | None = None) -> str:
        """Graphviz DOT text, edges drawn from parent down to child with width by share.

        ``images`` maps node ids to picture files (e.g. saved heatmaps) shown inside the nodes.
        """
        lines = ["digraph attribution_graph {", "  rankdir=TB;", '  node [shape=box, fontname="Helvetica"];']
        names = {node.id: f"n{i}" for i, node in enumerate(self.nodes)}
        for node in self.nodes:
            label = f"{node.layer}:{node.concept}\\n{100 * node.share_of_root:.1f}% of root"
            attributes = [f'label="{_dot_escape(label)}"']
            if images is not None and node.id in images:
                attributes.append(f'image="{_dot_escape(str(images[node.id]))}"')
                attributes.append('labelloc="b"')
            lines.append(f"  {names[node.id]} [{', '.join(attributes)}];")
        for edge in self.edges:
            width = 0.5 + 4.0 * min(abs(edge.share), 1.0)
            label = f"{100 * edge.share:.1f}%"
            lines.append(
                f'  {names[edge.parent]} -> {names[edge.child]} [label="{label}", penwidth={width:.2f}, dir=back];'
            )
        lines.append("}")
        return "\n".join(lines) + "\n"

    def figure(
        self,
        inputs: torch.Tensor | None = None,
        size: float = 1.6,
        dpi: float = 100.0,
        max_width: int | None = 2000,
    ) -> Figure:
        """The graph drawn with every node's conditional heatmap (needs matplotlib); see
        :func:`~glocal.viz.graphs.graph_figure`.

        Parameters
        ----------
        inputs
            The sample ``(C, H, W)`` or ``(1, C, H, W)`` in [0, 1] shown beside the root, optional.
        size
            Inches per node.
        dpi
            Resolution the figure is drawn at.
        max_width
            The widest picture in pixels; a wider tree is wrapped into panels (``None``: never).
        """
        from ..viz.graphs import graph_figure

        return graph_figure(self, inputs=inputs, size=size, dpi=dpi, max_width=max_width)

    def save(
        self, path: str | Path, inputs: torch.Tensor | None = None, dpi: int = 120, max_width: int | None = 2000
    ) -> Path:
        """Draw the graph (see :meth:`figure`) into ``path`` (``.png``, ``.svg`` or ``.pdf``), at most ``max_width``
        pixels wide."""
        path = Path(path)
        self.figure(inputs=inputs, dpi=dpi, max_width=max_width).savefig(path, dpi=dpi)
        return path


def _dot_escape(text: str) -> str:
    return html.escape(text, quote=True).replace("\\\\", "\\")
