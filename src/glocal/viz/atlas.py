"""The atlas as a picture: vote bars per layer, with reference thumbnails from a concept index.

Needs matplotlib for the figure (``pip install "glocal[viz]"``), imported when :func:`atlas_figure` is first called.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from PIL import Image

from ..attribution.engine import Attributor
from ..index.references import concept_references
from ..structure.atlas import ConceptAtlas
from ..structure.atlas.voting import check_k
from .images import require_matplotlib
from .references import reference_grid

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..index.concept_index import ConceptIndex

__all__ = ["atlas_figure", "atlas_thumbnails"]

logger = logging.getLogger(__name__)


def atlas_thumbnails(
    atlas: ConceptAtlas,
    index: ConceptIndex,
    dataset: Any,
    attributor: Attributor,
    *,
    layers: Sequence[str] | None = None,
    top: int = 8,
    target: int | None = None,
    n: int = 4,
    size: int = 64,
    mode: str = "relmax_sum",
    **options: Any,
) -> dict[tuple[str, int], Image.Image]:
    """Reference thumbnails of the ``top`` concepts of each atlas layer that the index has, for :func:`atlas_figure`.

    Each thumbnail tiles a concept's ``n`` best reference samples (:func:`~glocal.concept_references`, all concepts of
    a layer sharing batches) in a square grid. With ``target`` the concepts are the class's top ones and their
    references the class's samples (the index's class statistics, ranked by ``relmax_sum``). ``options`` go to
    :func:`~glocal.concept_references` (e.g. ``to_image``, ``cache``, ``batch_size``; ``opacity`` defaults to 0.45
    here, a lighter fade than full-size references).
    """
    chosen = list(atlas.layers if layers is None else layers)
    columns = math.ceil(math.sqrt(n))
    thumbnails: dict[tuple[str, int], Image.Image] = {}
    for layer in chosen:
        if layer not in index.layers:
            logger.info("the index has no layer %r; its atlas concepts get no thumbnails", layer)
            continue
        concepts = atlas.top(layer, top, target)
        if not concepts:
            continue
        # thumbnails are small: fade the irrelevant part less than full-size references do, so the context shows
        options.setdefault("opacity", 0.45)
        references = concept_references(
            index, dataset, attributor, layer, concepts, mode=mode, n=n, label=target, size=size, **options
        )
        for concept, reference in references.items():
            thumbnails[(layer, concept)] = reference_grid(list(reference.images), columns=columns, margin=1)
    return thumbnails


def atlas_figure(
    atlas: ConceptAtlas,
    layers: Sequence[str] | None = None,
    *,
    top: int = 8,
    target: int | None = None,
    thumbnails: Mapping[tuple[str, int], Image.Image] | None = None,
    class_names: Sequence[str] | None = None,
    column_width: float = 1.4,
    dpi: float = 100.0,
) -> Figure:
    """The atlas as a figure: one row per layer with its ``top`` concepts, their vote bars and reference thumbnails.

    Each bar is the share of samples whose ballot holds the concept (labelled with the vote count); the tick label
    gives the concept id and its mean relevance share. With ``thumbnails`` (e.g. from :func:`atlas_thumbnails`) each
    concept's picture sits above its bar.

    Parameters
    ----------
    atlas
        The atlas to draw.
    layers
        Which layers, top to bottom (default: the atlas's order).
    top
        Concepts per layer.
    target
        Draw the atlas of this class's samples instead of all samples.
    thumbnails
        ``(layer, concept)`` to a picture; concepts without one get an empty slot.
    class_names
        Names of the model's outputs, for the title of a class atlas.
    column_width
        Inches per concept.
    dpi
        Resolution the figure is saved at.

    Returns
    -------
    matplotlib.figure.Figure
        One bar axes per layer (and one image axes per thumbnail).
    """
    figure_class, canvas_class = require_matplotlib()
    check_k(top, "top")
    chosen = list(atlas.layers if layers is None else layers)
    for layer in chosen:
        atlas.layer_entries(layer)  # an unknown layer: LayerError before any drawing
    pictured = {key[0] for key in thumbnails or {} if key[0] in chosen}  # layers with thumbnails get room for them
    with_pictures = bool(pictured)
    bar_inches, title_inches = 1.5, 0.4

    def picture_room(layer: str) -> float:
        return column_width * 0.9 if layer in pictured else 0.0

    def row_room(layer: str) -> float:  # the last part for the three-line tick labels
        return title_inches + picture_room(layer) + bar_inches + 0.65

    width = max(top * column_width + 1.0, 6.0)

    samples = atlas.n_samples if target is None else atlas.class_counts.get(target, 0)
    who = (
        f"all {samples} samples" if target is None else f"the {samples} samples of {_class_label(target, class_names)}"
    )
    where = f"relevance inside the region {atlas.region}" if atlas.regional else "relevance"
    title = f"Concept atlas of {who}: each votes for its top-{atlas.k} concepts per layer by {where}"
    legend = (
        "bars: % of samples voting for the concept (count on top);  under each bar: concept id, its mean share over "
        "all samples, and over its voters"
    )
    if with_pictures:
        legend += ";  pictures: its top reference samples"
    # wrap to the figure's width: about 12 characters per inch at 11 points, 16 at 8 points
    title = textwrap.fill(title, int(width * 11.5))
    legend = textwrap.fill(legend, int(width * 16))
    title_lines, legend_lines = title.count("\n") + 1, legend.count("\n") + 1
    header_inches = 0.2 + 0.2 * title_lines + 0.15 * legend_lines + 0.15
    height = header_inches + sum(row_room(layer) for layer in chosen)
    figure = figure_class(figsize=(width, height), dpi=dpi)
    canvas_class(figure)
    figure.text(0.5, 1 - 0.12 / height, title, fontsize=11, ha="center", va="top")
    figure.text(0.5, 1 - (0.2 + 0.2 * title_lines) / height, legend, fontsize=8, color="#444444", ha="center", va="top")
    left, right = 0.7 / width, 1 - 0.3 / width
    slot = (right - left) / top
    above = header_inches
    for layer in chosen:
        entries = atlas.layer_entries(layer, target)[:top]
        picture_inches = picture_room(layer)
        row_top = 1 - above / height
        above += row_room(layer)
        bar_top = row_top - (title_inches + picture_inches) / height
        bar_bottom = bar_top - bar_inches / height
        axes = figure.add_axes((left, bar_bottom, right - left, bar_inches / height))
        positions = list(range(len(entries)))
        rates = [100 * entry.votes / max(samples, 1) for entry in entries]
        bars = axes.bar(positions, rates, width=0.7, color="#4c72b0")
        axes.bar_label(bars, labels=[f"{entry.votes}" for entry in entries], padding=2, fontsize=8)
        axes.set_xlim(-0.5, top - 0.5)
        axes.set_ylim(0, max([*rates, 1.0]) * 1.25)
        axes.set_xticks(positions)
        axes.set_xticklabels(
            [f"#{e.concept}\nmean {e.mean_share:+.1%}\nvoters {e.voter_share:+.1%}" for e in entries], fontsize=7.5
        )
        axes.set_ylabel("votes\n(% of samples)", fontsize=8)
        axes.tick_params(axis="y", labelsize=7)
        axes.spines[["top", "right"]].set_visible(False)
        axes.set_title(
            f"layer {layer!r} ({atlas.n_concepts[layer]} concepts)",
            fontsize=9.5,
            fontweight="bold",
            loc="left",
            y=1.0 + (picture_inches + 0.05) / bar_inches,
        )
        if not entries:
            axes.text(0.5, 0.5, "no concept got a vote", ha="center", va="center", transform=axes.transAxes)
        pictures = {key[1]: image for key, image in (thumbnails or {}).items() if key[0] == layer}
        if not pictures:
            continue
        for position, entry in enumerate(entries):
            bottom = bar_top + 0.05 / height
            picture = pictures.get(entry.concept)
            if picture is None:
                figure.text(
                    left + (position + 0.5) * slot,
                    bottom + 0.5 * picture_inches / height,
                    "no reference",
                    fontsize=7,
                    color="#888888",
                    ha="center",
                    va="center",
                )
                continue
            image_axes = figure.add_axes(
                (left + (position + 0.04) * slot, bottom, 0.92 * slot, picture_inches / height)
            )
            image_axes.imshow(picture, interpolation="antialiased")
            image_axes.set_axis_off()
    return figure


def _class_label(target: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= target < len(class_names):
        return f"class {target} ({class_names[target]})"
    return f"class {target}"
