"""Attribution graphs: a concept decomposed into the lower-layer concepts it is built from, recursively.

For one sample and target, the root concept ``(layer, concept)`` passes its relevance down to the layers that feed
``layer`` (found by :func:`~glocal.graph.trace_layers`, through skip connections and any functional operation). Its
most relevant lower concepts become its children; each child is decomposed in turn, conditioned on its whole path
from the root, down ``len(widths)`` levels. An edge carries the relevance that flows from the child into its
parent::

    R(child | path to parent)       "relevance"   (summed over the child's units)
    relevance / R(parent | path)    "share"       (of the parent's relevance; the children of all its input layers
                                                   sum to one up to what biases and stabilisers absorb)
    relevance / sum_c |R(c | path)| "normalized"  (over the child's layer; zennit-crp's ``abs_norm``)

One forward pass serves the whole graph. The relevance arriving at a path's layers is computed once and reused; the
backward pass of each decomposition runs only from the parent's layer to the layers feeding it and stops there.

>>> net = torch.nn.Sequential(
...     torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
...     torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 2))
>>> graph = attribution_graph(Attributor(net), torch.rand(1, 1, 8, 8), "5", 1, target=1, widths=[2, 2])
>>> len(graph.nodes), graph.root.id, [edge.parent for edge in graph.edges][:2]
(7, '5:1', ['5:1', '5:1'])
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .conditions import Condition
from .engine import Attributor, check_gradients_enabled, check_input
from .errors import ConceptError, InputError, LayerError
from .graph import LayerGraph, trace_layers

if TYPE_CHECKING:
    import networkx
    from matplotlib.figure import Figure

__all__ = ["ConceptEdge", "ConceptGraph", "ConceptNode", "attribution_graph", "parse_path"]

Path_ = tuple[tuple[str, int], ...]


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
    path: Path_
    relevance: float
    share_of_root: float
    heatmap: torch.Tensor | None = field(default=None, compare=False, repr=False)

    @property
    def depth(self) -> int:
        return len(self.path) - 1

    @property
    def parent(self) -> str | None:
        return _path_id(self.path[:-1]) if len(self.path) > 1 else None


@dataclass(frozen=True)
class ConceptEdge:
    """Relevance flowing from a child concept into its parent (see the module docstring for the three values)."""

    child: str
    parent: str
    relevance: float
    share: float
    normalized: float


@dataclass(frozen=True)
class ConceptGraph:
    """The result of :func:`attribution_graph`: a tree of concepts rooted at the decomposed concept.

    Nodes are identified by their path, so a lower concept reached through two parents appears twice, each time with
    the relevance it passes along that path.
    """

    nodes: tuple[ConceptNode, ...]
    edges: tuple[ConceptEdge, ...]
    target: int
    widths: tuple[int, ...]
    prediction: torch.Tensor = field(compare=False, repr=False)

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (without heatmaps)."""
        return {
            "target": self.target,
            "widths": list(self.widths),
            "nodes": [
                {
                    "id": node.id,
                    "layer": node.layer,
                    "concept": node.concept,
                    "depth": node.depth,
                    "parent": node.parent,
                    "relevance": node.relevance,
                    "share_of_root": node.share_of_root,
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

    def to_json(self, path: str | Path | None = None, indent: int = 2) -> str:
        """The graph as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

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

    def figure(self, inputs: torch.Tensor | None = None, size: float = 1.6) -> Figure:
        """The graph drawn level by level, each node with its conditional heatmap (needs matplotlib).

        Parameters
        ----------
        inputs
            The sample ``(C, H, W)`` or ``(1, C, H, W)`` shown beside the root, optional.
        size
            Inches per node.
        """
        from .visualize import graph_figure

        return graph_figure(self, inputs=inputs, size=size)

    def save(self, path: str | Path, inputs: torch.Tensor | None = None, dpi: int = 120) -> Path:
        """Draw the graph (see :meth:`figure`) into ``path`` (``.png``, ``.svg`` or ``.pdf``)."""
        path = Path(path)
        self.figure(inputs=inputs).savefig(path, dpi=dpi)
        return path


def _path_id(path: Path_) -> str:
    return "/".join(f"{layer}:{concept}" for layer, concept in path)


def _dot_escape(text: str) -> str:
    return html.escape(text, quote=True).replace("\\\\", "\\")


def parse_path(text: str) -> list[tuple[str, int]]:
    """``"features.40:117 -> features.37:5"`` (or ``/`` or ``,`` between steps) to ``[("features.40", 117), ...]``.

    >>> parse_path("features.40:117 -> features.37:5")
    [('features.40', 117), ('features.37', 5)]
    """
    steps = []
    for part in text.replace("->", "/").replace(",", "/").split("/"):
        part = part.strip()
        if not part:
            continue
        layer, sep, concept = part.rpartition(":")
        if not sep or not layer or not concept.strip().lstrip("-").isdigit():
            raise InputError(
                f"cannot read {part!r} as a path step; write layer:concept, e.g. 'features.40:117 -> features.37:5'"
            )
        steps.append((layer.strip(), int(concept)))
    if not steps:
        raise InputError(f"the path {text!r} names no step; write e.g. 'features.40:117 -> features.37:5'")
    return steps


def _one_sample(data: Any) -> torch.Tensor:
    data = check_input(data if not isinstance(data, torch.Tensor) or data.dim() > 1 else data.unsqueeze(0))
    if data.shape[0] != 1:
        raise InputError(
            f"an attribution graph explains one sample; got a batch of {data.shape[0]}. Pass data[i:i + 1]."
        )
    return data


def _check_concept(attributor: Attributor, layer: str, concept: int, shape: torch.Size) -> None:
    count = attributor.concept(layer).count(shape)
    if not 0 <= int(concept) < count:
        raise ConceptError(
            f"concept {concept} is out of range: layer {layer!r} has {count} concepts (0 to {count - 1})"
        )


def _resolve_target(prediction: torch.Tensor, target: int | None) -> int:
    scores = prediction.flatten(2).sum(-1) if prediction.dim() > 2 else prediction
    if target is None:
        return int(scores[0].argmax())
    if not 0 <= int(target) < scores.shape[1]:
        raise InputError(f"target {target} is out of range: the model has {scores.shape[1]} outputs")
    return int(target)


def attribution_graph(
    attributor: Attributor,
    data: torch.Tensor,
    layer: str,
    concept: int,
    *,
    target: int | None = None,
    widths: Sequence[int] = (8, 4, 2),
    layer_graph: LayerGraph | None = None,
    heatmaps: bool = False,
    sole_path: bool = True,
) -> ConceptGraph:
    """Decompose concept ``concept`` of ``layer`` on one sample into lower-layer concepts, ``len(widths)`` levels deep.

    Parameters
    ----------
    attributor
        The engine (model, composite, concept types per layer).
    data
        One sample, ``(1, ...)`` or unbatched.
    layer, concept
        The root concept.
    target
        The output unit the relevance starts from; ``None``: the model's prediction.
    widths
        How many children each node keeps per input layer, level by level (e.g. ``[8, 4, 2]``); children are the
        lower concepts with the largest relevance (concepts with exactly zero relevance are left out).
    layer_graph
        Which layers feed which; default :func:`~glocal.graph.trace_layers` over the model's conv and linear layers.
    heatmaps
        Also compute each node's conditional heatmap (one more backward pass per node, to the input).
    sole_path
        Relevance flows only through the conditioned path (``True``, the default), or also around it (as in
        zennit-crp's ``exclude_parallel=False``).

    Returns
    -------
    ConceptGraph
        Nodes in breadth-first order (the root first, children most relevant first), edges child -> parent.
    """
    check_gradients_enabled()
    data = _one_sample(data)
    widths = tuple(int(w) for w in widths)
    if any(w < 1 for w in widths):
        raise ValueError(f"widths must be positive numbers of children per level, got {list(widths)}")
    graph = layer_graph if layer_graph is not None else trace_layers(attributor.model, data)
    if layer not in graph.inputs:
        raise LayerError(
            f"layer {layer!r} is not in the layer graph ({len(graph.layers)} layers: {list(graph.layers)[:6]}...); "
            "decompose a conv or linear layer, or pass layer_graph=trace_layers(model, sample, layers=[...])"
        )
    below = [layer, *graph.upstream(layer)]
    with attributor.session(  # one forward pass; without node heatmaps, nothing needs relevance at the input
        data, layers=below, heatmap=False, sole_path=sole_path, input_grad=heatmaps
    ) as run:
        prediction = run.output.detach()
        target = _resolve_target(prediction, target)
        shape = run.probes[layer].below.shape[1:]  # type: ignore[union-attr]
        _check_concept(attributor, layer, concept, shape)

        def concept_relevance(result_relevance: torch.Tensor, name: str) -> torch.Tensor:
            return attributor.concept(name).relevance(result_relevance).detach().double()

        plain = run.attribute(Condition(targets=(target,)), record=[layer])
        root_relevance = float(concept_relevance(plain.relevances[layer], layer)[0, int(concept)])
        root_path: Path_ = ((layer, int(concept)),)
        ids = {root_path: _path_id(root_path)}
        nodes = [_node(root_path, ids[root_path], root_relevance, root_relevance)]
        relevance_of = {root_path: root_relevance}
        edges: list[ConceptEdge] = []
        frontier = [root_path]
        for width in widths:
            next_frontier: list[Path_] = []
            by_layer: dict[str, list[Path_]] = {}
            for path in frontier:
                by_layer.setdefault(path[-1][0], []).append(path)
            children_of: dict[Path_, list[tuple[Path_, ConceptEdge]]] = {}
            for parent_layer, paths in by_layer.items():
                lower = list(graph.inputs[parent_layer])
                if not lower:
                    continue
                conditions = [Condition(targets=(target,), layers={name: (c,) for name, c in path}) for path in paths]
                result = run.attribute(conditions, record=lower, heatmap=False)
                # all members' concept relevances per lower layer at once: one row per member
                rows, totals, chosen = {}, {}, {}
                for name in lower:
                    scores = concept_relevance(result.relevances[name], name)
                    rows[name] = scores.tolist()
                    totals[name] = scores.abs().sum(1).tolist()
                    chosen[name] = _ranked(scores, width)
                for m, path in enumerate(paths):
                    parent_relevance = relevance_of[path]
                    found: list[tuple[Path_, ConceptEdge]] = []
                    for name in lower:
                        row, total = rows[name][m], totals[name][m]
                        for c in chosen[name][m]:
                            value = row[c]
                            child = (*path, (name, int(c)))
                            relevance_of[child] = value
                            ids[child] = f"{ids[path]}/{name}:{c}"
                            found.append(
                                (
                                    child,
                                    ConceptEdge(
                                        child=ids[child],
                                        parent=ids[path],
                                        relevance=value,
                                        share=_ratio(value, parent_relevance),
                                        normalized=_ratio(value, total),
                                    ),
                                )
                            )
                    children_of[path] = found
            for path in frontier:  # keep breadth-first order: parents in order, children most relevant first
                for child, edge in children_of.get(path, []):
                    nodes.append(_node(child, ids[child], relevance_of[child], root_relevance))
                    edges.append(edge)
                    next_frontier.append(child)
            frontier = next_frontier
        if heatmaps:
            conditions = [Condition(targets=(target,), layers={name: (c,) for name, c in node.path}) for node in nodes]
            result = run.attribute(conditions, record=[], heatmap=True)
            assert result.heatmap is not None
            maps = result.heatmap.detach().cpu()
            nodes = [_with_heatmap(node, maps[i]) for i, node in enumerate(nodes)]
    return ConceptGraph(
        nodes=tuple(nodes), edges=tuple(edges), target=target, widths=widths, prediction=prediction.cpu()
    )


def _ranked(scores: torch.Tensor, k: int) -> list[list[int]]:
    """Per row of ``(M, C)`` concept scores, the ids of the ``k`` largest, ties to the lower id. Concepts with zero
    relevance are left out: they are no part of the concept above."""
    values = scores.tolist()
    return [
        [c for c in order if row[c] != 0][:k]
        for order, row in zip(scores.argsort(dim=1, descending=True, stable=True).tolist(), values, strict=True)
    ]


def _ratio(value: float, total: float) -> float:
    return value / total if total != 0 and math.isfinite(total) else 0.0


def _node(path: Path_, id: str, relevance: float, root_relevance: float) -> ConceptNode:
    layer, concept = path[-1]
    return ConceptNode(
        id=id,
        layer=layer,
        concept=concept,
        path=path,
        relevance=relevance,
        share_of_root=_ratio(relevance, root_relevance),
    )


def _with_heatmap(node: ConceptNode, heatmap: torch.Tensor) -> ConceptNode:
    return ConceptNode(
        id=node.id,
        layer=node.layer,
        concept=node.concept,
        path=node.path,
        relevance=node.relevance,
        share_of_root=node.share_of_root,
        heatmap=heatmap,
    )
