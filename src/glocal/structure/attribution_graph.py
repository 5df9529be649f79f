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
import math
from collections.abc import Sequence

import torch

from ..attribution.concepts import check_concept_id
from ..attribution.conditions import Condition
from ..attribution.engine import Attributor
from ..attribution.inputs import check_gradients_enabled, check_one_sample
from ..attribution.selectors import top_nonzero
from ..attribution.targets import resolve_targets
from ..errors import InputError, LayerError
from ..progress import progress_bar
from .concept_graph import ConceptEdge, ConceptGraph, ConceptNode
from .layer_graph import LayerGraph, default_layer_graph
from .steps import Steps, path_id

__all__ = ["MAX_NODES", "attribution_graph", "node_bound"]


MAX_NODES = 256
"""The default node budget of :func:`attribution_graph` (the default widths ``[8, 4, 2]`` give at most 105)."""


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
    data = check_one_sample(data)
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
        check_concept_id(attributor.concept(layer), layer, concept, shape)

        def concept_relevance(result_relevance: torch.Tensor, name: str) -> torch.Tensor:
            return attributor.concept(name).relevance(result_relevance).detach().double()

        plain = run.attribute(Condition(targets=(target,)), record=[layer])
        root_relevance = float(concept_relevance(plain.relevances[layer], layer)[0, int(concept)])
        root_path: Steps = ((layer, int(concept)),)
        ids = {root_path: path_id(root_path)}
        nodes = [_node(root_path, ids[root_path], root_relevance, root_relevance)]
        relevance_of = {root_path: root_relevance}
        edges: list[ConceptEdge] = []
        frontier = [root_path]
        for width in widths:
            next_frontier: list[Steps] = []
            by_layer: dict[str, list[Steps]] = {}
            for path in frontier:
                by_layer.setdefault(path[-1][0], []).append(path)
            children_of: dict[Steps, list[tuple[Steps, ConceptEdge]]] = {}
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
                    chosen[name] = top_nonzero(scores, width)
                for m, path in enumerate(paths):
                    parent_relevance = relevance_of[path]
                    found: list[tuple[Steps, ConceptEdge]] = []
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


def _ratio(value: float, total: float) -> float:
    return value / total if total != 0 and math.isfinite(total) else 0.0


def _node(path: Steps, id: str, relevance: float, root_relevance: float) -> ConceptNode:
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
