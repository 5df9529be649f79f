"""The ``glocal parts`` subcommand: the explanatory part graph of a set of images (which parts the model finds, where,
and how the parts of one layer build those of the layer above).

Surface only: the command parses its options (the shared ones come from :mod:`glocal.cli.surface`) and hands the work
to :mod:`glocal.cli.parts_work`, imported when the command runs, so that ``glocal --help`` never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .surface import Settings, glocal_command, images_argument, load_model, model_options

__all__ = ["parts"]


@glocal_command(
    "parts",
    "glocal parts --model mnist_cnn digits/7/ --layer conv_layers.3 --layer conv_layers.0 --out parts/",
)
@images_argument
@model_options
@click.option(
    "--layer",
    "-l",
    "layers",
    multiple=True,
    required=True,
    help="A layer of the graph; repeatable, the top (nearest the output) first.",
)
@click.option("--class", "label", type=click.IntRange(0), help="Explain this class in every image [each prediction].")
@click.option(
    "--threshold",
    type=click.FloatRange(0, min_open=True),
    help="A channel is present in an image when its share of the relevance there (the layer's at the top, its parent "
    "part's below) is at least threshold / channels [1.0: a fair share].",
)
@click.option(
    "--min-support",
    type=click.FloatRange(0, 1),
    help="Candidate channels are present in at least this share of the images [0.25].",
)
@click.option(
    "--radius",
    type=click.FloatRange(0, min_open=True),
    help="Channels group when their positions lie within radius x the image diagonal (median over images) [0.1].",
)
@click.option("--max-channels", type=click.IntRange(1), help="Candidate channels per layer, most relevant first [32].")
@click.option("--max-nodes", type=click.IntRange(1), help="Part nodes kept per layer [12].")
@click.option("--batch-size", type=click.IntRange(1), help="Rows per batched attribution [a memory budget].")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for part-graph.json, part-graph.png and one positions PNG for each of the first --positions images.",
)
@click.option(
    "--positions",
    type=click.IntRange(0),
    default=4,
    show_default=True,
    help="Images whose part positions are drawn into --out.",
)
def parts(
    settings: Settings,
    images: tuple[Path, ...],
    layers: tuple[str, ...],
    label: int | None,
    threshold: float | None,
    min_support: float | None,
    radius: float | None,
    max_channels: int | None,
    max_nodes: int | None,
    batch_size: int | None,
    out: Path | None,
    positions: int,
    **options: Any,
) -> Any:
    """The explanatory part graph of IMAGES: per layer, part nodes (groups of channels whose relevance passes a
    threshold and that find their part at the same place across the images; below the top layer, found in the
    relevance of one part above), each node's position and score in every image, and the relevance flowing from each
    part into its parts in the layer below. IMAGES are image files or folders of them, best several images of one
    class."""
    from . import parts_work

    if len(set(layers)) != len(layers):
        raise click.BadParameter(f"each layer once, got {', '.join(layers)}", param_hint="--layer")
    chosen = {
        "threshold": threshold,
        "min_support": min_support,
        "radius": radius,
        "max_channels": max_channels,
        "max_nodes": max_nodes,
        "batch_size": batch_size,
    }
    loaded, composite, description = load_model(options)
    return parts_work.parts(
        loaded,
        composite,
        description,
        images,
        layers,
        label,
        {name: value for name, value in chosen.items() if value is not None},
        out,
        positions,
        settings.progress,
    )
