"""How much a model needs each channel of a layer: one score per channel by a pruning criterion, in one data pass.

Notation: sample ``i`` with target output unit ``t_i`` (``y_t`` its logit), a layer's output ``a`` with channels
``c`` over positions ``p`` (a linear layer has one position), CRP relevance ``R`` at that output from ``y_t``.
Every criterion gives a ``(C,)`` float64 score per layer; higher means more important:

=============  ==========================================================================================
relevance      ``sum_i |sum_p R_icp|`` (``signed=True``: ``sum_i sum_p R_icp``); LRP under the composite
activation     ``sum_i mean_p |a_icp|`` (forward only)
weight         ``sum |W_c|``: the L1 norm of the layer's weight for output channel ``c`` (no data)
gradient       ``sum_i |sum_p dy_t/da_icp|`` (plain gradient; ``signed=True`` drops the ``| |``)
taylor         ``sum_i |sum_p a_icp dy_t/da_icp|`` (Molchanov et al. 2017; ``signed=True`` drops the ``| |``)
random         uniform in ``[0, 1)`` from ``torch.Generator().manual_seed(seed)``, layer after layer
=============  ==========================================================================================

With ``classes``, only samples whose target is among them count; with ``normalise`` each layer's scores are divided
by their L1 sum (Yeom et al. 2021), so that layers can be compared in a global pruning.

The data is read in fixed batches (:func:`glocal.data.fixed_batches`); each batch contributes a float64 partial sum,
and the partial sums are added in batch order. Under ``torch.distributed`` each rank scores its own batches and the
partial sums are gathered, so every rank gets exactly (bit for bit) what one process would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import zennit.core

from ..attribution.concepts import ChannelConcept
from ..attribution.conditions import Condition, PerSample
from ..attribution.engine import Attributor
from ..attribution.layers import resolve_layers
from ..data import (
    Batch,
    Targets,
    as_data,
    batch_targets,
    check_targets,
    default_batch_size,
    fixed_batches,
    load_batches,
    model_device,
    sample_count,
)
from ..errors import InputError, LayerError, TargetError
from ..progress import progress_bar
from ..serialize import tensor_to_dict

__all__ = ["CRITERIA", "ChannelScores", "channel_scores", "distributed_share", "weight_layer"]

CRITERIA = ("relevance", "activation", "weight", "gradient", "taylor", "random")
"""The channel criteria :func:`channel_scores` knows."""

_SIGNABLE = ("relevance", "gradient", "taylor")
_WEIGHTED = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)


@dataclass(frozen=True)
class ChannelScores:
    """Per layer, one score per output channel (``(C,)`` float64, higher = more important).

    ``samples`` is the number of samples that counted (0 for ``weight`` and ``random``), ``classes`` the targets
    they were restricted to (``None``: all).
    """

    criterion: str
    scores: Mapping[str, torch.Tensor]
    samples: int
    classes: tuple[int, ...] | None
    signed: bool
    normalised: bool

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.scores)

    def to_dict(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion,
            "scores": {name: tensor_to_dict(score) for name, score in self.scores.items()},
            "samples": self.samples,
            "classes": None if self.classes is None else list(self.classes),
            "signed": self.signed,
            "normalised": self.normalised,
        }


def distributed_share() -> tuple[int, int]:
    """``(rank, world)`` of an initialised ``torch.distributed`` run, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def weight_layer(model: torch.nn.Module, layer: str) -> torch.nn.Module:
    """The conv or linear module ``layer`` (a :class:`~glocal.LayerError` for other modules)."""
    module = resolve_layers(model, [layer])[layer]
    if not isinstance(module, _WEIGHTED):
        raise LayerError(
            f"layer {layer!r} is a {type(module).__name__}; the weight criterion needs a Conv1d/2d/3d or Linear "
            "layer (one weight row per output channel). Score that layer's conv or linear layer instead."
        )
    return module


def channel_scores(
    model: torch.nn.Module,
    data: Any,
    layers: Sequence[str],
    *,
    criterion: str = "relevance",
    composite: zennit.core.Composite | str | None = "auto",
    targets: Targets = "auto",
    classes: Sequence[int] | None = None,
    signed: bool = False,
    normalise: bool = True,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
) -> ChannelScores:
    """Score every output channel of ``layers`` by ``criterion`` (see the module docstring for the formulas).

    Parameters
    ----------
    model
        The model (in eval mode, so that samples do not affect each other); left exactly as it was.
    data
        Tensor of inputs ``(N, ...)``, map-style dataset of ``input`` or ``(input, label)`` items, or a DataLoader.
    layers
        Layer names; their outputs' channels (dimension 1) are scored.
    criterion
        One of :data:`CRITERIA`.
    composite
        The zennit composite of the relevance criterion (``"auto"``: picked for the architecture).
    targets
        The output unit each sample's relevance or gradient starts from: ``"auto"`` (labels where the data has
        them), ``"label"``, ``"prediction"`` or one int per sample.
    classes
        Only samples whose target is among these count (class-specific pruning); ``None``: every sample.
    signed
        Relevance, gradient and Taylor: sum signed values over samples instead of absolute ones.
    normalise
        Divide each layer's scores by their L1 sum.
    seed
        Seed of the random criterion.
    batch_size
        Samples per batch (default: a DataLoader's own, else 32).
    progress
        Show a progress bar.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> scores = channel_scores(net, torch.rand(8, 4), ["0"], criterion="weight", normalise=False)
    >>> torch.allclose(scores.scores["0"], net[0].weight.abs().sum(1).double())
    True
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    if not names:
        raise LayerError("give at least one layer to score")
    modules = resolve_layers(model, names)
    chosen = None if classes is None else tuple(sorted({int(c) for c in classes}))
    if criterion == "weight":
        totals = {name: _weight_norm(weight_layer(model, name)) for name in names}
        return _result(criterion, totals, 0, chosen, False, normalise)
    data = as_data(data)
    n = sample_count(data)
    size = default_batch_size(data, batch_size)
    if size < 1:
        raise InputError(f"batch_size must be a positive number of samples, got {size}")
    if criterion == "random":
        counts = _channel_counts(model, modules, data)
        generator = torch.Generator().manual_seed(seed)
        totals = {name: torch.rand(counts[name], generator=generator, dtype=torch.float64) for name in names}
        return _result(criterion, totals, 0, chosen, False, normalise)
    resolved = check_targets(targets, data)
    rank, world = distributed_share()
    share = fixed_batches(n, size, rank, world)
    partials: list[tuple[int, dict[str, torch.Tensor], int]] = []
    scorer = _Scorer(model, modules, criterion, composite, resolved, chosen, signed)
    with progress_bar(len(share), f"{criterion} scores", enabled=progress, unit="batch") as bar, scorer.attached():
        for k, batch in enumerate(load_batches(data, share)):
            sums, counted = scorer.batch(batch)
            partials.append((rank + k * world, sums, counted))
            bar.update(1)
    if world > 1:
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, partials)
        partials = [part for parts in gathered for part in parts]
    partials.sort(key=lambda part: part[0])
    totals = {name: torch.zeros(0, dtype=torch.float64) for name in names}
    for _, sums, _ in partials:
        for name in names:
            totals[name] = sums[name] if totals[name].numel() == 0 else totals[name] + sums[name]
    return _result(
        criterion, totals, sum(part[2] for part in partials), chosen, signed and criterion in _SIGNABLE, normalise
    )


def _result(
    criterion: str,
    totals: dict[str, torch.Tensor],
    samples: int,
    classes: tuple[int, ...] | None,
    signed: bool,
    normalise: bool,
) -> ChannelScores:
    scores = {}
    for name, total in totals.items():
        total = total.detach().to("cpu", torch.float64)
        if normalise:
            norm = float(total.abs().sum())
            total = total / norm if norm > 0 else total
        scores[name] = total
    return ChannelScores(criterion, scores, samples, classes, signed, normalise)


def _weight_norm(module: torch.nn.Module) -> torch.Tensor:
    weight = torch.as_tensor(module.weight).detach().to(torch.float64)
    return weight.abs().flatten(1).sum(1)


def _channel_counts(model: torch.nn.Module, modules: dict[str, torch.nn.Module], data: Any) -> dict[str, int]:
    """Each layer's channel count from one forward pass of the first sample (no gradients)."""
    counts: dict[str, int] = {}

    def count(name: str, output: torch.Tensor) -> None:
        counts.setdefault(name, int(output.shape[1]))

    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: count(name, out))
        for name, module in modules.items()
    ]
    try:
        batch = next(iter(load_batches(data, [[0]])))
        with torch.no_grad():
            model(batch.inputs.to(model_device(model)))
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in modules if name not in counts]
    if missing:
        raise LayerError(f"layers {missing} did not run in the model's forward pass; pick layers the model uses")
    return counts


class _Scorer:
    """One batch's per-channel sums for the data criteria, on a model prepared once for all batches."""

    def __init__(
        self,
        model: torch.nn.Module,
        modules: dict[str, torch.nn.Module],
        criterion: str,
        composite: zennit.core.Composite | str | None,
        targets: Any,
        classes: tuple[int, ...] | None,
        signed: bool,
    ) -> None:
        self.model, self.modules, self.criterion = model, modules, criterion
        self.targets, self.classes, self.signed = targets, classes, signed
        self.device = model_device(model)
        self.attributor = Attributor(model, composite) if criterion == "relevance" else None
        self.start: Any = None
        self.kept: dict[str, torch.Tensor] = {}

    def attached(self) -> Any:
        if self.attributor is not None:
            return _Started(self, self.attributor.attached(list(self.modules)))
        return _Hooked(self)

    def keep(self, name: str, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise LayerError(f"layer {name!r} returns a {type(output).__name__}; score layers that return a tensor")
        self.kept[name] = output
        # a copy goes on, so that an in-place operation after the layer (ReLU(inplace=True)) leaves `output` and
        # its gradient those of the layer itself
        return output.clone()

    def batch(self, batch: Batch) -> tuple[dict[str, torch.Tensor], int]:
        inputs = batch.inputs.to(self.device)
        if self.attributor is not None:
            per_sample, target = self._relevance(batch, inputs)
        else:
            per_sample, target = self._plain(batch, inputs)
        weight = torch.ones(len(target), dtype=torch.float64)
        if self.classes is not None:
            weight = torch.tensor([float(t in self.classes) for t in target], dtype=torch.float64)
        sums = {name: weight @ per_sample[name].detach().to("cpu", torch.float64) for name in self.modules}
        return sums, int(weight.sum())

    def _relevance(self, batch: Batch, inputs: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[int]]:
        names = list(self.modules)
        run = self.start(inputs, record=names, heatmap=False, input_grad=False)
        target = batch_targets(self.targets, batch, run.output.detach(), "channel scores")
        result = run.attribute(Condition(targets=PerSample([[t] for t in target])))
        per_sample = {}
        for name in names:
            relevance = ChannelConcept().relevance(result.relevances[name].to(torch.float64))
            per_sample[name] = relevance if self.signed else relevance.abs()
        return per_sample, target

    def _plain(self, batch: Batch, inputs: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[int]]:
        names = list(self.modules)
        self.kept.clear()
        gradient = self.criterion in ("gradient", "taylor")
        with torch.set_grad_enabled(gradient):
            output = self.model(inputs.detach().requires_grad_(gradient))
        missing = [name for name in names if name not in self.kept]
        if missing:
            raise LayerError(f"layers {missing} did not run in the model's forward pass; pick layers the model uses")
        target = batch_targets(self.targets, batch, output.detach(), "channel scores")
        activations = [self.kept[name] for name in names]
        if not gradient:
            return {
                name: a.detach().to(torch.float64).abs().flatten(2).mean(-1) if a.dim() > 2 else a.detach().abs()
                for name, a in zip(names, activations, strict=True)
            }, target
        if output.dim() != 2:
            raise InputError(f"gradient criteria need a model output (N, classes); got shape {tuple(output.shape)}")
        if any(not 0 <= t < output.shape[1] for t in target):
            raise TargetError(f"targets must lie in 0..{output.shape[1] - 1} (the model's outputs); got {target}")
        chosen = output[torch.arange(len(target)), torch.tensor(target, device=output.device)]
        grads = torch.autograd.grad(chosen.sum(), activations, allow_unused=True)
        per_sample = {}
        for name, a, g in zip(names, activations, grads, strict=True):
            g = torch.zeros_like(a) if g is None else g
            value = (g if self.criterion == "gradient" else a * g).detach().to(torch.float64)
            value = value.flatten(2).sum(-1) if value.dim() > 2 else value
            per_sample[name] = value if self.signed else value.abs()
        return per_sample, target


class _Started:
    """The relevance criterion's context: the attributor's rules attached once for every batch."""

    def __init__(self, scorer: _Scorer, context: Any) -> None:
        self.scorer, self.context = scorer, context

    def __enter__(self) -> None:
        self.scorer.start = self.context.__enter__()

    def __exit__(self, *error: Any) -> None:
        self.scorer.start = None
        self.context.__exit__(*error)


class _Hooked:
    """The plain criteria's context: forward hooks that keep the layers' outputs, removed at the end."""

    def __init__(self, scorer: _Scorer) -> None:
        self.scorer = scorer
        self.handles: list[Any] = []

    def __enter__(self) -> None:
        for name, module in self.scorer.modules.items():
            self.handles.append(
                module.register_forward_hook(lambda _m, _i, out, name=name: self.scorer.keep(name, out))
            )

    def __exit__(self, *error: Any) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.scorer.kept.clear()
