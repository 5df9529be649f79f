"""Concept paths: a chain of concepts through the layers, and how consistent such chains are across images.

A path such as ``features.40:117 -> features.37:5 -> features.34:392`` conditions the relevance on each of its
concepts in turn. :func:`concept_path` gives, at every step, the step's conditional heatmap (relevance from the
target through the path so far) and the most relevant concepts one layer further down, and can extend the path by
following the most relevant one. :func:`path_consistency` asks whether several images (e.g. of one class) use the
same concepts: how often each concept is among the top ``k`` at each step (votes), how much the images' top sets
overlap (mean pairwise Jaccard index), and whether a concept's relevance sits at the same relative place in each
image (spatial agreement), combined into one score per concept.

Notation: ``R(c | p)`` is the relevance of concept ``c`` when the relevance flows from the target through the
concepts of path ``p`` only (glocal's sole-path conditioning); a step's share is ``R(step | path above) /
R(previous step | path above it)``.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..attribution.conditions import Condition
from ..attribution.engine import Attributor
from ..attribution.inputs import check_gradients_enabled, check_input
from ..attribution.targets import resolve_targets
from ..errors import InputError, LayerError
from ..progress import progress_bar
from ..serialize import heatmap_entry, heatmap_from, read_json, write_json
from .attribution_graph import _check_concept, _one_sample, _ranked, default_layer_graph, parse_path
from .layer_graph import LayerGraph

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Candidate",
    "ConceptConsistency",
    "ConceptPath",
    "PathConsistency",
    "PathStep",
    "concept_path",
    "mean_jaccard",
    "path_consistency",
    "relevance_centroid",
    "spatial_agreement",
]

Step = tuple[str, int]


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
        from ..viz.figures import path_figure

        return path_figure(self, inputs=inputs, size=size)


def _layer_graph(
    attributor: Attributor, data: torch.Tensor, layer_graph: LayerGraph | None, path: Sequence[Step] | str
) -> LayerGraph:
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
    data = _one_sample(data)
    graph = _layer_graph(attributor, data, layer_graph, path)
    chain = _check_chain(parse_path(path) if isinstance(path, str) else path, graph)
    given = len(chain)
    layers = list(dict.fromkeys([chain[0][0], *graph.upstream(chain[0][0])]))
    with (
        attributor.session(data, layers=layers, heatmap=False) as run,
        progress_bar(given + follow, "concept path", enabled=progress, unit="step") as bar,
    ):
        target = resolve_targets(target, run.output.detach()[:1])[0]
        for layer, concept in chain:
            _check_concept(attributor, layer, concept, run.probes[layer].below.shape[1:])  # type: ignore[union-attr]
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
        found.extend((row[c], order, c, name) for c in _ranked(scores, k)[0])
    found.sort(key=lambda item: (-item[0], item[1], item[2]))
    return [Candidate(name, c, value, value / parent if parent else 0.0) for value, _, c, name in found[:k]]


# -- consistency across images ----------------------------------------------------------------------------------------


def mean_jaccard(sets: Sequence[set[Any]]) -> float:
    """Mean Jaccard index ``|A & B| / |A | B|`` over all pairs of ``sets`` (1.0 for fewer than two sets).

    >>> mean_jaccard([{1, 2, 3}, {2, 3, 4}, {1, 2, 3}])   # pairs: 2/4, 3/3, 2/4
    0.6666666666666666
    """
    pairs = list(itertools.combinations(sets, 2))
    if not pairs:
        return 1.0
    return sum(len(a & b) / len(a | b) if a | b else 1.0 for a, b in pairs) / len(pairs)


def relevance_centroid(heatmap: torch.Tensor) -> tuple[float, float] | None:
    """Where a heatmap's positive relevance lies: its centre of mass as ``(row, column)`` fractions in [0, 1].

    ``None`` when there is no positive relevance. The centre of mass is steadier than the single largest pixel.

    >>> relevance_centroid(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 2.0]]))
    (0.75, 1.0)
    """
    positive = heatmap.detach().double().clamp(min=0)
    total = float(positive.sum())
    if total <= 0 or not math.isfinite(total):
        return None
    height, width = positive.shape
    rows = torch.arange(height, dtype=torch.float64) / max(height - 1, 1)
    columns = torch.arange(width, dtype=torch.float64) / max(width - 1, 1)
    return float((positive.sum(1) * rows).sum() / total), float((positive.sum(0) * columns).sum() / total)


def spatial_agreement(points: Sequence[tuple[float, float]]) -> float:
    """``1 - mean pairwise distance / sqrt(2)`` of relative positions: 1 when all coincide, 0 for opposite corners.

    Fewer than two points give ``nan`` (nothing to agree on).

    >>> round(spatial_agreement([(0.0, 0.0), (0.0, 1.0)]), 6)   # distance 1 of at most sqrt(2)
    0.292893
    """
    pairs = list(itertools.combinations(points, 2))
    if not pairs:
        return math.nan
    distance = sum(math.dist(a, b) for a, b in pairs) / len(pairs)
    return 1.0 - distance / math.sqrt(2.0)


@dataclass(frozen=True)
class ConceptConsistency:
    """How consistently one concept is among the top ``k`` at one depth of the images' paths.

    Attributes
    ----------
    depth
        0 for the candidates of the first step, 1 for those of the second, ...
    layer, concept
        The concept.
    votes
        Number of images that have it among their top ``k`` at this depth.
    frequency
        ``votes / images``.
    spatial
        :func:`spatial_agreement` of its heatmaps' centroids over the voting images (``nan`` with fewer than two).
    mean_share
        Its mean share of the step's relevance over the voting images.
    score
        ``frequency * spatial`` (``spatial`` taken as 1 when undefined): one number per concept.
    """

    depth: int
    layer: str
    concept: int
    votes: int
    frequency: float
    spatial: float
    mean_share: float
    score: float


@dataclass(frozen=True)
class PathConsistency:
    """The result of :func:`path_consistency`."""

    paths: tuple[ConceptPath, ...]
    k: int
    path_votes: tuple[tuple[str, int], ...]
    jaccard: tuple[float, ...]
    concepts: tuple[ConceptConsistency, ...]

    def concepts_at(self, depth: int) -> list[ConceptConsistency]:
        """The concepts voted for at ``depth``, best score first."""
        return [c for c in self.concepts if c.depth == depth]

    def to_dict(self, heatmaps: bool = False) -> dict[str, Any]:
        """JSON-serialisable form: every image's path in full (see :meth:`ConceptPath.to_dict`; heatmaps only with
        ``heatmaps=True``), the votes, the Jaccard indices and the concepts' scores (``NaN`` where undefined)."""
        return {
            "k": self.k,
            "paths": [path.to_dict(heatmaps=heatmaps) for path in self.paths],
            "path_votes": [list(item) for item in self.path_votes],
            "jaccard": list(self.jaccard),
            "concepts": [vars(c) for c in self.concepts],
        }

    def to_json(self, path: str | Path | None = None, indent: int | None = 2, heatmaps: bool = False) -> str:
        """The result as JSON text (see :meth:`to_dict`); also written to ``path`` when given."""
        return write_json(self.to_dict(heatmaps=heatmaps), path, indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PathConsistency:
        """The result back from :meth:`to_dict`'s form."""
        try:
            return cls(
                paths=tuple(ConceptPath.from_dict(path) for path in data["paths"]),
                k=int(data["k"]),
                path_votes=tuple((str(chain), int(votes)) for chain, votes in data["path_votes"]),
                jaccard=tuple(float(value) for value in data["jaccard"]),
                concepts=tuple(
                    ConceptConsistency(
                        depth=int(c["depth"]),
                        layer=str(c["layer"]),
                        concept=int(c["concept"]),
                        votes=int(c["votes"]),
                        frequency=float(c["frequency"]),
                        spatial=float(c["spatial"]),
                        mean_share=float(c["mean_share"]),
                        score=float(c["score"]),
                    )
                    for c in data["concepts"]
                ),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise InputError(
                f"not a path consistency result in PathConsistency.to_dict's form ({type(error).__name__}: {error})"
            ) from error

    @classmethod
    def from_json(cls, source: str | Path) -> PathConsistency:
        """The result back from :meth:`to_json`: a file path, or the JSON text itself."""
        return cls.from_dict(read_json(source))


def path_consistency(
    attributor: Attributor,
    data: torch.Tensor,
    path: Sequence[Step] | str,
    *,
    targets: int | Sequence[int] | None = None,
    k: int = 5,
    follow: int = 2,
    layer_graph: LayerGraph | None = None,
    progress: bool = True,
) -> PathConsistency:
    """Do several images use the same concepts along a path? Votes, Jaccard and spatial agreement per concept.

    Each image's path starts with ``path`` and follows its most relevant candidate ``follow`` more steps (so images
    may take different routes). At every depth, each image's top ``k`` candidates (with their conditional heatmaps)
    are compared across images.

    Parameters
    ----------
    data
        ``(N, ...)`` images, e.g. of one class.
    targets
        One output unit for all, one per image, or ``None`` for each image's prediction.
    progress
        Show a progress bar (images) when the images take more than a few seconds.
    """
    data = check_input(data)
    n = data.shape[0]
    if isinstance(targets, Sequence) and not isinstance(targets, str):
        if len(targets) != n:
            raise InputError(f"targets must give one class per image ({n}), got {len(targets)}")
        per_image: list[int | None] = [int(t) for t in targets]
    else:
        per_image = [None if targets is None else int(targets)] * n
    graph = _layer_graph(attributor, data[:1], layer_graph, path)
    found_paths = []
    with progress_bar(n, "path consistency", enabled=progress, unit="image") as bar:
        for i in range(n):
            found_paths.append(
                concept_path(
                    attributor,
                    data[i : i + 1],
                    path,
                    target=per_image[i],
                    k=k,
                    follow=follow,
                    layer_graph=graph,
                    candidate_heatmaps=True,
                    progress=False,
                )
            )
            bar.update(1)
    paths = tuple(found_paths)
    votes = Counter(str(p) for p in paths)
    depth_count = max(len(p.steps) for p in paths)
    jaccard = []
    concepts: list[ConceptConsistency] = []
    for depth in range(depth_count):
        tops = [{(c.layer, c.concept) for c in p.steps[depth].candidates} for p in paths if depth < len(p.steps)]
        jaccard.append(mean_jaccard(tops) if any(tops) else math.nan)  # nan: nothing below this depth
        seen: dict[Step, list[Candidate]] = {}
        for p in paths:
            if depth < len(p.steps):
                for candidate in p.steps[depth].candidates:
                    seen.setdefault((candidate.layer, candidate.concept), []).append(candidate)
        for (layer, concept), found in seen.items():
            centroids = [
                point
                for point in (relevance_centroid(c.heatmap) for c in found if c.heatmap is not None)
                if point is not None
            ]
            spatial = spatial_agreement(centroids)
            frequency = len(found) / n
            concepts.append(
                ConceptConsistency(
                    depth=depth,
                    layer=layer,
                    concept=concept,
                    votes=len(found),
                    frequency=frequency,
                    spatial=spatial,
                    mean_share=sum(c.share for c in found) / len(found),
                    score=frequency * (1.0 if math.isnan(spatial) else spatial),
                )
            )
    concepts.sort(key=lambda c: (c.depth, -c.score, -c.votes, c.layer, c.concept))
    return PathConsistency(
        paths=paths,
        k=k,
        path_votes=tuple(sorted(votes.items(), key=lambda item: (-item[1], item[0]))),
        jaccard=tuple(jaccard),
        concepts=tuple(concepts),
    )
