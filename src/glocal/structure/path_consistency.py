"""Path consistency: do several images (e.g. of one class) use the same concepts along a concept path?

:func:`path_consistency` runs :func:`~glocal.structure.paths.concept_path` on each image and asks how often each
concept is among the top ``k`` at each step (votes), how much the images' top sets overlap (mean pairwise Jaccard
index, :func:`mean_jaccard`), and whether a concept's relevance sits at the same relative place in each image
(spatial agreement of the heatmaps' centroids, :func:`relevance_centroid` and :func:`spatial_agreement`), combined
into one score per concept.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..attribution.engine import Attributor
from ..attribution.inputs import check_input
from ..errors import InputError
from ..progress import progress_bar
from ..serialize import read_json, write_json
from .layer_graph import LayerGraph
from .paths import Candidate, ConceptPath, concept_path, path_layer_graph
from .steps import Step

__all__ = [
    "ConceptConsistency",
    "PathConsistency",
    "mean_jaccard",
    "path_consistency",
    "relevance_centroid",
    "spatial_agreement",
]


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
    graph = path_layer_graph(attributor, data[:1], layer_graph, path)
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
