"""``glocal.diagnose``: why a model's heatmaps do not add up, and what to change.

LRP should be conservative: the relevance a backward pass starts from (the explained logit) arrives in full at every
layer and at the input. :func:`diagnose` runs the LRP backward pass of each given sample under the composite and
measures

* **conservation**: the heatmap's sum against the target logit, per sample and over all samples;
* **the flow**: for every leaf module (or the layers asked for), the relevance arriving at its output and the
  relevance it sends to its input (:mod:`glocal.evaluation.flow`), and for every operation written in ``forward``
  outside a module (a residual ``+``, ``torch.flatten``, ``F.relu6``) the same;
* **completeness**: for a few layers, the conditional heatmaps of all their channels summed against the plain
  heatmap, and the relevance at the layer against the logit;

and names the modules and operations where relevance is lost or created, with the fix
(:mod:`glocal.evaluation.findings`). The result is a :class:`~glocal.evaluation.diagnosis.Diagnosis`; ``print`` it.

>>> import torch
>>> from zennit.composites import EpsilonPlus
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
>>> diagnosis = diagnose(net, EpsilonPlus(), torch.rand(8, 4), progress=False)
>>> [row.name for row in diagnosis.flow]
['0', '1', '2']
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import zennit.core

from ..attribution.conditions import Condition, PerSample
from ..attribution.engine import Attributor
from ..attribution.layers import resolve_layers
from ..data import (
    Targets,
    as_data,
    batch_targets,
    batches,
    check_targets,
    default_batch_size,
    model_device,
    sample_count,
)
from ..errors import GlocalWarning, InputError
from ..lrp.composites import detect
from ..progress import progress_bar
from .diagnosis import Diagnosis, Finding, FlowRow, LayerCompleteness
from .findings import ModuleFacts, OperationRow, findings, module_facts
from .flow import IN, OUT, FlowRecorder

__all__ = ["DEFAULT_TOLERANCE", "diagnose"]

DEFAULT_TOLERANCE = 0.01
"""Changes of relevance below this fraction of the target logits are not findings."""

_CHUNK = 32  # channels attributed per call with channelwise=True
_DEFAULT_LAYERS = 4  # completeness layers chosen when none are given


def diagnose(
    model: torch.nn.Module,
    composite: zennit.core.Composite | str | None = "auto",
    data: Any = None,
    *,
    layers: Sequence[str] | None = None,
    targets: Targets = "auto",
    batch_size: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    completeness: bool = True,
    channelwise: bool = False,
    progress: bool = True,
) -> Diagnosis:
    """Measure where ``model`` loses or creates LRP relevance under ``composite``, and name the causes.

    It runs over all of ``data``: 32 to 64 samples are plenty (the numbers are sums over samples).

    Parameters
    ----------
    model
        The model (left exactly as it was, also after an exception).
    composite
        A zennit composite, ``"auto"`` (the one :func:`glocal.lrp.composites.auto` picks) or ``None`` (plain
        gradients).
    data
        Inputs: a tensor ``(N, ...)``, a map-style dataset of ``input`` or ``(input, label)`` items, or a DataLoader.
    layers
        The modules to show in the flow table and to test for completeness; ``None``: every leaf module in the flow
        table and up to four convolutions (else dense layers but the last), spread over the depth, for completeness.
        Findings are always looked for in every leaf module and every operation in ``forward``.
    targets
        The output unit each sample's relevance starts from: ``"auto"`` (labels where the data has them, else the
        prediction), ``"label"``, ``"prediction"`` or one int per sample.
    batch_size
        Samples per forward pass (default: a DataLoader's own, else 32).
    tolerance
        A module or operation whose change of relevance, as a fraction of the target logits, stays within this is
        not a finding (uncovered additions and unmerged batch norms are findings whatever they measure).
    completeness
        Whether to test the layers for completeness at all.
    channelwise
        Attribute every channel of a completeness layer as its own condition (one backward pass per channel) instead
        of all channels as one condition, which gives the same sum by linearity.
    progress
        Show a progress bar for long runs.

    Returns
    -------
    Diagnosis
        Conservation, flow per module, completeness per layer, findings; ``print(diagnosis)`` for the table.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if data is None:
        raise InputError(
            "diagnose needs data to run the model on: a tensor of inputs (N, ...), a dataset or a DataLoader, e.g. "
            "glocal.diagnose(model, 'auto', images[:32])"
        )
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be a fraction of the target logits (>= 0), got {tolerance}")
    if layers is not None:
        layers = list(resolve_layers(model, [layers] if isinstance(layers, str) else layers))
    dataset = as_data(data)
    samples = sample_count(dataset)
    resolved = check_targets(targets, dataset)
    size = default_batch_size(data, batch_size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attributor = Attributor(model, composite)
        measure = _Measure(attributor, resolved, layers)
        with progress_bar(2 * math.ceil(samples / size), "diagnose", enabled=progress, unit="batch") as bar:
            measure.flow(batches(dataset, size, model_device(model)), bar.update)
            chosen = (layers if layers is not None else measure.default_layers()) if completeness else []
            rows = measure.completeness(batches(dataset, size, model_device(model)), chosen, channelwise, bar.update)
    messages = []
    for warning in caught:
        if issubclass(warning.category, GlocalWarning):
            messages.append(str(warning.message))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return measure.diagnosis(rows, tolerance, tuple(dict.fromkeys(messages)))


class _Measure:
    """The measurements of one diagnosis, summed over batches as fractions of the target logits."""

    def __init__(self, attributor: Attributor, targets: Any, layers: list[str] | None) -> None:
        self.attributor = attributor
        self.model = attributor.model
        self.targets = targets
        self.layers = layers
        self.weight = 0.0  # sum of |S_n|
        self.starts: list[float] = []
        self.kept: list[float] = []
        self.heatmap = 0.0
        self.sums: dict[tuple[str, str], float] = {}
        self.operations: dict[tuple[str, str, int], list[Any]] = {}
        self.order: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.facts: dict[str, ModuleFacts] = {}

    def _condition(self, batch: Any, output: torch.Tensor) -> tuple[Condition, list[int]]:
        ids = batch_targets(self.targets, batch, output, "diagnose")
        return Condition(targets=PerSample([[t] for t in ids])), ids

    def flow(self, loader: Any, step: Callable[[int], Any]) -> None:
        """One LRP pass per batch with the flow recorded."""
        tapped = None
        with self.attributor.attached([]) as start:
            self.facts = module_facts(self.model, self.attributor.composite)
            if self.layers is not None:
                modules = dict(self.model.named_modules())
                leaves = [name for name, module in modules.items() if next(module.children(), None) is None]
                tapped = list(dict.fromkeys([*leaves, *self.layers]))
            with FlowRecorder(self.model, tapped) as recorder:
                for batch in loader:
                    run = recorder.forward(functools.partial(start, batch.inputs), _output, _input)
                    condition, ids = self._condition(batch, run.output)
                    n = batch.inputs.shape[0]
                    with recorder.recording(n):
                        result = run.attribute(condition)
                    assert result.input_relevance is not None
                    starts = _starts(run.output, ids)
                    kept = result.input_relevance.detach().reshape(n, -1).sum(1).double().cpu()
                    signs = starts.sign()
                    self.weight += float(starts.abs().sum())
                    self.starts += starts.tolist()
                    self.kept += kept.tolist()
                    self.heatmap += float((signs * kept).sum())
                    for key, value in recorder.sums.items():
                        self.sums[key] = self.sums.get(key, 0.0) + float((signs * value).sum())
                    for operation, (arriving, sent) in zip(recorder.operations, recorder.op_sums, strict=True):
                        entry = self.operations.setdefault(
                            (operation.module, operation.function, operation.order), [operation, 0.0, 0.0]
                        )
                        if arriving is not None and sent is not None:
                            entry[1] += float((signs * arriving).sum())
                            entry[2] += float((signs * sent).sum())
                    for name, index in recorder.order.items():
                        self.order.setdefault(name, index)
                        self.calls[name] = max(self.calls.get(name, 0), recorder.calls[name])
                    step(1)

    def default_layers(self) -> list[str]:
        """Up to four convolutions that run once, spread over the depth; without any, dense layers but the last."""
        ordered = sorted((name for name in self.order if self.calls.get(name) == 1), key=self.order.__getitem__)
        modules = dict(self.model.named_modules())
        convolutions = [n for n in ordered if isinstance(modules.get(n), torch.nn.modules.conv._ConvNd)]
        candidates = convolutions or [n for n in ordered if isinstance(modules.get(n), torch.nn.Linear)][:-1]
        if len(candidates) <= _DEFAULT_LAYERS:
            return candidates
        picks = sorted({round(i * (len(candidates) - 1) / (_DEFAULT_LAYERS - 1)) for i in range(_DEFAULT_LAYERS)})
        return [candidates[i] for i in picks]

    def completeness(
        self, loader: Any, layers: list[str], channelwise: bool, step: Callable[[int], Any]
    ) -> list[LayerCompleteness]:
        """Per layer: relevance at the layer, the channels' heatmaps summed, and their deviation from the heatmap."""
        if not layers:
            return []
        arriving = dict.fromkeys(layers, 0.0)
        channel_heatmaps = dict.fromkeys(layers, 0.0)
        deviation = dict.fromkeys(layers, 0.0)
        channels: dict[str, int] = {}
        heatmap = weight = 0.0
        with self.attributor.attached(layers) as start:
            for batch in loader:
                n = batch.inputs.shape[0]
                run = start(batch.inputs, record=layers)
                condition, ids = self._condition(batch, run.output)
                plain = run.attribute(condition)
                assert plain.input_relevance is not None
                signs = _starts(run.output, ids).sign()
                weight += float(_starts(run.output, ids).abs().sum())
                plain_map = plain.input_relevance.detach().reshape(n, -1).double()
                heatmap += float((signs * plain_map.sum(1).cpu()).sum())
                for layer in layers:
                    relevance = plain.relevances[layer]
                    channels[layer] = relevance.shape[1] if relevance.dim() > 1 else 1
                    arriving[layer] += float((signs * relevance.reshape(n, -1).sum(1).double().cpu()).sum())
                    summed = _channel_heatmaps(run, condition, layer, channels[layer], n, channelwise)
                    channel_heatmaps[layer] += float((signs * summed.sum(1).cpu()).sum())
                    norm = plain_map.abs().sum(1).clamp(min=torch.finfo(torch.float64).tiny)
                    worst = float(((summed - plain_map).abs().sum(1) / norm).max())
                    deviation[layer] = max(deviation[layer], worst)
                step(1)
        scale = 1 / weight if weight > 0 else math.nan
        return [
            LayerCompleteness(
                layer=layer,
                channels=channels[layer],
                arriving=arriving[layer] * scale,
                channel_heatmaps=channel_heatmaps[layer] * scale,
                heatmap=heatmap * scale,
                deviation=deviation[layer],
                exact=channelwise,
            )
            for layer in layers
        ]

    def diagnosis(
        self, completeness: list[LayerCompleteness], tolerance: float, messages: tuple[str, ...]
    ) -> Diagnosis:
        scale = 1 / self.weight if self.weight > 0 else math.nan
        shown = self.layers if self.layers is not None else [n for n in self.order if n in self.facts]
        modules = dict(self.model.named_modules())
        rows = []
        for name in sorted((n for n in shown if (n, OUT) in self.sums), key=lambda n: self.order.get(n, 0)):
            fact = self.facts.get(name)
            rows.append(
                FlowRow(
                    name=name,
                    type=type(modules[name]).__name__ if name in modules else (fact.type if fact else "?"),
                    rule=fact.rule if fact else None,
                    calls=self.calls.get(name, 0),
                    relevance_out=self.sums[name, OUT] * scale,
                    relevance_in=self.sums.get((name, IN), math.nan) * scale,
                )
            )
        leaf_rows = rows if self.layers is None else self._leaf_rows(scale)
        operations = [
            OperationRow(op, arriving * scale, sent * scale) for op, arriving, sent in self.operations.values()
        ]
        choice = self.attributor.choice
        architecture = choice.architecture if choice is not None else detect(self.model)
        kept = self.heatmap * scale
        found = findings(leaf_rows, self.order, self.facts, operations, completeness, tolerance, architecture)
        if abs(kept - 1) > tolerance and not any(f.kind != "completeness" for f in found):
            found = (_spread(kept), *found)
        return Diagnosis(
            model=type(self.model).__name__,
            composite=self._describe(),
            samples=len(self.starts),
            tolerance=tolerance,
            kept=kept,
            kept_per_sample=tuple(k / s if s != 0 else math.nan for k, s in zip(self.kept, self.starts, strict=True)),
            flow=tuple(rows),
            completeness=tuple(completeness),
            findings=found,
            warnings=messages,
        )

    def _leaf_rows(self, scale: float) -> list[FlowRow]:
        modules = dict(self.model.named_modules())
        return [
            FlowRow(
                name,
                type(module).__name__,
                self.facts[name].rule if name in self.facts else None,
                self.calls.get(name, 0),
                self.sums[name, OUT] * scale,
                self.sums.get((name, IN), math.nan) * scale,
            )
            for name, module in modules.items()
            if next(module.children(), None) is None and (name, OUT) in self.sums
        ]

    def _describe(self) -> str:
        composite, choice = self.attributor.composite, self.attributor.choice
        if choice is not None:
            return f"composite='auto' ({choice.architecture})"
        if composite is None:
            return "no composite (plain gradients)"
        canonizers = [type(c).__name__ for c in getattr(composite, "canonizers", None) or []]
        return type(composite).__name__ + (f" with {', '.join(canonizers)}" if canonizers else " without canonizers")


def _output(run: Any) -> torch.Tensor:
    return run.output


def _input(run: Any) -> torch.Tensor:
    return run.input


def _starts(output: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """Each sample's starting relevance ``(N,)`` float64: its target unit of the output (summed over any trailing
    dimensions)."""
    n = output.shape[0]
    picked = output.detach()[torch.arange(n, device=output.device), torch.tensor(ids, device=output.device)]
    return picked.reshape(n, -1).sum(1).double().cpu()


def _channel_heatmaps(
    run: Any, condition: Condition, layer: str, channels: int, n: int, channelwise: bool
) -> torch.Tensor:
    """``(N, input elements)`` float64: the conditional heatmaps of all channels of ``layer`` summed."""
    if not channelwise:
        all_channels = Condition(targets=condition.targets, layers={layer: tuple(range(channels))})
        result = run.attribute(all_channels, record=[])
        return result.input_relevance.detach().reshape(n, -1).double()
    total: torch.Tensor | None = None
    for begin in range(0, channels, _CHUNK):
        chunk = range(begin, min(begin + _CHUNK, channels))
        result = run.attribute([Condition(targets=condition.targets, layers={layer: (c,)}) for c in chunk], record=[])
        part = result.input_relevance.detach().reshape(n, len(chunk), -1).double().sum(1)
        total = part if total is None else total + part
    assert total is not None
    return total


def _spread(kept: float) -> Finding:
    return Finding(
        "(model)",
        "absorption" if kept < 1 else "creation",
        kept - 1,
        kept,
        "no single module or operation changes the relevance by more than the tolerance, but together they "
        f"{'lose' if kept < 1 else 'create'} {abs(kept - 1):.3g} of the logits; the flow table shows where.",
        None,
    )
