"""zennit-crp's ``AttributionGraph`` and ``trace_model_graph`` on glocal's engine and layer graph.

zennit-crp code runs unchanged after changing the imports::

    from glocal.compat import AttributionGraph, CondAttribution, ChannelConcept, trace_model_graph

    graph = trace_model_graph(model, sample, layer_names)
    attgraph = AttributionGraph(CondAttribution(model), graph, {name: ChannelConcept() for name in layer_names})
    nodes, connections = attgraph(sample, composite, concept_id, layer_name, target, width=[8, 4])

The results (``nodes`` and ``connections``, in zennit-crp's order and with its relevance values) equal zennit-crp's,
but one forward pass serves all levels and each level's backward pass stops at the layers it records, instead of a
forward and a full backward pass per batch of conditions. The layer graph comes from one forward pass through the
autograd graph (or ``torch.fx``), not from ``torch.jit.trace``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
import zennit.core

from ..attribution.conditions import OUTPUT
from ..attribution.engine import Attributor
from ..attribution.inputs import check_gradients_enabled
from ..structure.layer_graph import LayerGraph, trace_layers
from .conditional import CondAttribution
from .translation import Translator

__all__ = ["AttributionGraph", "AttributionGraphResults", "ModelGraph", "attrGraphResult", "trace_model_graph"]


class AttributionGraphResults(NamedTuple):
    """zennit-crp's ``AttributionGraphResults``: ``nodes`` ``[(layer, concept), ...]`` and ``connections``
    ``{(layer, concept): [(lower layer, lower concept, relevance), ...]}``."""

    nodes: list[tuple[str, int]]
    connections: dict[tuple[str, int], list[tuple[str, int, float]]]


attrGraphResult = AttributionGraphResults
"""zennit-crp's name for :class:`AttributionGraphResults`."""


class ModelGraph:
    """Which of ``layer_names`` feed which (zennit-crp's ``ModelGraph``), from :func:`glocal.trace_layers`.

    Parameters
    ----------
    graph
        The traced layer graph.
    layer_names
        The layers it connects.
    retrace
        Traces the model again for other layers (used by :meth:`set_layer_names`); :func:`trace_model_graph` gives it.
    """

    def __init__(
        self,
        graph: LayerGraph,
        layer_names: Sequence[str],
        retrace: Callable[[list[str]], LayerGraph] | None = None,
    ) -> None:
        self.graph = graph
        self.layer_names = list(layer_names)
        self._retrace = retrace

    def set_layer_names(self, layer_names: Sequence[str]) -> None:
        """Connect these layers instead (zennit-crp's ``set_layer_names``); traces the model again."""
        if self._retrace is None:
            raise TypeError("this ModelGraph was not made by trace_model_graph; call trace_model_graph with the layers")
        self.graph = self._retrace(list(layer_names))
        self.layer_names = list(layer_names)

    def find_input_layers(self, layer_name: str) -> list[str]:
        """The layers among ``layer_names`` whose output reaches ``layer_name``'s input without another one between.

        Raises
        ------
        KeyError
            ``layer_name`` is not one of the traced layers.
        """
        if layer_name not in self.graph.inputs:
            raise KeyError(f"{layer_name} does not exist")
        return list(self.graph.inputs[layer_name])

    def __str__(self) -> str:
        return "\n".join(f"{name} -> {', '.join(self.graph.outputs(name)) or 'end'}" for name in self.graph.layers)


def trace_model_graph(
    model: torch.nn.Module, sample: torch.Tensor, layer_names: Sequence[str], debug: bool = False
) -> ModelGraph:
    """zennit-crp's ``trace_model_graph``: how ``layer_names`` connect, from one forward pass of ``sample``.

    ``debug`` is accepted for compatibility (zennit-crp prints its jit graph); here it logs nothing extra.
    """
    check_gradients_enabled()

    def retrace(names: list[str]) -> LayerGraph:
        return trace_layers(model, sample, layers=names)

    return ModelGraph(retrace(list(layer_names)), layer_names, retrace)


class AttributionGraph:
    """zennit-crp's ``AttributionGraph``: decompose a concept into lower-layer concepts, level by level.

    Parameters
    ----------
    attribution
        A :class:`~glocal.compat.CondAttribution` (only its model is used).
    graph
        The layer graph from :func:`trace_model_graph`.
    layer_map
        Layer name to concept object (e.g. :class:`~glocal.compat.ChannelConcept`), whose ``mask`` conditions the
        relevance and whose ``attribute`` sums it per concept.
    """

    def __init__(self, attribution: CondAttribution, graph: ModelGraph, layer_map: Mapping[str, Any]) -> None:
        self.attribution = attribution
        self.graph = graph
        self.set_layer_map(layer_map)

    def set_layer_map(self, layer_map: Mapping[str, Any]) -> None:
        """Set the concept objects per layer."""
        self.layer_map = dict(layer_map)
        self.mask_map = {name: concept.mask for name, concept in self.layer_map.items()}

    def __call__(
        self,
        sample: torch.Tensor,
        composite: zennit.core.Composite | str | None,
        concept_id: int,
        layer_name: str,
        target: int | None = None,
        width: Sequence[int] = (4, 2),
        parent_c_id: int | None = None,
        parent_layer: str | None = None,
        abs_norm: bool = True,
        batch_size: int = 16,
        verbose: bool = True,
    ) -> AttributionGraphResults:
        """Decompose concept ``concept_id`` of ``layer_name`` (zennit-crp's signature and results).

        With ``target``, relevance starts at that output unit; without, at the concept's (or ``parent_layer``'s)
        activation. Each level keeps the ``width[i]`` lower concepts with the largest relevance per input layer,
        conditioned on the decomposed concept and the original one (``parent_layer``/``parent_c_id``, default the
        root). Relevance may also flow around the conditioned layers (zennit-crp's ``exclude_parallel=False``).
        ``batch_size`` and ``verbose`` are used only when ``attribution`` overrides a step of ``CondAttribution``
        (see :meth:`~glocal.compat.CondAttribution.overridden_steps`): the graph is then built as zennit-crp builds
        it, from ``attribution.generate`` with the subclass's steps.
        """
        check_gradients_enabled()
        overridden = getattr(self.attribution, "overridden_steps", None)
        if overridden is not None and overridden():
            return self._via_generate(
                sample, composite, concept_id, layer_name, target, width, parent_c_id, parent_layer, abs_norm,
                batch_size, verbose,
            )  # fmt: skip
        output = getattr(self.attribution, "MODEL_OUTPUT_NAME", OUTPUT)
        translator = Translator(self.mask_map, output)
        if target is not None:
            start_layer = None
        elif parent_layer:
            start_layer = parent_layer
        else:
            start_layer = layer_name
        parent_condition: dict[str, list[int]] = {}
        if parent_c_id is not None and parent_layer:
            parent_condition[parent_layer] = [parent_c_id]
        else:
            parent_condition[layer_name] = [concept_id]
        if target is not None:
            parent_condition[output] = [target]

        nodes: list[tuple[str, int]] = [(layer_name, concept_id)]
        connections: dict[tuple[str, int], list[tuple[str, int, float]]] = {}
        probed = [layer_name, *self.graph.graph.upstream(layer_name)]
        if parent_layer:
            probed.append(parent_layer)
        attributor = Attributor(self.attribution.model, composite, concepts=translator.concepts, output_name=output)
        with attributor.session(
            sample,
            layers=list(dict.fromkeys(probed)),
            start_layer=start_layer,
            sole_path=False,
            heatmap=False,
            input_grad=False,
        ) as run:
            level = [(layer_name, concept_id)]
            for w in width:
                # concepts of layers that nothing feeds (e.g. a first layer) have no children: skip their pass
                decomposed = [(name, concept) for name, concept in level if self.graph.find_input_layers(name)]
                input_layers = list(
                    dict.fromkeys(lower for name, _ in decomposed for lower in self.graph.find_input_layers(name))
                )
                following: list[tuple[str, int]] = []
                if decomposed:
                    conditions = [
                        translator.condition({name: [concept], **parent_condition}) for name, concept in decomposed
                    ]
                    result = run.attribute(conditions, record=input_layers, heatmap=False)
                    # all conditions' concept relevances per lower layer at once (one row per condition)
                    scores = {
                        lower: self.layer_map[lower].attribute(result.relevances[lower], abs_norm=abs_norm)
                        for lower in input_layers
                    }
                    ranked = {
                        lower: torch.argsort(values, dim=1, descending=True)[:, :w].tolist()
                        for lower, values in scores.items()
                    }
                    for i, (name, concept) in enumerate(decomposed):
                        for lower in self.graph.find_input_layers(name):
                            chosen = ranked[lower][i]
                            row = scores[lower][i].tolist()
                            nodes.extend((lower, c) for c in chosen)
                            following.extend((lower, c) for c in chosen)
                            connections.setdefault((name, concept), []).extend((lower, c, row[c]) for c in chosen)
                level = following
        return AttributionGraphResults(nodes, connections)

    def _via_generate(
        self,
        sample: torch.Tensor,
        composite: zennit.core.Composite | str | None,
        concept_id: int,
        layer_name: str,
        target: int | None,
        width: Sequence[int],
        parent_c_id: int | None,
        parent_layer: str | None,
        abs_norm: bool,
        batch_size: int,
        verbose: bool,
    ) -> AttributionGraphResults:
        """zennit-crp's algorithm: each level's conditions go through ``attribution.generate``
        (``exclude_parallel=False``)."""
        output = getattr(self.attribution, "MODEL_OUTPUT_NAME", OUTPUT)
        start_layer = None if target is not None else (parent_layer or layer_name)
        parent_condition: dict[str, list[int]] = (
            {parent_layer: [parent_c_id]} if parent_c_id is not None and parent_layer else {layer_name: [concept_id]}
        )
        if target is not None:
            parent_condition[output] = [target]
        nodes: list[tuple[str, int]] = [(layer_name, concept_id)]
        connections: dict[tuple[str, int], list[tuple[str, int, float]]] = {}
        level = [(layer_name, concept_id)]
        for w in width:
            if not level:
                break
            conditions = [{name: [concept], **parent_condition} for name, concept in level]
            input_layers = list(
                dict.fromkeys(lower for name, _ in level for lower in self.graph.find_input_layers(name))
            )
            following: list[tuple[str, int]] = []
            results = self.attribution.generate(
                sample, conditions, composite, record_layer=input_layers, mask_map=self.mask_map,
                start_layer=start_layer, batch_size=batch_size, verbose=verbose, exclude_parallel=False,
            )  # fmt: skip
            for b, result in enumerate(results):
                for i, (name, concept) in enumerate(level[b * batch_size : (b + 1) * batch_size]):
                    for lower in self.graph.find_input_layers(name):
                        scores = self.layer_map[lower].attribute(result.relevances[lower][[i]], abs_norm=abs_norm)[0]
                        chosen = torch.argsort(scores, descending=True)[:w].tolist()
                        nodes.extend((lower, c) for c in chosen)
                        following.extend((lower, c) for c in chosen)
                        connections.setdefault((name, concept), []).extend((lower, c, float(scores[c])) for c in chosen)
            level = following
        return AttributionGraphResults(nodes, connections)
