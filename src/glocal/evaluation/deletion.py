"""Heatmap deletion and insertion at the input: does a concept's conditional heatmap point at the pixels the concept
needs?

For a sample ``x`` with explained output ``t`` and a concept (layer ``l``, channel ``c``), the conditional heatmap
(CRP, condition ``{l: [c]}`` for ``t``, summed over the input channels) orders the ``P`` input positions, most relevant
first. In ``steps`` steps, ``p_s = floor(s P / S)`` positions are

* ``"deletion"`` -- replaced by the baseline in ``x`` (all input channels of a position at once), or
* ``"insertion"`` -- copied from ``x`` into the baseline image,

and the concept's relevance ``R_c`` at ``l`` for ``t`` (LRP relevance arriving at the layer, summed over space) is
measured on each perturbed input; the same for ``random_orders`` random position orders. All steps of all orders of
one sample run as one batched attribution as far as ``batch_size`` allows. The curves are normalised by the
concept's relevance on the unperturbed input, and their trapezoid area over the fraction of positions changed
(0 to 1) is the score: for deletion lower is better (the heatmap found what the concept needs), for insertion higher.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..attribution.concepts import ChannelConcept
from ..attribution.conditions import Condition, PerSample
from ..attribution.engine import Attributor
from ..attribution.inputs import check_input
from ..attribution.layers import resolve_layers
from ..errors import InputError, warn
from ..progress import progress_bar
from .areas import normalised_area
from .batching import Targets, explained_targets, inverse_orders, step_counts
from .flipping import scores_of
from .wilcoxon import WilcoxonResult, wilcoxon_signed_rank

__all__ = ["MODES", "DeletionResult", "heatmap_deletion"]

MODES = ("deletion", "insertion")
ATTRIBUTION_BUDGET = 1 << 19
"""Input elements of one batched attribution when the caller gives no batch size: an LRP pass holds far more per
row than a forward pass (about 0.9 GB per 224 x 224 MobileNetV2 row), so 3 such rows, or 668 MNIST digits."""


@dataclass(frozen=True)
class DeletionResult:
    """Concept relevance under input deletion or insertion, heatmap order against random orders.

    Attributes
    ----------
    mode
        ``"deletion"`` or ``"insertion"``.
    concepts
        The ``M`` concepts as ``(layer, channel)``.
    fractions
        ``p_s / P``: the fraction of input positions changed at each of the ``S + 1`` steps.
    targets
        The explained output of each of the ``N`` samples.
    relevance
        ``(M, N, S + 1)`` float64: the concept's relevance on each perturbed input, heatmap order.
    random_relevance
        ``(R, M, N, S + 1)``: the same for each random order.
    reference
        ``(M, N)``: the concept's relevance on the unperturbed input (what the curves are normalised by).
    baseline
        The value that replaced (or started) the pixels: a float, or ``"mean"`` (each image's channel mean).
    seed
        Seed of the random orders.
    """

    mode: str
    concepts: tuple[tuple[str, int], ...]
    fractions: tuple[float, ...]
    targets: tuple[int, ...]
    relevance: torch.Tensor
    random_relevance: torch.Tensor
    reference: torch.Tensor
    baseline: float | str
    seed: int

    def _concept(self, concept: int | tuple[str, int]) -> int:
        if isinstance(concept, tuple):
            if concept not in self.concepts:
                raise InputError(f"concept {concept} was not evaluated; this result has {self.concepts}")
            return self.concepts.index(concept)
        if not 0 <= concept < len(self.concepts):
            raise InputError(f"concept index {concept} is out of range: {len(self.concepts)} concepts were evaluated")
        return concept

    def curves(self, concept: int | tuple[str, int] = 0, order: str = "heatmap") -> torch.Tensor:
        """``(N, S + 1)`` relevance normalised by the unperturbed relevance (``nan`` where that is not positive);
        ``order="random"``: the mean over the random orders."""
        m = self._concept(concept)
        reference = self.reference[m][:, None]
        if order == "heatmap":
            raw = self.relevance[m]
        elif order == "random" and self.random_relevance.shape[0]:
            raw = self.random_relevance[:, m].mean(0)
        else:
            raise InputError(f"order must be 'heatmap' or 'random' (with random orders), got {order!r}")
        return torch.where(reference > 0, raw / reference.clamp(min=1e-300), torch.nan)

    def areas(self, concept: int | tuple[str, int] = 0, order: str = "heatmap") -> torch.Tensor:
        """``(N,)`` normalised areas under the curves (``"random"``: the mean of the random orders' areas)."""
        m = self._concept(concept)
        reference = self.reference[m]
        if order == "random" and self.random_relevance.shape[0]:
            each = [normalised_area(r[m], self.fractions, reference) for r in self.random_relevance]
            return torch.stack(each).mean(0)
        if order != "heatmap":
            raise InputError(f"order must be 'heatmap' or 'random' (with random orders), got {order!r}")
        return normalised_area(self.relevance[m], self.fractions, reference)

    def area(self, concept: int | tuple[str, int] | None = None, order: str = "heatmap") -> float:
        """Mean area over samples (and over all concepts when ``concept`` is ``None``), ``nan`` samples left out."""
        concepts = range(len(self.concepts)) if concept is None else [self._concept(concept)]
        values = torch.cat([self.areas(m, order) for m in concepts])
        return float(values.nanmean())

    def wilcoxon(self, concept: int | tuple[str, int] = 0) -> WilcoxonResult:
        """Paired Wilcoxon test over samples of the heatmap order's area against the random orders' mean area:
        ``"less"`` for deletion (the heatmap order destroys the concept faster), ``"greater"`` for insertion."""
        heatmap, random = self.areas(concept, "heatmap"), self.areas(concept, "random")
        keep = ~(heatmap.isnan() | random.isnan())
        alternative = "less" if self.mode == "deletion" else "greater"
        return wilcoxon_signed_rank(heatmap[keep], random[keep], alternative=alternative)

    def table(self) -> str:
        """Areas per concept, heatmap against random, as a Markdown table."""
        better = "lower" if self.mode == "deletion" else "higher"
        lines = [f"| concept | heatmap area | random area | p ({better}) |", "| --- | --- | --- | --- |"]
        for m, (layer, channel) in enumerate(self.concepts):
            random = self.area(m, "random") if self.random_relevance.shape[0] else float("nan")
            p = self.wilcoxon(m).pvalue if self.random_relevance.shape[0] else float("nan")
            lines.append(f"| {layer}:{channel} | {self.area(m):.4g} | {random:.4g} | {p:.3g} |")
        return "\n".join(lines)

    def summary(self) -> str:
        random = f", random {self.area(order='random'):.4g}" if self.random_relevance.shape[0] else ""
        better = "lower" if self.mode == "deletion" else "higher"
        return (
            f"heatmap {self.mode} of {len(self.concepts)} concepts on {len(self.targets)} samples ({better} is "
            f"better): mean normalised area, heatmap order {self.area():.4g}{random}"
        )

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: the raw curves, references and areas."""
        has_random = bool(self.random_relevance.shape[0])
        return {
            "mode": self.mode,
            "concepts": [list(c) for c in self.concepts],
            "fractions": list(self.fractions),
            "targets": list(self.targets),
            "baseline": self.baseline,
            "seed": self.seed,
            "relevance": self.relevance.tolist(),
            "random_relevance": self.random_relevance.tolist(),
            "reference": self.reference.tolist(),
            "areas": {
                f"{layer}:{channel}": {
                    "heatmap": self.area(m),
                    "random": self.area(m, "random") if has_random else None,
                }
                for m, (layer, channel) in enumerate(self.concepts)
            },
        }

    def figure(self, ax: Any = None) -> Any:
        """Mean normalised curves per concept, heatmap order against random
        (:func:`glocal.viz.evaluation.deletion_figure`; needs matplotlib)."""
        from ..viz.evaluation import deletion_figure

        return deletion_figure(self, ax=ax)


def _concept_list(concepts: Any) -> list[tuple[str, int]]:
    if isinstance(concepts, tuple) and len(concepts) == 2 and isinstance(concepts[0], str):
        concepts = [concepts]
    try:
        out = [(str(layer), int(channel)) for layer, channel in concepts]
    except (TypeError, ValueError):
        raise InputError(
            f"concepts must be (layer, channel) pairs, e.g. [('features.14', 3)], got {concepts!r}"
        ) from None
    if not out:
        raise InputError("no concepts given; pass (layer, channel) pairs, e.g. [('features.14', 3)]")
    return out


def _baseline_image(inputs: torch.Tensor, baseline: float | str) -> torch.Tensor:
    if baseline == "mean":
        return inputs.mean(tuple(range(2, inputs.dim())), keepdim=True).expand_as(inputs)
    if isinstance(baseline, bool) or not isinstance(baseline, int | float):
        raise InputError(f"baseline must be a number or 'mean', got {baseline!r}")
    return torch.full_like(inputs, float(baseline))


def heatmap_deletion(
    attributor: Attributor,
    inputs: torch.Tensor,
    concepts: Sequence[tuple[str, int]] | tuple[str, int],
    *,
    targets: Targets = "prediction",
    steps: int = 16,
    mode: str = "deletion",
    baseline: float | str = 0.0,
    random_orders: int = 5,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
) -> DeletionResult:
    """Remove (or insert) input positions in the order of each concept's conditional heatmap and track the concept's
    relevance, against random position orders.

    Parameters
    ----------
    attributor
        The model and composite (conditional heatmaps, and the concept relevance of every perturbed input).
    inputs
        ``(N, channels, *spatial)`` samples.
    concepts
        ``(layer, channel)`` pairs (or one pair), each evaluated on every sample.
    targets
        The explained output of each sample: ``"prediction"``, one unit for all, or one per sample.
    steps
        ``S``: the curves have ``S + 1`` points, from nothing to every position changed.
    mode
        ``"deletion"`` or ``"insertion"``.
    baseline
        What replaces deleted positions (or fills the image insertion starts from): a number, or ``"mean"`` for
        each image's per-channel mean.
    random_orders
        Number of seeded random position orders.
    seed
        Seed of the random orders.
    batch_size
        Most rows (perturbed inputs) of one batched attribution; ``None``: as many as keep the batch's input under
        2**19 elements (all steps of many samples for MNIST-sized inputs, 3 rows for 224 x 224 photos).
    progress
        Show a progress bar (batched attributions).
    """
    inputs = check_input(inputs)
    if inputs.dim() < 3:
        raise InputError(
            f"heatmap deletion removes positions of inputs shaped (N, channels, *spatial), got {tuple(inputs.shape)}"
        )
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(random_orders, bool) or not isinstance(random_orders, int) or random_orders < 0:
        raise InputError(f"random_orders must be a number >= 0, got {random_orders!r}")
    pairs = _concept_list(concepts)
    layers = list(dict.fromkeys(layer for layer, _ in pairs))
    resolve_layers(attributor.model, layers)
    n, m = inputs.shape[0], len(pairs)
    with attributor.session(inputs, record=layers, heatmap=True) as run:
        explained = explained_targets(targets, scores_of(run.output.detach()))
        per_sample = PerSample([[t] for t in explained])
        found = run.attribute([Condition(targets=per_sample, layers={layer: (c,)}) for layer, c in pairs])
    assert found.heatmap is not None  # asked for with heatmap=True
    heatmaps = found.grid(found.heatmap.detach()).flatten(2)  # (N, M, P)
    positions = heatmaps.shape[-1]
    counts = step_counts(positions, steps)
    rows = len(counts)
    orders_per = 1 + random_orders
    generator = torch.Generator().manual_seed(seed)
    named = heatmaps.cpu().argsort(dim=-1, descending=True, stable=True)
    drawn = [torch.randperm(positions, generator=generator) for _ in range(n * m * random_orders)]
    shuffled = torch.stack(drawn).view(n, m, random_orders, positions) if drawn else torch.empty(n, m, 0, positions)
    every = torch.cat([named[:, :, None].long(), shuffled.long()], 2)  # (N, M, 1 + R, P)
    places = inverse_orders(every)  # (N, M, 1 + R, P): the step at which each position changes
    limits = torch.as_tensor(counts)[:, None]  # (S + 1, 1)
    base = _baseline_image(inputs.detach(), baseline)
    curves = torch.empty(n, m, orders_per, rows, dtype=torch.float64)
    groups_per_sample = m * orders_per
    total = n * groups_per_sample * rows  # one row per (sample, concept, order, step), in that order
    size = batch_size if batch_size is not None else max(1, ATTRIBUTION_BUDGET // inputs[0].numel())
    if isinstance(size, bool) or size < 1:
        raise InputError(f"batch_size must be a positive number of rows (or None), got {batch_size!r}")
    flat = curves.view(-1)
    limits = torch.as_tensor(counts)
    with (
        attributor.attached(layers) as start,
        progress_bar(-(-total // size), f"heatmap {mode}", enabled=progress, unit="pass") as bar,
    ):
        for begin in range(0, total, size):
            row = torch.arange(begin, min(total, begin + size))
            group, step = row // rows, row % rows
            sample, concept, order = group // groups_per_sample, (group // orders_per) % m, group % orders_per
            where = places[sample, concept, order] < limits[step][:, None]  # (B, P)
            where = where.view(-1, 1, *inputs.shape[2:]).to(inputs.device)
            sample_rows = sample.to(inputs.device)
            original, filled = inputs.detach()[sample_rows], base[sample_rows]
            batch = torch.where(where, filled, original) if mode == "deletion" else torch.where(where, original, filled)
            run = start(batch, record=layers, heatmap=False, input_grad=False)
            result = run.attribute(Condition(targets=PerSample([[explained[int(i)]] for i in sample.tolist()])))
            per_layer = {layer: ChannelConcept().relevance(result.relevances[layer].detach()) for layer in layers}
            values = [per_layer[pairs[c][0]][i, pairs[c][1]] for i, c in enumerate(concept.tolist())]
            flat[begin : begin + row.numel()] = torch.stack(values).double().cpu()
            bar.update(1)
    curves = curves.permute(1, 0, 2, 3)  # (M, N, 1 + R, S + 1)
    reference = curves[:, :, 0, 0] if mode == "deletion" else curves[:, :, 0, -1]
    if bool((reference <= 0).any()):
        bad = int((reference <= 0).sum())
        warn(
            f"{bad} of {reference.numel()} (concept, sample) pairs have no positive relevance on the unperturbed "
            "input; their normalised curves and areas are nan. Evaluate concepts that are relevant for the samples."
        )
    return DeletionResult(
        mode=mode,
        concepts=tuple(pairs),
        fractions=tuple(c / positions for c in counts),
        targets=tuple(explained),
        relevance=curves[:, :, 0].contiguous(),
        random_relevance=curves[:, :, 1:].permute(2, 0, 1, 3).contiguous(),
        reference=reference.contiguous(),
        baseline=baseline,
        seed=seed,
    )
