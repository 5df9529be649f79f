"""The ``glocal`` subcommands that test what concepts are worth: ``prune`` (which concepts the model really needs) and
``evaluate`` (whether the explanations are faithful, and where relevance is lost).

Surfaces only: each command parses its options (the shared ones come from :mod:`glocal.cli.surface`) and hands the
work to :mod:`glocal.cli.analysis_work`, imported when the command runs, so that ``glocal --help`` never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .surface import Settings, glocal_command, images_argument, layer_option, load_model, model_options

__all__ = ["CRITERIA", "evaluate", "prune"]

CRITERIA = ("relevance", "activation", "weight", "gradient", "taylor", "random")
"""The channel criteria of :func:`glocal.pruning.channel_scores` (repeated here so that ``--help`` needs no torch)."""


def parse_rates(text: str) -> list[float]:
    """``"0,0.1,0.3"`` as rates in [0, 1)."""
    try:
        rates = [float(part) for part in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated rates such as 0,0.2,0.4, got {text!r}") from None
    if not rates or min(rates) < 0 or max(rates) >= 1:
        raise click.BadParameter(f"every rate must be in [0, 1), got {text!r}")
    return sorted(set(rates))


@glocal_command(
    "prune",
    "glocal prune --model mnist_cnn --data preset --criterion relevance --criterion random --rate 0.5 --curve c.png",
)
@model_options
@click.option(
    "--data", "-d", required=True, help="Labelled data: a folder of class folders, a dataset factory, preset."
)
@layer_option
@click.option(
    "--criterion",
    "criteria",
    type=click.Choice(CRITERIA),
    multiple=True,
    help="Channel score; repeatable (the first one's pruned model is written by --out) [relevance].",
)
@click.option(
    "--rate", type=click.FloatRange(0, 1, max_open=True), default=0.3, show_default=True, help="Share removed."
)
@click.option(
    "--scope",
    type=click.Choice(["layer", "global"]),
    default="layer",
    show_default=True,
    help="Remove the rate of each layer, or of all layers' channels pooled (scores normalised per layer).",
)
@click.option(
    "--reference",
    type=click.IntRange(1),
    default=256,
    show_default=True,
    help="Samples (drawn with --seed) that score the channels; the others measure accuracy.",
)
@click.option(
    "--class", "classes", type=click.IntRange(0), multiple=True, help="Score from this class only; repeatable."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the reference draw and random scores.")
@click.option("--batch-size", type=click.IntRange(1), help="Samples per batch [32].")
@click.option("--curve", type=click.Path(dir_okay=False, path_type=Path), help="PNG of accuracy against --rates.")
@click.option("--rates", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", show_default=True, help="Rates of --curve.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The physically pruned model at --rate (torch.save of the whole module; load with weights_only=False).",
)
def prune(
    settings: Settings,
    data: str,
    layers: tuple[str, ...],
    criteria: tuple[str, ...],
    rate: float,
    scope: str,
    reference: int,
    classes: tuple[int, ...],
    seed: int,
    batch_size: int | None,
    curve: Path | None,
    rates: str,
    out: Path | None,
    **options: Any,
) -> Any:
    """Score the channels (concepts) of layers by a criterion and remove the least important ones: accuracy,
    parameters and FLOPs before and after, without fine-tuning; with --curve, accuracy against the pruning rate for
    every criterion given."""
    from . import analysis_work

    steps = parse_rates(rates) if curve is not None else []
    loaded, composite, description = load_model(options)
    plan = analysis_work.PruneOptions(
        criteria=criteria or ("relevance",),
        rate=rate,
        scope=scope,
        reference=reference,
        classes=classes,
        seed=seed,
        batch_size=batch_size,
        rates=steps,
        progress=settings.progress,
    )
    return analysis_work.prune(loaded, composite, description, data, layers, plan, curve, out)


@glocal_command(
    "evaluate", "glocal evaluate --model mobilenet_v2 photos/ --layer features.14 --steps 16 --out flipping.png"
)
@images_argument
@model_options
@layer_option
@click.option("--steps", type=click.IntRange(1), default=32, show_default=True, help="Flipping steps per layer.")
@click.option("--random", "random_orders", type=click.IntRange(1), default=10, show_default=True, help="Random orders.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random orders.")
@click.option(
    "--diagnose/--no-diagnose",
    default=True,
    show_default=True,
    help="Also measure where relevance is lost or created (conservation layer by layer) and name the fixes.",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="PNG of the flipping curves per layer.")
def evaluate(
    settings: Settings,
    images: tuple[Path, ...],
    layers: tuple[str, ...],
    steps: int,
    random_orders: int,
    seed: int,
    diagnose: bool,
    out: Path | None,
    **options: Any,
) -> Any:
    """Test the explanations of IMAGES: switch each layer's concepts off most relevant first (MoRF), least relevant
    first (LeRF), most active first and in random orders, and compare the drop of the explained output (AOPC, ABPC,
    Wilcoxon test against random); with --diagnose, the conservation of relevance layer by layer."""
    from . import analysis_work

    loaded, composite, description = load_model(options)
    return analysis_work.evaluate(
        loaded, composite, description, images, layers, steps, random_orders, seed, diagnose, out, settings.progress
    )
