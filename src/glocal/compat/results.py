"""zennit-crp's result rows: which engine calls compute which rows, and the rows assembled from their results.

zennit-crp's ``CondAttribution`` returns one row per (sample, condition) pair: paired when there are as many samples as
conditions, otherwise every sample under every condition, sample-major (row ``n * M + m``). glocal's engine attributes
a batch under shared conditions, so a call is planned as engine calls (:class:`Job`, from :func:`paired_jobs` or
:func:`broadcast_jobs`) whose results :class:`Assembly` puts back into zennit-crp's rows (an
:class:`AttributionResults`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from ..attribution.concepts import Concept
from ..attribution.conditions import Condition, Ids, PerSample
from ..attribution.engine import InitRelevance
from ..attribution.results import Attribution

__all__ = [
    "Assembly",
    "AttributionResults",
    "Job",
    "attrResult",
    "broadcast_jobs",
    "paired_jobs",
    "per_row",
    "scalar_init",
]


class AttributionResults(NamedTuple):
    """zennit-crp's result tuple (``attrResult``); every tensor has one row per result row.

    Attributes
    ----------
    heatmap
        ``(rows, *spatial)``: the input relevance summed over dimension 1.
    activations
        Layer name to ``(rows, ...)`` activation (repeated for the rows of one sample).
    relevances
        Layer name to ``(rows, ...)`` relevance at the layer's output; after the mask at conditioned layers.
    prediction
        ``(rows, ...)``: the model output, or the ``start_layer``'s activation (repeated like ``activations``).
    """

    heatmap: torch.Tensor
    activations: dict[str, torch.Tensor]
    relevances: dict[str, torch.Tensor]
    prediction: torch.Tensor


attrResult = AttributionResults
"""zennit-crp's name for :class:`AttributionResults`."""


def _plain(ids: Ids | None) -> tuple[int, ...]:
    assert isinstance(ids, tuple)
    return ids


def _scatter(target: torch.Tensor | None, value: torch.Tensor, index: Sequence[int], size: int) -> torch.Tensor:
    if target is None:
        target = torch.zeros(size, *value.shape[1:], dtype=value.dtype, device=value.device)
    target[torch.as_tensor(list(index), device=target.device)] = value.to(target.device)
    return target


class Assembly:
    """Collects the engine's results of several jobs into zennit-crp's rows.

    Parameters
    ----------
    row_samples
        The sample of each result row.
    row_conditions
        The (per-row, plain) condition of each result row; relevances at the layers it names get its mask.
    n_samples
        Number of samples in the data.
    concepts
        The concept of each conditioned layer.
    layers
        Names of the recorded layers, in the order of the result dicts.
    """

    def __init__(
        self,
        row_samples: Sequence[int],
        row_conditions: Sequence[Condition],
        n_samples: int,
        concepts: Mapping[str, Concept],
        layers: Sequence[str],
    ) -> None:
        self.row_samples = list(row_samples)
        self.row_conditions = list(row_conditions)
        self.n_samples = n_samples
        self.concepts = concepts
        self.layers = list(layers)
        self.heatmap: torch.Tensor | None = None
        self.prediction: torch.Tensor | None = None
        self.relevances: dict[str, torch.Tensor] = {}
        self.activations: dict[str, torch.Tensor] = {}

    def add(self, attribution: Attribution, samples: Sequence[int], rows: Sequence[int]) -> None:
        """Add one engine result for data rows ``samples`` whose result rows (sample-major) go to ``rows``."""
        n_rows = len(self.row_samples)
        assert attribution.heatmap is not None
        self.heatmap = _scatter(self.heatmap, attribution.heatmap, rows, n_rows)
        self.prediction = _scatter(self.prediction, attribution.prediction, samples, self.n_samples)
        for name, value in attribution.relevances.items():
            self.relevances[name] = _scatter(self.relevances.get(name), value, rows, n_rows)
        for name, value in attribution.activations.items():
            self.activations[name] = _scatter(self.activations.get(name), value, samples, self.n_samples)

    def finish(self) -> AttributionResults:
        assert self.heatmap is not None and self.prediction is not None
        index = torch.as_tensor(self.row_samples, device=self.prediction.device)
        relevances = {}
        for name in self.layers:
            relevance = self.relevances[name]
            groups: dict[tuple[int, ...], list[int]] = {}
            for row, condition in enumerate(self.row_conditions):
                if name in condition.layers:
                    groups.setdefault(_plain(condition.layers[name]), []).append(row)
            for ids, rows in groups.items():
                mask = self.concepts[name].mask(list(ids), relevance.shape[1:]).to(relevance)
                selected = torch.as_tensor(rows, device=relevance.device)
                relevance[selected] = relevance[selected] * mask
            relevances[name] = relevance
        activations = {
            name: self.activations[name].index_select(0, index.to(self.activations[name].device))
            for name in self.layers
        }
        return AttributionResults(
            heatmap=self.heatmap,
            activations=activations,
            relevances=relevances,
            prediction=self.prediction.index_select(0, index),
        )


class Job(NamedTuple):
    """One engine call: data rows ``samples`` under ``conditions``; its sample-major results go to ``rows``."""

    samples: list[int]
    conditions: list[Condition]
    init_rel: InitRelevance
    rows: list[int]


def scalar_init(init_rel: Any) -> Any:
    """A NumPy scalar ``init_rel`` as a Python number; any other ``init_rel`` unchanged."""
    if isinstance(init_rel, np.generic):
        return init_rel.item()
    return init_rel


def per_row(init_rel: Any, n_rows: int, n_samples: int) -> bool:
    """Whether ``init_rel`` is a tensor with one row per result row (zennit-crp's form), not one per sample."""
    return (
        isinstance(init_rel, torch.Tensor)
        and init_rel.dim() >= 2
        and init_rel.shape[0] == n_rows
        and n_rows != n_samples
    )


def broadcast_jobs(n_samples: int, conditions: list[Condition], init_rel: Any) -> list[Job]:
    """Every sample under every condition; one job, or one per distinct slice of a per-row ``init_rel``."""
    n_conditions = len(conditions)
    samples = list(range(n_samples))
    groups: list[tuple[Any, list[int]]] = []
    if per_row(init_rel, n_samples * n_conditions, n_samples):
        per_condition = init_rel.reshape(n_samples, n_conditions, *init_rel.shape[1:])
        for m in range(n_conditions):
            for init, members in groups:
                if torch.equal(init, per_condition[:, m]):
                    members.append(m)
                    break
            else:
                groups.append((per_condition[:, m], [m]))
    else:
        groups.append((init_rel, list(range(n_conditions))))
    jobs = []
    for init, members in groups:
        rows = [n * n_conditions + m for n in samples for m in members]
        jobs.append(Job(samples, [conditions[m] for m in members], init, rows))
    return jobs


def paired_jobs(conditions: list[Condition], init_rel: Any) -> list[Job]:
    """Sample ``i`` under condition ``i``; one job per set of conditioned layers (with or without targets)."""
    signatures: dict[tuple[frozenset[str], bool], list[int]] = {}
    for i, condition in enumerate(conditions):
        signatures.setdefault((frozenset(condition.layers), condition.targets is None), []).append(i)
    n = len(conditions)
    jobs = []
    for (layers, no_targets), members in signatures.items():
        condition = Condition(
            targets=None if no_targets else PerSample([_plain(conditions[i].targets) for i in members]),
            layers={name: PerSample([_plain(conditions[i].layers[name]) for i in members]) for name in sorted(layers)},
        )
        init = init_rel
        if isinstance(init_rel, torch.Tensor) and init_rel.dim() >= 2 and init_rel.shape[0] == n and len(members) < n:
            init = init_rel[members]
        jobs.append(Job(members, [condition], init, members))
    return jobs
