"""What ``glocal prune`` and ``glocal evaluate`` do once their arguments are parsed (imports torch; see
:mod:`glocal.cli.analysis`).

Each function returns ``(document, lines)`` like :mod:`glocal.cli.work`; files are staged and renamed into place only
when the work succeeded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import torch

from ..attribution.engine import Attributor
from .loading import Loaded, check_layers, image_paths, load_data
from .output import Staging
from .work import Result, load_images, save_figure, slug, write_json

__all__ = ["PruneOptions", "evaluate", "prune"]

logger = logging.getLogger("glocal.cli")


@dataclass(frozen=True)
class PruneOptions:
    """How ``glocal prune`` scores and removes channels (the options of :func:`glocal.cli.analysis.prune`)."""

    criteria: tuple[str, ...]
    rate: float
    scope: str
    reference: int
    classes: tuple[int, ...]
    seed: int
    batch_size: int | None
    rates: list[float]
    progress: bool


def _split(dataset: Any, reference: int, seed: int) -> tuple[Any, Any]:
    """A seeded draw of ``reference`` samples that score the channels, and the other samples that measure accuracy."""
    from ..data import has_labels

    n = len(dataset)
    if not has_labels(dataset):
        raise click.BadParameter(
            "pruning measures accuracy, so the data needs labels: a folder of class folders, or a dataset of "
            "(input, label) items",
            param_hint="--data",
        )
    if reference >= n:
        raise click.BadParameter(
            f"the data has {n} samples, so --reference {reference} leaves none to measure accuracy on; give "
            f"--reference {max(1, n // 4)} or more data",
            param_hint="--reference",
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    subset = torch.utils.data.Subset
    return subset(dataset, sorted(order[:reference])), subset(dataset, sorted(order[reference:]))


def prune(
    loaded: Loaded,
    composite: Any,
    description: str,
    data: str,
    layers: Sequence[str],
    options: PruneOptions,
    curve_png: Path | None,
    out: Path | None,
) -> Result:
    """Score, prune at ``options.rate`` (masked, then physically for the first criterion) and measure; with
    ``curve_png``, the accuracy of every criterion against ``options.rates``."""
    from ..data import split_sample
    from ..pruning import CriteriaComparison, channel_scores, prune_plan, pruned_copy, pruning_curve

    chosen = check_layers(loaded, layers)
    reference, evaluation = _split(load_data(data, loaded), options.reference, options.seed)
    example = split_sample(evaluation[0])[0].unsqueeze(0)
    rates = sorted({0.0, options.rate, *options.rates})
    curves, plans = {}, {}
    for criterion in options.criteria:
        scores = channel_scores(
            loaded.model,
            reference,
            chosen,
            criterion=criterion,
            composite=composite,
            classes=list(options.classes) or None,
            seed=options.seed,
            batch_size=options.batch_size,
            progress=options.progress,
        )
        plans[criterion] = prune_plan(scores, options.rate, scope=options.scope)
        curves[criterion] = pruning_curve(
            loaded.model,
            evaluation,
            scores,
            rates=rates,
            scope=options.scope,
            example_inputs=example,
            batch_size=options.batch_size,
            progress=options.progress,
        )
    comparison = CriteriaComparison(curves, len(reference), tuple(sorted(set(options.classes))) or None)
    first = options.criteria[0]
    physical = pruned_copy(loaded.model, plans[first], example)
    written: list[str] = []
    with Staging() as staging:
        if out is not None:
            torch.save(physical.model, staging.path(out))
            written.append(str(out))
        if curve_png is not None:
            save_figure(comparison.figure(), staging.path(curve_png))
            written += [str(curve_png), str(write_json(staging, curve_png.with_suffix(".json"), _json(comparison)))]
    at = rates.index(options.rate)
    document = {
        "model": loaded.name,
        "composite": description,
        "layers": chosen,
        "rate": options.rate,
        "scope": options.scope,
        "reference_samples": len(reference),
        "evaluation_samples": len(evaluation),
        "criteria": {
            name: {
                "accuracy_before": curve.accuracy[0],
                "accuracy_after": curve.accuracy[at],
                "logit_before": curve.logit[0],
                "logit_after": curve.logit[at],
                "removed": {layer: len(channels) for layer, channels in plans[name].removed.items()},
                "auc": curve.auc() if len(curve.rates) > 1 else None,
            }
            for name, curve in curves.items()
        },
        "physical": {"criterion": first, **physical.to_dict()},
        "comparison": comparison.to_dict(),
        "written": written,
    }
    lines = [
        f"{len(reference)} reference samples score the channels of {', '.join(chosen)}; accuracy on the other "
        f"{len(evaluation)}; {options.rate:g} of the channels removed ({options.scope} scope), no fine-tuning",
        f"{'criterion':<12} {'accuracy before':>16} {'after':>8} {'label logit before':>19} {'after':>8}",
    ]
    for name, curve in curves.items():
        lines.append(
            f"{name:<12} {curve.accuracy[0]:>16.2%} {curve.accuracy[at]:>8.2%} {curve.logit[0]:>19.3f} "
            f"{curve.logit[at]:>8.3f}"
        )
    lines.append(
        f"physically pruned ({first}): parameters {physical.parameters_before:,} -> {physical.parameters_after:,} "
        f"({physical.parameter_ratio:.1%}), MACs {physical.flops_before:,} -> {physical.flops_after:,} "
        f"({physical.flop_ratio:.1%})"
    )
    if len(rates) > 2:
        lines += ["", comparison.table()]
    lines += [f"wrote {path}" for path in written]
    return document, lines


def _json(result: Any) -> str:
    import json

    return json.dumps(result.to_dict(), indent=2)


def evaluate(
    loaded: Loaded,
    composite: Any,
    description: str,
    sources: Sequence[Path],
    layers: Sequence[str],
    steps: int,
    random_orders: int,
    seed: int,
    diagnose: bool,
    out: Path | None,
    progress: bool,
) -> Result:
    """Concept flipping of the images at each layer, and (``diagnose``) the conservation of relevance."""
    from ..evaluation import concept_flipping
    from ..evaluation import diagnose as run_diagnosis

    paths = image_paths(sources)
    chosen = check_layers(loaded, layers)
    _, inputs = load_images(loaded, paths)
    if random_orders and len(paths) < 2:
        logger.info("one image: the Wilcoxon test over samples needs several images to say anything")
    attributor = Attributor(loaded.model, composite)
    results = [
        concept_flipping(
            attributor, inputs, layer, steps=steps, random_orders=random_orders, seed=seed, progress=progress
        )
        for layer in chosen
    ]
    diagnosis = run_diagnosis(loaded.model, composite, inputs, progress=progress) if diagnose else None
    written: list[str] = []
    with Staging() as staging:
        if out is not None:
            for result in results:
                path = out if len(results) == 1 else out.with_name(f"{out.stem}-{slug(result.layer)}{out.suffix}")
                save_figure(result.figure(), staging.path(path))
                written.append(str(path))
    document = {
        "model": loaded.name,
        "composite": description,
        "images": [str(p) for p in paths],
        "flipping": [_flipping_summary(result) for result in results],
        "diagnosis": None if diagnosis is None else diagnosis.to_dict(),
        "written": written,
    }
    lines = [f"{len(paths)} image(s); concept flipping with {steps} steps, {random_orders} random orders"]
    lines += [result.summary() for result in results]
    if diagnosis is not None:
        lines += ["", diagnosis.table()]
    lines += [f"wrote {path}" for path in written]
    return document, lines


def _flipping_summary(result: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "layer": result.layer,
        "channels": result.channels,
        "samples": len(result.targets),
        "aopc": {order: result.aopc(order) for order in result.orders},
    }
    if {"morf", "lerf"} <= set(result.orders):
        summary["abpc"] = result.abpc()
    if {"morf", "random"} <= set(result.orders):
        test = result.wilcoxon()
        summary["wilcoxon"] = {"statistic": test.statistic, "pvalue": test.pvalue, "alternative": "greater"}
    return summary
