"""What a model loses as it is pruned: accuracy, per-class accuracy and the label's logit against the pruning rate,
for one criterion (:func:`pruning_curve`) or several side by side (:func:`compare_criteria`).

Each rate's model is the masked model (:func:`~glocal.pruning.masked`), evaluated in batches without gradients; no
fine-tuning happens. The area under a curve (:meth:`PruningCurve.auc`) is the trapezoid rule over the rates divided
by their span, so an unharmed model scores its accuracy and a curve that drops early scores less.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import zennit.core

from ..data import (
    Batch,
    Targets,
    as_data,
    batch_targets,
    default_batch_size,
    fixed_batches,
    has_labels,
    load_batches,
    model_device,
    sample_count,
)
from ..errors import InputError
from ..progress import progress_bar
from .criteria import CRITERIA, ChannelScores, channel_scores
from .masks import masked
from .selection import prune_plan

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["RATES", "CriteriaComparison", "PruningCurve", "compare_criteria", "pruning_curve"]

RATES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""The default pruning rates."""


def _trapezoid(rates: Sequence[float], values: Sequence[float]) -> float:
    if len(rates) == 1:
        return float(values[0])
    area = sum((rates[i + 1] - rates[i]) * (values[i] + values[i + 1]) / 2 for i in range(len(rates) - 1))
    return area / (rates[-1] - rates[0])


def _json(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class PruningCurve:
    """A model's accuracy under one criterion's pruning at each rate.

    ``class_accuracy[r][k]`` is class ``k``'s accuracy at rate ``r`` (NaN for a class without samples),
    ``logit[r]`` the mean logit of each sample's label, ``sparsity[r]`` the share of channels removed (below the rate
    where ``keep`` stops a layer), ``classes`` the classes the scores came from (``None``: all samples).
    """

    criterion: str
    rates: tuple[float, ...]
    accuracy: tuple[float, ...]
    class_accuracy: tuple[tuple[float, ...], ...]
    logit: tuple[float, ...]
    sparsity: tuple[float, ...]
    samples: int
    scope: str
    classes: tuple[int, ...] | None = None
    remove: str = "least"

    def auc(self, of: str | int = "accuracy") -> float:
        """Area under the curve of ``of``: ``"accuracy"``, ``"logit"``, a class id (that class's accuracy),
        ``"classes"`` (mean accuracy of the classes in :attr:`classes`) or ``"others"`` (mean accuracy of the other
        classes), normalised by the span of the rates.

        >>> curve = PruningCurve("weight", (0.0, 0.5, 1.0), (1.0, 0.5, 0.0), ((1.0,),) * 3, (2.0, 1.0, 0.0),
        ...                      (0.0, 0.5, 1.0), 10, "layer")
        >>> curve.auc(), curve.auc("logit")
        (0.5, 1.0)
        """
        return _trapezoid(self.rates, self.values(of))

    def values(self, of: str | int = "accuracy") -> tuple[float, ...]:
        """The curve of ``of`` (see :meth:`auc`), one value per rate."""
        if of == "accuracy":
            return self.accuracy
        if of == "logit":
            return self.logit
        if of in ("classes", "others"):
            chosen = set(self.classes or ())
            values = []
            for row in self.class_accuracy:
                kept = [a for k, a in enumerate(row) if (k in chosen) == (of == "classes") and not math.isnan(a)]
                values.append(sum(kept) / len(kept) if kept else math.nan)
            return tuple(values)
        if isinstance(of, int) and not isinstance(of, bool) and 0 <= of < len(self.class_accuracy[0]):
            return tuple(row[of] for row in self.class_accuracy)
        raise ValueError(f"of must be 'accuracy', 'logit', 'classes', 'others' or a class id, got {of!r}")

    def figure(self, of: Sequence[str | int] | None = None) -> Figure:
        """The curve(s) against the rate (needs matplotlib); see :func:`glocal.viz.pruning.curve_figure`."""
        from ..viz.pruning import curve_figure

        return curve_figure({self.criterion: self}, of=of)

    def to_dict(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion,
            "rates": list(self.rates),
            "accuracy": list(self.accuracy),
            "class_accuracy": [[_json(a) for a in row] for row in self.class_accuracy],
            "logit": list(self.logit),
            "sparsity": list(self.sparsity),
            "samples": self.samples,
            "scope": self.scope,
            "classes": None if self.classes is None else list(self.classes),
            "remove": self.remove,
            "auc": self.auc(),
        }


def _evaluate(model: torch.nn.Module, batches: Sequence[Batch]) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """Correct predictions and sample counts per class, the summed label logit and the sample count."""
    correct = torch.zeros(0, dtype=torch.float64)
    counts = torch.zeros(0, dtype=torch.float64)
    logit, n = 0.0, 0
    device = model_device(model)
    with torch.no_grad():
        for batch in batches:
            output = model(batch.inputs.to(device))
            if output.dim() != 2:
                raise InputError(f"pruning curves need a model output (N, classes); got {tuple(output.shape)}")
            labels = torch.tensor(batch_targets("label", batch, output, "a pruning curve"), device=output.device)
            if correct.numel() == 0:
                correct = torch.zeros(output.shape[1], dtype=torch.float64)
                counts = torch.zeros(output.shape[1], dtype=torch.float64)
            hits = (output.argmax(1) == labels).to(torch.float64).cpu()
            correct.index_add_(0, labels.cpu(), hits)
            counts.index_add_(0, labels.cpu(), torch.ones_like(hits))
            logit += float(output.gather(1, labels[:, None]).to(torch.float64).sum())
            n += len(labels)
    return correct, counts, logit, n


def pruning_curve(
    model: torch.nn.Module,
    data: Any,
    scores: ChannelScores,
    *,
    rates: Sequence[float] = RATES,
    scope: str = "layer",
    keep: int = 1,
    remove: str = "least",
    example_inputs: Any = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> PruningCurve:
    """Accuracy of ``model`` on labelled ``data`` with the lowest-scored channels masked, at each rate.

    Parameters
    ----------
    model
        The model (in eval mode); unchanged afterwards.
    data
        Labelled data: a dataset of ``(input, label)`` items or a DataLoader over one.
    scores
        Channel scores (:func:`~glocal.pruning.channel_scores`); their layers are pruned.
    rates
        Pruning rates (share of each layer's channels in layer scope, of all scored channels in global scope).
    scope, keep, remove
        As in :func:`~glocal.pruning.prune_plan`.
    example_inputs
        A batch for torch-pruning's trace (default: the first sample of ``data``).
    batch_size
        Samples per forward pass.
    progress
        Show a progress bar over the rates.
    """
    data_ = as_data(data)
    n = sample_count(data_)
    if not has_labels(data_):
        raise InputError("pruning curves measure accuracy and need labelled data: (input, label) items")
    ordered = sorted(float(r) for r in rates)
    if not ordered:
        raise InputError("give at least one pruning rate")
    # the data is read once and kept, since every rate evaluates all of it
    batches = list(load_batches(data_, fixed_batches(n, default_batch_size(data, batch_size))))
    example = batches[0].inputs[:1].to(model_device(model)) if example_inputs is None else example_inputs
    accuracy, class_accuracy, logits, sparsity = [], [], [], []
    with progress_bar(len(ordered), f"{scores.criterion} pruning curve", enabled=progress, unit="rate") as bar:
        for rate in ordered:
            plan = prune_plan(scores, rate, scope=scope, keep=keep, remove=remove)
            with masked(model, plan, example) as pruned:
                correct, counts, logit, total = _evaluate(pruned, batches)
            accuracy.append(float(correct.sum() / total))
            class_accuracy.append(
                tuple(float(c / k) if k > 0 else math.nan for c, k in zip(correct, counts, strict=True))
            )
            logits.append(logit / total)
            sparsity.append(plan.sparsity)
            bar.update(1)
    return PruningCurve(
        scores.criterion,
        tuple(ordered),
        tuple(accuracy),
        tuple(class_accuracy),
        tuple(logits),
        tuple(sparsity),
        n,
        scope,
        scores.classes,
        remove,
    )


@dataclass(frozen=True)
class CriteriaComparison:
    """Pruning curves of several criteria on the same model and data (``curves[criterion]``)."""

    curves: Mapping[str, PruningCurve]
    reference_samples: int
    classes: tuple[int, ...] | None = None

    def table(self, rates: Sequence[float] | None = None) -> str:
        """A markdown table: per criterion the AUC of accuracy and logit (with ``classes``: of the chosen classes'
        accuracy and of the others'), and the accuracy at ``rates`` (default: up to five of the curves' rates)."""
        first = next(iter(self.curves.values()))
        shown = list(first.rates) if rates is None else [float(r) for r in rates]
        if rates is None and len(shown) > 5:
            shown = [shown[round(i * (len(shown) - 1) / 4)] for i in range(5)]
        header = ["criterion", "AUC accuracy", "AUC logit"]
        if self.classes is not None:
            header += [f"AUC class {', '.join(map(str, self.classes))}", "AUC other classes"]
        header += [f"accuracy at {r:g}" for r in shown]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        for name, curve in self.curves.items():
            cells = [name, f"{curve.auc():.4f}", f"{curve.auc('logit'):.3f}"]
            if self.classes is not None:
                cells += [f"{curve.auc('classes'):.4f}", f"{curve.auc('others'):.4f}"]
            for r in shown:
                if r not in curve.rates:
                    raise InputError(f"rate {r} is not among the curves' rates {curve.rates}")
                cells.append(f"{curve.accuracy[curve.rates.index(r)]:.4f}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def figure(self, of: Sequence[str | int] | None = None) -> Figure:
        """Every criterion's curve against the rate (needs matplotlib); with ``classes``, the chosen classes'
        accuracy beside the other classes'. See :func:`glocal.viz.pruning.curve_figure`."""
        from ..viz.pruning import curve_figure

        return curve_figure(self.curves, of=of)

    def to_dict(self) -> dict[str, Any]:
        return {
            "curves": {name: curve.to_dict() for name, curve in self.curves.items()},
            "reference_samples": self.reference_samples,
            "classes": None if self.classes is None else list(self.classes),
        }


def compare_criteria(
    model: torch.nn.Module,
    data: Any,
    layers: Sequence[str],
    *,
    criteria: Sequence[str] = CRITERIA,
    reference: Any = None,
    rates: Sequence[float] = RATES,
    scope: str = "layer",
    keep: int = 1,
    remove: str = "least",
    classes: Sequence[int] | None = None,
    composite: zennit.core.Composite | str | None = "auto",
    targets: Targets = "auto",
    signed: bool = False,
    normalise: bool = True,
    seed: int = 0,
    example_inputs: Any = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> CriteriaComparison:
    """Score ``layers`` by each criterion on ``reference`` (default: ``data``) and measure each one's pruning curve
    on ``data``.

    With ``classes`` the scores come from those classes' reference samples only (class-specific pruning: what those
    classes rely on), and the figure and table set their accuracy against the other classes'; ``remove="most"`` then
    removes what those classes rely on most (their accuracy should fall faster than the others'). The other keywords are
    those of :func:`~glocal.pruning.channel_scores` and :func:`pruning_curve`.

    Examples
    --------
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    >>> data = [(x, int(x.sum() > 2)) for x in torch.rand(32, 4)]
    >>> comparison = compare_criteria(net, data, ["0"], criteria=("weight", "random"), rates=(0.0, 0.5),
    ...                               progress=False)
    >>> list(comparison.curves), comparison.curves["weight"].rates
    (['weight', 'random'], (0.0, 0.5))
    """
    unknown = [c for c in criteria if c not in CRITERIA]
    if unknown or not criteria:
        raise ValueError(f"criteria must be a non-empty selection of {CRITERIA}, got {tuple(criteria)}")
    source = data if reference is None else reference
    curves = {}
    samples = 0
    for criterion in criteria:
        scores = channel_scores(
            model,
            source,
            layers,
            criterion=criterion,
            composite=composite,
            targets=targets,
            classes=classes,
            signed=signed,
            normalise=normalise,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
        )
        samples = max(samples, scores.samples)
        curves[criterion] = pruning_curve(
            model,
            data,
            scores,
            rates=rates,
            scope=scope,
            keep=keep,
            remove=remove,
            example_inputs=example_inputs,
            batch_size=batch_size,
            progress=progress,
        )
    chosen = None if classes is None else tuple(sorted({int(c) for c in classes}))
    return CriteriaComparison(curves, samples, chosen)
