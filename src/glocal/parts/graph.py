"""The explanatory part graph as plain data: part nodes per layer, the relevance flowing between them, and where each
node finds its part in every image.

A :class:`PartNode` is a group of channels of one layer that carry relevance at the same place across images; its
score in an image is the relevance of its channels there, its position the peak of the group's conditional heatmap.
A :class:`PartEdge` joins a node to a node of the next chosen layer below it, weighted by the relevance that flows from
the child's channels into the parent's (summed over the images). :class:`PartGraph` holds them, answers the questions a
user asks of it (the nodes of a layer, a node's children, the chain of strongest edges down from a node, the node that
finds its part nearest a point) and reads and writes JSON.

>>> node = PartNode("a:0", "a", (3, 5), scores=(2.0, 1.0), positions=((4.0, 5.0), (6.0, 7.0)), present=(True, False))
>>> graph = PartGraph(layers=("a",), nodes=(node,), edges=(), targets=(1, 1), image_size=(16, 16), settings={})
>>> PartGraph.from_json(graph.to_json()) == graph, graph.node("a:0").support
(True, 0.5)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import InputError
from ..serialize import heatmap_entry, heatmap_from, read_json, write_json

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["PartEdge", "PartGraph", "PartNode", "image_diagonal"]

Position = tuple[float, float]


def image_diagonal(size: Sequence[int]) -> float:
    """The diagonal of an image of ``(height, width)`` pixels: the unit of every distance in a part graph."""
    return math.hypot(float(size[0]), float(size[1]))


@dataclass(frozen=True)
class PartNode:
    """A part pattern of one layer: a group of channels that find the same place across images.

    Attributes
    ----------
    id
        ``"layer:k"``: the layer and the node's rank in it (0: the most relevant).
    layer
        The layer whose channels the node groups.
    channels
        The grouped channels.
    scores
        Per image, the node's relevance: its channels' relevance (summed over space) for the image's target, as it
        arrives through the nodes of the layers above.
    positions
        Per image, ``(row, column)`` in input pixels of the peak of the group's (smoothed) conditional heatmap.
    present
        Per image, whether the group's share of its layer's relevance passes the graph's threshold.
    heatmap
        The group's conditional heatmap on :attr:`example` (input size), or ``None`` when not kept.
    parent
        The node of the layer above whose relevance this node was found in (``None`` at the top layer): its
        scores, positions and heatmaps are conditioned on the chain of parents (:meth:`PartGraph.path`).
    """

    id: str
    layer: str
    channels: tuple[int, ...]
    scores: tuple[float, ...]
    positions: tuple[Position, ...]
    present: tuple[bool, ...]
    heatmap: torch.Tensor | None = field(default=None, compare=False)
    parent: str | None = None

    @property
    def support(self) -> float:
        """The fraction of the images in which the part is present."""
        return sum(self.present) / max(len(self.present), 1)

    @property
    def example(self) -> int:
        """The image in which the node scores highest."""
        return max(range(len(self.scores)), key=self.scores.__getitem__)

    @property
    def mean_score(self) -> float:
        """The node's mean relevance over the images."""
        return sum(self.scores) / max(len(self.scores), 1)

    def to_dict(self, heatmaps: bool = False) -> dict[str, Any]:
        """The node as JSON-serialisable values (the heatmap only with ``heatmaps``)."""
        out: dict[str, Any] = {
            "id": self.id,
            "layer": self.layer,
            "channels": list(self.channels),
            "scores": list(self.scores),
            "positions": [list(p) for p in self.positions],
            "present": list(self.present),
            "parent": self.parent,
        }
        return {**out, **heatmap_entry(self.heatmap, heatmaps)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PartNode:
        """Read :meth:`to_dict`'s output."""
        return cls(
            id=str(data["id"]),
            layer=str(data["layer"]),
            channels=tuple(int(c) for c in data["channels"]),
            scores=tuple(float(s) for s in data["scores"]),
            positions=tuple((float(p[0]), float(p[1])) for p in data["positions"]),
            present=tuple(bool(p) for p in data["present"]),
            heatmap=heatmap_from(data),
            parent=None if data.get("parent") is None else str(data["parent"]),
        )


@dataclass(frozen=True)
class PartEdge:
    """Relevance flowing from the child node (a lower layer) into the parent node, summed over the images.

    ``share`` is ``relevance`` divided by the parent's total relevance: the fraction of the parent that this child
    part explains (the children of one parent need not sum to one: other channels of the lower layer carry the rest).
    """

    parent: str
    child: str
    relevance: float
    share: float


@dataclass(frozen=True)
class PartGraph:
    """An explanatory graph of object parts (see :func:`glocal.parts.part_graph`).

    Attributes
    ----------
    layers
        The chosen layers, top (nearest the output) first.
    nodes
        The part nodes, layer by layer from the top, most relevant first within a layer.
    edges
        Parent (upper layer) to child (the next chosen layer below) edges.
    targets
        The output explained for each image.
    image_size
        ``(height, width)`` of the inputs, in which the positions are given.
    settings
        The thresholds the graph was built with (see :func:`~glocal.parts.part_graph`).
    """

    layers: tuple[str, ...]
    nodes: tuple[PartNode, ...]
    edges: tuple[PartEdge, ...]
    targets: tuple[int, ...]
    image_size: tuple[int, int]
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def diagonal(self) -> float:
        """The input's diagonal in pixels: what instability and the grouping radius are measured in."""
        return image_diagonal(self.image_size)

    def node(self, node_id: str) -> PartNode:
        """The node called ``node_id``."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(f"the graph has no node {node_id!r}; its nodes are {[n.id for n in self.nodes]}")

    def layer_nodes(self, layer: str) -> list[PartNode]:
        """The nodes of ``layer``, most relevant first."""
        if layer not in self.layers:
            raise InputError(f"the graph has no layer {layer!r}; its layers are {list(self.layers)}")
        return [node for node in self.nodes if node.layer == layer]

    def path(self, node_id: str) -> dict[str, list[int]]:
        """The channels of the node's ancestors, layer by layer: the condition its relevance flows through."""
        path: dict[str, list[int]] = {}
        node = self.node(node_id)
        while node.parent is not None:
            node = self.node(node.parent)
            path[node.layer] = list(node.channels)
        return dict(reversed(path.items()))

    def children(self, node_id: str) -> list[tuple[PartNode, PartEdge]]:
        """The node's children with their edges, strongest first."""
        edges = sorted((e for e in self.edges if e.parent == node_id), key=lambda e: -e.relevance)
        return [(self.node(e.child), e) for e in edges]

    def parents(self, node_id: str) -> list[tuple[PartNode, PartEdge]]:
        """The node's parents with their edges, strongest first."""
        edges = sorted((e for e in self.edges if e.child == node_id), key=lambda e: -e.relevance)
        return [(self.node(e.parent), e) for e in edges]

    def chain(self, node_id: str) -> list[PartNode]:
        """The node and, layer by layer down, the child its strongest edge leads to: the part's concepts through the
        layers (the chain a concept-path study traces by hand)."""
        chain = [self.node(node_id)]
        while children := self.children(chain[-1].id):
            chain.append(children[0][0])
        return chain

    def nearest(self, layer: str, points: torch.Tensor | Sequence[Position]) -> tuple[PartNode, float]:
        """The node of ``layer`` whose positions lie nearest ``points`` (one ``(row, column)`` per image; NaN rows
        are skipped), with its median distance as a fraction of the diagonal. Only images where the node is present
        count; a node present in none of them is never chosen."""
        points = torch.as_tensor(points, dtype=torch.float64)
        if points.shape != (len(self.targets), 2):
            raise InputError(
                f"points must be one (row, column) per image, ({len(self.targets)}, 2), got {tuple(points.shape)}"
            )
        best: tuple[PartNode, float] | None = None
        for node in self.layer_nodes(layer):
            positions = torch.tensor(node.positions, dtype=torch.float64)
            keep = torch.tensor(node.present) & ~points.isnan().any(1)
            if not keep.any():
                continue
            distance = float((positions[keep] - points[keep]).norm(dim=1).median()) / self.diagonal
            if best is None or distance < best[1]:
                best = (node, distance)
        if best is None:
            raise InputError(f"no node of layer {layer!r} is present in an image where the point is given")
        return best

    def units(self, layer: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The layer's nodes as ``(positions (N, 2), scores (N,))`` pairs, the units of
        :func:`~glocal.parts.layer_instability`."""
        return [
            (torch.tensor(node.positions, dtype=torch.float64), torch.tensor(node.scores, dtype=torch.float64))
            for node in self.layer_nodes(layer)
        ]

    def without_heatmaps(self) -> PartGraph:
        """The same graph with no node heatmaps (small to keep and send)."""
        return replace(self, nodes=tuple(replace(node, heatmap=None) for node in self.nodes))

    def to_dict(self, heatmaps: bool = False) -> dict[str, Any]:
        """The graph as JSON-serialisable values; node heatmaps only with ``heatmaps``."""
        return {
            "kind": "part_graph",
            "layers": list(self.layers),
            "targets": list(self.targets),
            "image_size": list(self.image_size),
            "settings": dict(self.settings),
            "nodes": [node.to_dict(heatmaps) for node in self.nodes],
            "edges": [
                {"parent": e.parent, "child": e.child, "relevance": e.relevance, "share": e.share} for e in self.edges
            ],
        }

    def to_json(self, path: str | Path | None = None, indent: int | None = 2, heatmaps: bool = False) -> str:
        """JSON text of :meth:`to_dict`; also written to ``path`` when given."""
        return write_json(self.to_dict(heatmaps), path, indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PartGraph:
        """Read :meth:`to_dict`'s output."""
        if not isinstance(data, Mapping) or data.get("kind") != "part_graph":
            kind = data.get("kind") if isinstance(data, Mapping) else type(data).__name__
            raise InputError(f"expected a part graph (kind 'part_graph'), got kind {kind!r}")
        try:
            return cls._read(data)
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise InputError(
                f"the part graph is malformed ({type(error).__name__}: {error}); write it with PartGraph.to_json "
                "and read that back unchanged"
            ) from error

    @classmethod
    def _read(cls, data: Mapping[str, Any]) -> PartGraph:
        return cls(
            layers=tuple(str(name) for name in data["layers"]),
            nodes=tuple(PartNode.from_dict(node) for node in data["nodes"]),
            edges=tuple(
                PartEdge(str(e["parent"]), str(e["child"]), float(e["relevance"]), float(e["share"]))
                for e in data["edges"]
            ),
            targets=tuple(int(t) for t in data["targets"]),
            image_size=(int(data["image_size"][0]), int(data["image_size"][1])),
            settings=dict(data.get("settings", {})),
        )

    @classmethod
    def from_json(cls, source: str | Path) -> PartGraph:
        """Read JSON text, or a file holding it."""
        return cls.from_dict(read_json(source))

    def figure(self, images: torch.Tensor | None = None, **options: Any) -> Figure:
        """Draw the graph: layers as rows, each node as its heatmap thumbnail (over the image when ``images`` are
        given), edges as lines whose width follows their share (see :func:`glocal.viz.parts.part_graph_figure`)."""
        from ..viz.parts import part_graph_figure

        return part_graph_figure(self, images, **options)
