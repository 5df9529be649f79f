"""The voting: every sample's ballot of its top-``k`` concepts per layer, tallied into a :class:`ConceptAtlas`.

:func:`concept_atlas` runs the model over the data in batches, turns each sample's concept relevances (all of them,
or the part inside a region) into shares, lets each sample vote and sums votes and shares per layer, overall and per
class. :func:`check_layers` and :func:`check_k` check the arguments that fragmentation and the atlas figure share.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ...attribution.concepts import relevance_shares
from ...attribution.conditions import Condition, PerSample
from ...attribution.engine import Attributor, Run
from ...attribution.layers import resolve_layers
from ...data import Batch, Targets, as_data, batch_targets, batches, check_targets, model_device, sample_count
from ...errors import InputError
from ...progress import progress_bar
from .regions import Region, batch_region, check_region, describe_region
from .results import AtlasEntry, ConceptAtlas, ranked_entries

if TYPE_CHECKING:
    from ...index.concept_index import ConceptIndex

__all__ = ["check_k", "check_layers", "concept_atlas"]

logger = logging.getLogger(__name__)


def check_layers(model: torch.nn.Module, layers: Sequence[str]) -> list[str]:
    """``layers`` (one name or several) without repeats, in order; raises when empty or when the model lacks one."""
    if isinstance(layers, str):
        layers = [layers]
    names = list(dict.fromkeys(layers))
    if not names:
        raise InputError("no layers given; name at least one, e.g. layers=['conv2']")
    resolve_layers(model, names)  # unknown names: LayerError with close matches
    return names


def check_k(k: int, what: str = "k") -> None:
    """Raise ``ValueError`` unless ``k`` (named ``what`` in the message) is a positive number of concepts."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{what} must be a positive number of concepts, got {k!r}")


def _ballots(shares: torch.Tensor, k: int) -> torch.Tensor:
    """``(N, min(k, C))``: the concepts with the largest positive shares, largest first, ``-1`` padding."""
    values, order = shares.sort(dim=1, descending=True, stable=True)
    values, order = values[:, :k], order[:, :k]
    return torch.where(values > 0, order, torch.full_like(order, -1))


def _voted(ballots: torch.Tensor, count: int) -> torch.Tensor:
    """``(N, C)`` bool: which concepts are on each ballot."""
    hits = torch.zeros(ballots.shape[0], count + 1, dtype=torch.bool, device=ballots.device)
    hits.scatter_(1, ballots + 1, True)  # -1 (no vote) lands in column 0, which is dropped
    return hits[:, 1:]


class _Tally:
    """Running sums of one layer: votes, shares and voters' shares, overall and per class."""

    def __init__(self, count: int, classes: int) -> None:
        self.count = count
        self.votes = torch.zeros(classes, count, dtype=torch.int64)
        self.share_sum = torch.zeros(classes, count, dtype=torch.float64)
        self.voter_sum = torch.zeros(classes, count, dtype=torch.float64)
        self.ballots: list[torch.Tensor] = []

    def add(self, shares: torch.Tensor, ballots: torch.Tensor, targets: torch.Tensor) -> None:
        shares = shares.detach().cpu().double()
        voted = _voted(ballots, self.count)
        self.votes.index_add_(0, targets, voted.long())
        self.share_sum.index_add_(0, targets, shares)
        self.voter_sum.index_add_(0, targets, shares * voted)
        self.ballots.append(ballots)

    def entries(
        self, class_counts: Mapping[int, int]
    ) -> tuple[tuple[AtlasEntry, ...], dict[int, tuple[AtlasEntry, ...]]]:
        total = ranked_entries(
            self.votes.sum(0), self.share_sum.sum(0), self.voter_sum.sum(0), sum(class_counts.values())
        )
        per_class = {
            c: ranked_entries(self.votes[c], self.share_sum[c], self.voter_sum[c], count)
            for c, count in class_counts.items()
        }
        return total, per_class


def concept_atlas(
    attributor: Attributor,
    data: Any,
    layers: Sequence[str],
    *,
    targets: Targets = "auto",
    k: int = 5,
    region: Region | None = None,
    batch_size: int = 32,
    normalization: str = "abs",
    index: ConceptIndex | None = None,
    references: int = 8,
    progress: bool = True,
) -> ConceptAtlas:
    """The concept atlas of ``layers`` over ``data``: each sample votes for its top-``k`` concepts per layer.

    Per batch the model runs one forward pass and one backward pass from each sample's target down to the lowest
    layer (rules and probes are attached once for all batches; predictions come from that same forward pass). With a
    ``region``, one more double-backward pass scores the concepts of all layers by the relevance they put inside the
    region (:meth:`~glocal.Run.region_relevance`).

    Parameters
    ----------
    attributor
        The engine (model, composite and concept types).
    data
        ``(N, ...)`` inputs, or a map-style dataset of ``input`` or ``(input, label)`` items, or a DataLoader over one
        (its dataset is read in order, in batches of ``batch_size``).
    layers
        The layers whose concepts vote.
    targets
        Where each sample's relevance starts: ``"label"``, ``"prediction"`` (the largest output), ``"auto"``
        (labels when the data has them, else predictions), or one output unit per sample.
    k
        Concepts per ballot.
    region
        Count only relevance inside an input region: an ``(H, W)`` 0/1 mask for all samples, an ``(N, H, W)`` one
        per sample, or a callable such as :func:`centre_square` that maps a batch of inputs to either.
    batch_size
        Samples per forward pass.
    normalization
        How shares are normalised: ``"abs"`` (by the sum of absolute concept relevances) or ``"signed"``.
    index, references
        A concept index of the model (e.g. over the training set): entries of the layers it has then link to their
        ``references`` best RelMax samples in it (see :meth:`ConceptAtlas.with_references`).
    progress
        Show a progress bar (batches) when the atlas takes more than a few seconds.

    Returns
    -------
    ConceptAtlas
        Entries per layer and per class; shares are float64 means of the model's float shares.
    """
    model = attributor.model
    names = check_layers(model, layers)
    check_k(k)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of samples, got {batch_size}")
    if normalization not in ("abs", "signed"):
        raise ValueError(f"normalization must be 'abs' or 'signed', got {normalization!r}")
    data = as_data(data)
    n = sample_count(data)
    check_region(region, n)
    resolved = check_targets(targets, data)
    started = time.perf_counter()
    tallies: dict[str, _Tally] = {}
    all_targets: list[int] = []
    with (
        attributor.attached(names) as start,
        progress_bar(math.ceil(n / batch_size), "concept atlas", enabled=progress, unit="batch") as bar,
    ):
        for batch in batches(data, batch_size, model_device(model)):
            if region is None:
                run = start(batch.inputs, record=names, heatmap=False, input_grad=False)
            else:
                run = start(batch.inputs, heatmap=False, input_grad=True)
            sample_targets = batch_targets(resolved, batch, run.output, "an atlas")
            condition = Condition(targets=PerSample([[t] for t in sample_targets]))
            relevances = _layer_relevances(attributor, run, names, condition, region, batch)
            target_ids = torch.tensor(sample_targets, dtype=torch.int64)
            for name, relevance in relevances.items():
                shares = relevance_shares(relevance, normalization)
                if name not in tallies:
                    tallies[name] = _Tally(shares.shape[1], _outputs(run.output))
                tallies[name].add(shares, _ballots(shares, k).cpu(), target_ids)
            all_targets.extend(sample_targets)
            bar.update(1)
    class_counts: dict[int, int] = {}
    for target in sorted(all_targets):
        class_counts[target] = class_counts.get(target, 0) + 1
    entries, class_entries = {}, {}
    for name in names:
        entries[name], class_entries[name] = tallies[name].entries(class_counts)
    logger.info("atlas of %d samples over %s in %.2f s", n, names, time.perf_counter() - started)
    atlas = ConceptAtlas(
        layers=tuple(names),
        entries=entries,
        class_entries=class_entries,
        n_concepts={name: tallies[name].count for name in names},
        targets=tuple(all_targets),
        ballots={name: torch.cat(tallies[name].ballots) for name in names},
        k=k,
        region=describe_region(region),
        normalization=normalization,
    )
    return atlas if index is None else atlas.with_references(index, references)


def _outputs(output: torch.Tensor) -> int:
    return int(output.shape[1]) if output.dim() > 1 else 1


def _layer_relevances(
    attributor: Attributor,
    run: Run,
    layers: Sequence[str],
    condition: Condition,
    region: Region | None,
    batch: Batch,
) -> dict[str, torch.Tensor]:
    """``(N, C)`` concept relevance per layer: all of it, or the part that lands inside the region."""
    if region is None:
        result = run.attribute(condition)
        return {name: attributor.concept(name).relevance(result.relevances[name]) for name in layers}
    mask = batch_region(region, batch)
    inside = run.region_relevance(list(layers), mask, condition)  # all layers: one backward, one double-backward
    return {name: attributor.concept(name).relevance(inside[name]) for name in layers}
