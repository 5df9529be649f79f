"""Concept paths: a chain of concepts through the layers, each step's conditional heatmap and where to go next.

A path such as ``features.40:117 -> features.37:5 -> features.34:392`` conditions the relevance on each of its
concepts in turn. :func:`concept_path` gives, at every step, the step's conditional heatmap (relevance from the
target through the path so far) and the most relevant concepts one layer further down, and can extend the path by
following the most relevant one. Whether several images take the same path is
:mod:`~glocal.structure.path_consistency`'s question.

Notation: ``R(c | p)`` is the relevance of concept ``c`` when the relevance flows from the target through the
concepts of path ``p`` only (glocal's sole-path conditioning); a step's share is ``R(step | path above) /
R(previous step | path above it)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..attribution.concepts import check_concept_id
from ..attribution.conditions import Condition
from ..attribution.engine import Attributor
from ..attribution.inputs import check_gradients_enabled, check_one_sample
from ..attribution.selectors import top_nonzero
from ..attribution.targets import resolve_targets
from ..errors import InputError, LayerError
from ..progress import progress_bar
from ..serialize import heatmap_entry, heatmap_from, read_json, write_json
from .layer_graph import LayerGraph, default_layer_graph
from .steps import Step, parse_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Candidate", "ConceptPath", "PathStep", "concept_path", "path_layer_graph"]


@dataclass(frozen=True)
class Candidate:
    """A concept one layer below a path step: where the path could go next."""

    layer: str
    concept: int
    relevance: float
    share: float
    heatmap: torch.Tensor | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class PathStep:
    """One step of a :class:`ConceptPath`.

    Attributes
    ----------
    layer, concept
        The step's concept.
    relevance
        ``R(step | steps above)``.
    share
        ``relevance / R(previous step)``; for the first step, its share of the layer's relevance
        (``relevance / sum over the layer's concepts of |R|``).
    heatmap
        ``(H, W)`` conditional heatmap through the path up to and including this step (``None`` when loaded from
        JSON saved without heatmaps).
    candidates
        The ``k`` most relevant concepts of the layers feeding this one, conditioned on the path so far.
    followed
        Whether the step was added by following the most relevant candidate.
    """

    layer: str
    concept: int
    relevance: float
    share: float
    heatmap: torch.Tensor | None = field(compare=False, repr=False)
    candidates: tuple[Candidate, ...]
    followed: bool = False


@dataclass(frozen=True)
class ConceptPath:
    """The result of :func:`concept_path`."""

    steps: tuple[PathStep, ...]
    target: int

    @property
    def chain(self) -> list[Step]:
        return [(step.layer, step.concept) for step in self.steps]

    def __str__(self) -> str:
        return " -> ".join(f"{layer}:{concept}" for layer, concept in self.chain)

    def to_dict(self, heatmaps: bool = False) -> dict[str, Any]:
        """JSON-serialisable form; the steps' and candidates' heatmaps only with ``heatmaps=True``."""

        return {
            "target": self.target,
            "steps": [
                {
                    "layer": step.layer,
                    "concept": step.concept,
                    "relevance": step.relevance,
                    "share": step.share,
                    "followed": step.followed,
                    **heatmap_entry(step.heatmap, heatmaps),
                    "candidates": [
                        {
                            "layer": c.layer,
                            "concept": c.concept,
                            "relevance": c.relevance,
                            "share": c.share,
                            **heatmap_entry(c.heatmap, heatmaps),
                        }
                        for c in step.candidates
                    ],
                }
                for step in self.steps
            ],
        }

    def to_json(self, path: str | Path | None = None, indent: int | None = 2, heatmaps: bool = False) -> str:
        """The path as JSON text (see :meth:`to_dict`); also written to ``path`` when given."""
        return write_json(self.to_dict(heatmaps=heatmaps), path, indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConceptPath:
        """The path back from :meth:`to_dict`'s form (heatmaps where they were saved, else ``None``)."""

        try:
            steps = tuple(
                PathStep(
                    layer=str(step["layer"]),
                    concept=int(step["concept"]),
                    relevance=float(step["relevance"]),
                    share=float(step["share"]),
                    heatmap=heatmap_from(step),
                    candidates=tuple(
                        Candidate(
                            layer=str(c["layer"]),
                            concept=int(c["concept"]),
                            relevance=float(c["relevance"]),
                            share=float(c["share"]),
                            heatmap=heatmap_from(c),
                        )
                        for c in step["candidates"]
                    ),
                    followed=bool(step["followed"]),
                )
                for step in data["steps"]
            )
            return cls(steps=steps, target=int(data["target"]))
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(
                f"not a concept path in ConceptPath.to_dict's form ({type(error).__name__}: {error}); load what "
                "ConceptPath.to_json wrote"
            ) from error

    @classmethod
    def from_json(cls, source: str | Path) -> ConceptPath:
        """The path back from :meth:`to_json`: a file path, or the JSON text itself."""
        return cls.from_dict(read_json(source))

    def figure(self, inputs: torch.Tensor | None = None, size: float = 2.2) -> Figure:
        """A strip of the steps' conditional heatmaps (after the input, when given); needs matplotlib."""
        from ..viz.graphs import path_figure

        return path_figure(self, inputs=inputs, size=size)


def path_layer_graph(
    attributor: Attributor, data: torch.Tensor, layer_graph: LayerGraph | None, path: Sequence[Step] | str
) -> LayerGraph:
    """``layer_graph``, or when it is ``None`` the default layer graph (see
    :func:`~glocal.structure.layer_graph.default_layer_graph`) for a path starting with ``path``'s first step."""
    if layer_graph is not None:
        return layer_graph
    first = parse_path(path)[0][0] if isinstance(path, str) else str(next(iter(path), ("", 0))[0])
    return default_layer_graph(attributor.model, data, first)


def _check_chain(chain: Sequence[Step], graph: LayerGraph) -> list[Step]:
    steps = [(str(layer), int(concept)) for layer, concept in chain]
    if not steps:
        raise InputError("a path needs at least one step (layer, concept)")
    for layer, _ in steps:
        if layer not in graph.inputs:
            raise LayerError(
                f"layer {layer!r} is not in the layer graph ({list(graph.layers)[:6]}...); name conv or linear "
                "layers, or blocks' outputs (trace_layers(model, sample, granularity='blocks')), or pass "
                "layer_graph=trace_layers(model, sample, layers=[...])"
            )
    for (upper, _), (lower, _) in itertools.pairwise(steps):
        if lower not in graph.upstream(upper):
            raise InputError(
                f"the path goes from {upper!r} to {lower!r}, but {lower!r} does not feed {upper!r}; each step must "
                f"be in a layer below the previous one (layers feeding {upper!r}: {list(graph.inputs[upper])})"
            )
    return steps


def concept_path(
    attributor: Attributor,
    data: torch.Tensor,
    path: Sequence[Step] | str,
    *,
    target: int | None = None,
    k: int = 5,
    follow: int = 0,
    layer_graph: LayerGraph | None = None,
    candidate_heatmaps: bool = False,
    progress: bool = True,
) -> ConceptPath:
    """Each step's conditional heatmap and the most relevant next concepts, along a path of concepts.

    Parameters
    ----------
    attributor
        The engine.
    data
        One sample, ``(1, ...)`` or unbatched.
    path
        ``[(layer, concept), ...]`` from the top down, or text such as ``"features.40:117 -> features.37:5"``. Each
        layer must be fed (directly or not) by the one before it.
    target
        The output unit the relevance starts from; ``None``: the model's prediction.
    k
        How many next concepts each step lists (over all layers feeding it, most relevant first).
    follow
        Extend the path by this many steps, each time to the most relevant candidate.
    layer_graph
        Which layers feed which; default :func:`~glocal.trace_layers` on the model's conv and linear layers, or
        on the outputs of its blocks when the first step is a block (see
        :func:`~glocal.attribution_graph`).
    candidate_heatmaps
        Also compute each candidate's conditional heatmap (one more backward pass per candidate).
    progress
        Show a progress bar (steps) when the path takes more than a few seconds.
    """
    check_gradients_enabled()
    if k < 1:
        raise ValueError(f"k must be a positive number of candidates, got {k}")
    if follow < 0:
        raise ValueError(f"follow must be a number of steps >= 0, got {follow}")
    data = check_one_sample(data)
    graph = path_layer_graph(attributor, data, layer_graph, path)
    chain = _check_chain(parse_path(path) if isinstance(path, str) else path, graph)
    given = len(chain)
    layers = list(dict.fromkeys([chain[0][0], *graph.upstream(chain[0][0])]))
    with (
        attributor.session(data, layers=layers, heatmap=False) as run,
        progress_bar(given + follow, "concept path", enabled=progress, unit="step") as bar,
    ):
        target = resolve_targets(target, run.output.detach()[:1])[0]
        for layer, concept in chain:
            check_concept_id(attributor.concept(layer), layer, concept, run.probes[layer].below.shape[1:])  # type: ignore[union-attr]
        first_layer, first_concept = chain[0]
        plain = run.attribute(Condition(targets=(target,)), record=[first_layer])
        layer_relevance = attributor.concept(first_layer).relevance(plain.relevances[first_layer])[0].double()
        previous = float(layer_relevance[first_concept])
        total = float(layer_relevance.abs().sum())
        steps: list[PathStep] = []
        arriving: dict[str, torch.Tensor] = {}  # relevance at the layers below the previous step, given the path
        index = 0
        while index < len(chain):
            layer, concept = chain[index]
            condition = Condition(targets=(target,), layers={name: (c,) for name, c in chain[: index + 1]})
            lower = list(graph.inputs[layer])
            # the next given step may lie further down than the layers feeding this one: record it in the same pass
            record = [*lower, chain[index + 1][0]] if index + 1 < len(chain) else lower
            result = run.attribute(condition, record=list(dict.fromkeys(record)), heatmap=True)
            assert result.heatmap is not None
            if index == 0:
                relevance, share = previous, previous / total if total else 0.0
            else:
                relevance = float(attributor.concept(layer).relevance(arriving[layer])[0, concept])
                share = relevance / previous if previous else 0.0
            arriving = result.relevances
            candidates = _candidates(attributor, result.relevances, lower, relevance, k)
            if candidate_heatmaps and candidates:
                conditions = [
                    Condition(
                        targets=(target,),
                        layers={**{name: (c,) for name, c in chain[: index + 1]}, c.layer: (c.concept,)},
                    )
                    for c in candidates
                ]
                maps = run.attribute(conditions, record=[], heatmap=True).heatmap
                assert maps is not None
                candidates = [
                    Candidate(c.layer, c.concept, c.relevance, c.share, maps[i].detach().cpu())
                    for i, c in enumerate(candidates)
                ]
            steps.append(
                PathStep(
                    layer=layer,
                    concept=concept,
                    relevance=relevance,
                    share=share,
                    heatmap=result.heatmap[0].detach().cpu(),
                    candidates=tuple(candidates),
                    followed=index >= given,
                )
            )
            previous = relevance
            bar.update(1)
            if index == len(chain) - 1 and follow > 0 and candidates:
                best = candidates[0]
                chain.append((best.layer, best.concept))
                follow -= 1
            index += 1
    return ConceptPath(steps=tuple(steps), target=target)


def _candidates(
    attributor: Attributor,
    relevances: dict[str, torch.Tensor],
    lower: Sequence[str],
    parent: float,
    k: int,
) -> list[Candidate]:
    """The ``k`` most relevant concepts over all ``lower`` layers (ties: the earlier layer, then the lower id)."""
    found: list[tuple[float, int, int, str]] = []
    for order, name in enumerate(lower):
        scores = attributor.concept(name).relevance(relevances[name])[:1].double()
        row = scores[0].tolist()
        found.extend((row[c], order, c, name) for c in top_nonzero(scores, k)[0])
    found.sort(key=lambda item: (-item[0], item[1], item[2]))
    return [Candidate(name, c, value, value / parent if parent else 0.0) for value, _, c, name in found[:k]]
