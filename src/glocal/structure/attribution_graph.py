"""Attribution graphs: a concept decomposed into the lower-layer concepts it is built from, recursively.

For one sample and target, the root concept ``(layer, concept)`` passes its relevance down to the layers that feed
``layer`` (found by :func:`~glocal.trace_layers`, through skip connections and any functional operation). Its
most relevant lower concepts become its children; each child is decomposed in turn, conditioned on its whole path
from the root, down ``len(widths)`` levels. An edge carries the relevance that flows from the child into its
parent::

    R(child | path to parent)       "relevance"   (summed over the child's units)
    relevance / R(parent | path)    "share"       (of the parent's relevance; the children of all its input layers
                                                   sum to one up to what biases and stabilisers absorb)
    relevance / sum_c |R(c | path)| "normalized"  (over the child's layer; zennit-crp's ``abs_norm``)

One forward pass serves the whole graph. The relevance arriving at a path's layers is computed once and reused; the
backward pass of each decomposition runs only from the parent's layer to the layers feeding it and stops there.

>>> _ = torch.manual_seed(0)
>>> net = torch.nn.Sequential(
...     torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
...     torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 2))
>>> graph = attribution_graph(Attributor(net), torch.rand(1, 1, 8, 8), "5", 1, target=1, widths=[2, 2])
>>> len(graph.nodes) <= 1 + 2 + 2 * 2, graph.root.id, [edge.parent for edge in graph.edges][:2]
(True, '5:1', ['5:1', '5:1'])
"""

from __future__ import annotations

import functools
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..attribution.conditions import Condition
from ..attribution.engine import Attributor
from ..attribution.inputs import check_gradients_enabled, check_input
from ..attribution.layers import get_layer_names
from ..attribution.targets import resolve_targets
from ..errors import ConceptError, InputError, LayerError
from ..progress import progress_bar
from ..serialize import heatmap_entry, heatmap_from, read_json, tensor_from_dict, tensor_to_dict, write_json
from .layer_graph import DEFAULT_TYPES, LayerGraph, block_layers, trace_layers

if TYPE_CHECKING:
    import networkx
    from matplotlib.figure import Figure

__all__ = [
    "MAX_NODES",
    "ConceptEdge",
    "ConceptGraph",
    "ConceptNode",
    "attribution_graph",
    "node_bound",
    "parse_path",
]

Path_ = tuple[tuple[str, int], ...]

MAX_NODES = 256
"""The default node budget of :func:`attribution_graph` (the default widths ``[8, 4, 2]`` give at most 105)."""


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
        :func:`~glocal.viz.figures.graph_figure`.

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
        from ..viz.figures import graph_figure

        return graph_figure(self, inputs=inputs, size=size, dpi=dpi, max_width=max_width)

    def save(
        self, path: str | Path, inputs: torch.Tensor | None = None, dpi: int = 120, max_width: int | None = 2000
    ) -> Path:
        """Draw the graph (see :meth:`figure`) into ``path`` (``.png``, ``.svg`` or ``.pdf``), at most ``max_width``
        pixels wide."""
        path = Path(path)
        self.figure(inputs=inputs, dpi=dpi, max_width=max_width).savefig(path, dpi=dpi)
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
        if not sep or not layer or ":" in layer or not concept.strip().lstrip("-").isdigit():
            raise InputError(
                f"cannot read {part!r} as a path step; write layer:concept and separate the steps with '->', e.g. "
                "'features.40:117 -> features.37:5'"
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
    max_nodes: int | None = MAX_NODES,
    per_layer: bool = False,
    progress: bool = True,
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
        How many children each node keeps, level by level (e.g. ``[8, 4, 2]``): the lower concepts with the largest
        relevance over all the layers that feed the node's layer together (ties: the earlier layer, then the lower
        id). Concepts with exactly zero relevance are left out.
    layer_graph
        Which layers feed which; default :func:`~glocal.trace_layers` over the model's conv and linear layers,
        or over the outputs of its blocks when ``layer`` is a block (e.g. ``"features.16"`` of a MobileNetV2,
        ``"layer3.1"`` of a ResNet). For residual models the blocks
        (``trace_layers(model, sample, granularity="blocks")``) give far smaller and more readable graphs.
    heatmaps
        Also compute each node's conditional heatmap (one more backward pass per node, to the input).
    sole_path
        Relevance flows only through the conditioned path (``True``, the default), or also around it (as in
        zennit-crp's ``exclude_parallel=False``).
    max_nodes
        The node budget: an :class:`~glocal.errors.InputError` before any work when ``widths`` and the layer graph
        allow more nodes than this (``None``: no budget).
    per_layer
        Keep ``widths`` children *per input layer* (zennit-crp's ``AttributionGraph`` counts this way), so a node
        fed by three layers gets up to three times as many children.
    progress
        Show a progress bar (levels) when the graph takes more than a few seconds.

    Returns
    -------
    ConceptGraph
        Nodes in breadth-first order (the root first, children most relevant first), edges child -> parent.

    Raises
    ------
    InputError
        For more than one sample, a target out of range, or ``widths`` that could exceed ``max_nodes``.
    """
    check_gradients_enabled()
    data = _one_sample(data)
    widths = tuple(int(w) for w in widths)
    if any(w < 1 for w in widths):
        raise ValueError(f"widths must be positive numbers of children per level, got {list(widths)}")
    graph = layer_graph if layer_graph is not None else default_layer_graph(attributor.model, data, layer)
    if layer not in graph.inputs:
        raise LayerError(
            f"layer {layer!r} is not in the layer graph ({len(graph.layers)} layers: {list(graph.layers)[:6]}...); "
            "decompose a conv or linear layer or a block's output, or pass "
            "layer_graph=trace_layers(model, sample, layers=[...])"
        )
    _check_budget(graph, layer, widths, per_layer, max_nodes)
    below = [layer, *graph.upstream(layer)]
    with (
        attributor.session(  # one forward pass; without node heatmaps, nothing needs relevance at the input
            data, layers=below, heatmap=False, sole_path=sole_path, input_grad=heatmaps
        ) as run,
        progress_bar(len(widths) + heatmaps, "attribution graph", enabled=progress, unit="level") as bar,
    ):
        prediction = run.output.detach()
        target = resolve_targets(target, prediction[:1])[0]
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
                    picked = [(name, c) for name in lower for c in chosen[name][m]]
                    if not per_layer:  # the largest over all input layers; ties: the earlier layer, then the lower id
                        order = {name: i for i, name in enumerate(lower)}
                        picked.sort(key=lambda item: (-rows[item[0]][m][item[1]], order[item[0]], item[1]))
                        picked = picked[:width]
                    for name, c in picked:
                        value = rows[name][m][c]
                        child = (*path, (name, int(c)))
                        relevance_of[child] = value
                        ids[child] = f"{ids[path]}/{name}:{c}"
                        edge = ConceptEdge(
                            child=ids[child],
                            parent=ids[path],
                            relevance=value,
                            share=_ratio(value, parent_relevance),
                            normalized=_ratio(value, totals[name][m]),
                        )
                        found.append((child, edge))
                    children_of[path] = found
            for path in frontier:  # keep breadth-first order: parents in order, children most relevant first
                for child, edge in children_of.get(path, []):
                    nodes.append(_node(child, ids[child], relevance_of[child], root_relevance))
                    edges.append(edge)
                    next_frontier.append(child)
            frontier = next_frontier
            bar.update(1)
        if heatmaps:
            conditions = [Condition(targets=(target,), layers={name: (c,) for name, c in node.path}) for node in nodes]
            result = run.attribute(conditions, record=[], heatmap=True)
            assert result.heatmap is not None
            maps = result.heatmap.detach().cpu()
            nodes = [_with_heatmap(node, maps[i]) for i, node in enumerate(nodes)]
            bar.update(1)
    return ConceptGraph(
        nodes=tuple(nodes),
        edges=tuple(edges),
        target=target,
        widths=widths,
        prediction=prediction.cpu(),
        per_layer=per_layer,
    )


def default_layer_graph(model: torch.nn.Module, data: torch.Tensor, layer: str) -> LayerGraph:
    """The layer graph used when none is given: the model's conv and linear layers, or, when ``layer`` is the output
    of a block (see :func:`~glocal.structure.layer_graph.block_layers`) rather than one of those layers, the
    blocks' outputs."""
    if layer not in get_layer_names(model, list(DEFAULT_TYPES)) and layer in block_layers(model):
        return trace_layers(model, data, granularity="blocks")
    return trace_layers(model, data)


def node_bound(graph: LayerGraph, layer: str, widths: Sequence[int], per_layer: bool = False) -> int:
    """The most nodes an attribution graph rooted in ``layer`` can have with these ``widths`` on ``graph``.

    Each node has at most ``widths[level]`` children (per input layer with ``per_layer``); a node of a layer that
    nothing feeds has none.

    >>> from glocal.structure.layer_graph import LayerGraph
    >>> residual = LayerGraph(("a", "b", "c"), {"a": (), "b": ("a",), "c": ("a", "b")})
    >>> node_bound(residual, "c", [4, 3]), node_bound(residual, "c", [4, 3], per_layer=True)
    (17, 21)
    """
    widths = tuple(widths)

    @functools.cache
    def bound(name: str, level: int) -> int:
        lower = graph.inputs[name]
        if level == len(widths) or not lower:
            return 1
        below = [bound(other, level + 1) for other in lower]
        return 1 + widths[level] * (sum(below) if per_layer else max(below))

    return bound(layer, 0)


def _check_budget(graph: LayerGraph, layer: str, widths: tuple[int, ...], per_layer: bool, limit: int | None) -> None:
    if limit is None:
        return
    bound = node_bound(graph, layer, widths, per_layer)
    if bound <= limit:
        return
    counting = " per input layer (per_layer=True)" if per_layer else ""
    fed = max(len(graph.inputs[name]) for name in (layer, *graph.upstream(layer)))
    hint = (
        f"; some layers here are fed by up to {fed} layers (skip connections): for a residual model, "
        "layer_graph=trace_layers(model, sample, granularity='blocks') uses the blocks' outputs instead"
        if fed > 1
        else ""
    )
    raise InputError(
        f"widths {list(widths)}{counting} allow up to {bound} nodes below {layer!r}, more than the node budget "
        f"max_nodes={limit}. Pass smaller widths or fewer levels{hint}, or raise the budget "
        f"(max_nodes={bound} or None)."
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
