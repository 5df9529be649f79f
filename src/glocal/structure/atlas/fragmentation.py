"""Fragmentation: a concept decomposed into the concepts of the layers that feed it, over many samples.

:func:`fragment` decomposes one concept over all samples; :func:`fragment_atlas` decomposes each entry of an atlas
layer over the samples that voted for it. Both run one forward pass per batch and one backward pass per chunk of
concepts, stopping at the lower layers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ...attribution.concepts import relevance_shares
from ...attribution.conditions import Condition, PerSample
from ...attribution.engine import Attributor
from ...attribution.layers import get_layer_names, resolve_layers
from ...data import Targets, as_data, batch_targets, batches, check_targets, model_device, sample_count
from ...errors import ConditionError, InputError
from ...progress import progress_bar
from ..layer_graph import DEFAULT_TYPES, trace_layers
from .results import ConceptAtlas
from .voting import check_k, check_layers

__all__ = ["Fragment", "Fragmentation", "fragment", "fragment_atlas"]

_CHUNK = 16  # conditions per backward batch when fragmenting several concepts


@dataclass(frozen=True)
class Fragment:
    """A concept of a lower layer and its mean share of the upper concept's relevance (see :func:`fragment`)."""

    layer: str
    concept: int
    mean_share: float


@dataclass(frozen=True)
class Fragmentation:
    """A concept decomposed into the concepts of the layers that feed it (see :func:`fragment`).

    Attributes
    ----------
    layer, concept
        The decomposed concept.
    lower_layers
        The layers it was decomposed into.
    parts
        The ``k`` lower concepts with the largest mean shares, largest first.
    layer_shares
        Each lower layer's mean share (its concepts' shares summed): how the relevance splits between branches.
    n_samples
        Over how many samples the shares were averaged.
    """

    layer: str
    concept: int
    lower_layers: tuple[str, ...]
    parts: tuple[Fragment, ...]
    layer_shares: Mapping[str, float]
    n_samples: int

    def to_dict(self) -> dict[str, Any]:
        """The fragmentation as JSON-serialisable values."""
        return {
            "layer": self.layer,
            "concept": self.concept,
            "lower_layers": list(self.lower_layers),
            "parts": [dataclasses.asdict(part) for part in self.parts],
            "layer_shares": dict(self.layer_shares),
            "n_samples": self.n_samples,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fragmentation:
        """The fragmentation back from :meth:`to_dict`'s form."""
        try:
            return cls(
                layer=str(data["layer"]),
                concept=int(data["concept"]),
                lower_layers=tuple(str(name) for name in data["lower_layers"]),
                parts=tuple(
                    Fragment(
                        layer=str(part["layer"]), concept=int(part["concept"]), mean_share=float(part["mean_share"])
                    )
                    for part in data["parts"]
                ),
                layer_shares={str(name): float(value) for name, value in data["layer_shares"].items()},
                n_samples=int(data["n_samples"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise InputError(
                f"not a fragmentation in Fragmentation.to_dict's form ({type(error).__name__}: {error})"
            ) from error


def _lower_layers(attributor: Attributor, data: Any, layer: str, lower_layers: Sequence[str] | None) -> list[str]:
    if lower_layers is not None:
        names = [lower_layers] if isinstance(lower_layers, str) else list(dict.fromkeys(lower_layers))
        if not names:
            raise InputError(f"lower_layers is empty; name the layers to decompose {layer!r} into")
        if layer in names:
            raise InputError(f"lower_layers holds {layer!r} itself; name the layers below it")
        resolve_layers(attributor.model, names)
        return names
    model = attributor.model
    example = next(batches(data, 1, model_device(model))).inputs
    candidates = list(dict.fromkeys([*get_layer_names(model, list(DEFAULT_TYPES)), layer]))
    graph = trace_layers(model, example, candidates)
    if layer not in graph.inputs:
        raise ConditionError(f"layer {layer!r} did not run in the forward pass; pick a layer the model uses")
    names = list(graph.inputs[layer])
    if not names:
        raise ConditionError(
            f"no convolution or linear layer feeds {layer!r} (it reads the input directly); pass lower_layers=[...] "
            "to decompose it into other layers"
        )
    return names


def _fragment_sums(
    attributor: Attributor,
    data: Any,
    layer: str,
    concepts: Sequence[int],
    lower: Sequence[str],
    targets: Literal["label", "prediction"] | list[int],
    weights: torch.Tensor | None,
    batch_size: int,
    normalization: str,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, slice]]:
    """Per concept, the weighted sums over samples of the lower concepts' shares ``(M, D)``, and the weight sums."""
    sums: torch.Tensor | None = None
    counts = torch.zeros(len(concepts), dtype=torch.float64)
    slices: dict[str, slice] = {}
    total = math.ceil(sample_count(data) / batch_size)
    with (
        attributor.attached([layer, *lower]) as start,
        progress_bar(total, f"fragments of {layer}", enabled=progress, unit="batch") as bar,
    ):
        for batch in batches(data, batch_size, model_device(attributor.model)):
            bar.update(1)
            n = batch.inputs.shape[0]
            weight = (
                torch.ones(n, len(concepts), dtype=torch.float64)
                if weights is None
                else weights[batch.start : batch.start + n].double()
            )
            if not weight.any():
                continue
            run = start(batch.inputs, record=list(lower), heatmap=False, input_grad=False)
            for name in lower:
                if run.order[name] > run.order[layer]:
                    raise ConditionError(
                        f"lower layer {name!r} runs after {layer!r} in the forward pass; a concept decomposes into "
                        "the layers below it"
                    )
            ids = PerSample([[t] for t in batch_targets(targets, batch, run.output, "an atlas")])
            for begin in range(0, len(concepts), _CHUNK):
                chunk = concepts[begin : begin + _CHUNK]
                result = run.attribute([Condition(targets=ids, layers={layer: (c,)}) for c in chunk])
                parts, offset = [], 0
                for name in lower:
                    relevance = attributor.concept(name).relevance(result.relevances[name])
                    slices[name] = slice(offset, offset + relevance.shape[1])
                    offset += relevance.shape[1]
                    parts.append(relevance)
                shares = relevance_shares(torch.cat(parts, 1), normalization).view(n, len(chunk), -1)
                chunk_weight = weight[:, begin : begin + len(chunk)]
                summed = (shares.detach().cpu().double() * chunk_weight[..., None]).sum(0)
                if sums is None:
                    sums = torch.zeros(len(concepts), summed.shape[1], dtype=torch.float64)
                sums[begin : begin + len(chunk)] += summed
            counts += weight.sum(0)
    if sums is None:
        sums = torch.zeros(len(concepts), 0, dtype=torch.float64)
    return sums, counts, slices


def _fragmentation(
    layer: str,
    concept: int,
    lower: Sequence[str],
    sums: torch.Tensor,
    count: float,
    slices: Mapping[str, slice],
    k: int,
) -> Fragmentation:
    mean = sums / max(count, 1.0)
    owners = [(name, c) for name in lower if name in slices for c in range(slices[name].stop - slices[name].start)]
    order = sorted(range(len(owners)), key=lambda i: (-float(mean[i]), i))[:k]
    parts = tuple(Fragment(layer=owners[i][0], concept=owners[i][1], mean_share=float(mean[i])) for i in order)
    layer_shares = {name: float(mean[slices[name]].sum()) if name in slices else 0.0 for name in lower}
    return Fragmentation(
        layer=layer,
        concept=int(concept),
        lower_layers=tuple(lower),
        parts=parts,
        layer_shares=layer_shares,
        n_samples=int(count),
    )


def fragment(
    attributor: Attributor,
    data: Any,
    layer: str,
    concept: int,
    *,
    lower_layers: Sequence[str] | None = None,
    targets: Targets = "auto",
    k: int = 5,
    batch_size: int = 32,
    normalization: str = "abs",
    progress: bool = True,
) -> Fragmentation:
    """Decompose concept ``concept`` of ``layer`` into the concepts of the layers that feed it.

    For every sample, relevance starts at its target and passes ``layer`` through the concept only (condition
    ``{layer: [concept], "y": [target]}``, sole path); the backward pass stops at the lower layers. Each lower concept
    ``d`` gets the share ``R(d | concept, target) / sum_d' |R(d' | concept, target)|``, the sum running over the
    concepts of *all* lower layers together (so parallel branches compete); the result lists the ``k`` largest mean
    shares over the samples.

    Parameters
    ----------
    attributor, data, targets, batch_size, normalization
        As for :func:`concept_atlas`.
    layer, concept
        The concept to decompose.
    lower_layers
        The layers to decompose into; default: the convolution and linear layers that feed ``layer`` directly
        (:func:`~glocal.trace_layers`).
    k
        How many lower concepts to list.
    progress
        Show a progress bar (batches) when the decomposition takes more than a few seconds.
    """
    names = check_layers(attributor.model, [layer])
    check_k(k)
    data = as_data(data)
    resolved = check_targets(targets, data)
    lower = _lower_layers(attributor, data, names[0], lower_layers)
    sums, counts, slices = _fragment_sums(
        attributor, data, layer, [int(concept)], lower, resolved, None, batch_size, normalization, progress
    )
    return _fragmentation(layer, int(concept), lower, sums[0], float(counts[0]), slices, k)


def fragment_atlas(
    attributor: Attributor,
    data: Any,
    atlas: ConceptAtlas,
    layer: str,
    *,
    top: int | None = None,
    lower_layers: Sequence[str] | None = None,
    k: int = 5,
    batch_size: int = 32,
    normalization: str = "abs",
    progress: bool = True,
) -> dict[int, Fragmentation]:
    """Fragment the ``top`` (default: all) entries of an atlas layer, each over the samples that voted for it.

    ``data`` must be the data the atlas was computed on (same samples, same order); each sample's relevance starts
    at its atlas target. The decomposition counts all of the concept's relevance, also for a regional atlas (whose
    voters it uses). Returns concept id to :class:`Fragmentation`, in the atlas's order.
    """
    data = as_data(data)
    n = sample_count(data)
    if n != atlas.n_samples:
        raise InputError(
            f"the atlas was computed on {atlas.n_samples} samples but the data has {n}; pass the atlas's own data"
        )
    check_k(k)
    entries = atlas.layer_entries(layer)
    concepts = [entry.concept for entry in (entries if top is None else entries[:top])]
    if not concepts:
        return {}
    lower = _lower_layers(attributor, data, layer, lower_layers)
    ballots = atlas.ballots[layer]
    weights = torch.stack([(ballots == c).any(1) for c in concepts], 1)
    sums, counts, slices = _fragment_sums(
        attributor, data, layer, concepts, lower, list(atlas.targets), weights, batch_size, normalization, progress
    )
    return {c: _fragmentation(layer, c, lower, sums[m], float(counts[m]), slices, k) for m, c in enumerate(concepts)}
