"""Computing a report section: :func:`build_report` runs glocal's own functions and returns plain data.

Everything shown is what the library computes elsewhere: the top concepts, shares and conditional heatmaps come from
:class:`~glocal.ConceptExplainer`, the references from :func:`~glocal.concept_references` (RelMax ``relmax_sum`` and
ActMax ``actmax_sum``, receptive-field crops), the class statistics from :meth:`~glocal.ConceptIndex.classes`, the
graph from :func:`~glocal.attribution_graph` and the atlas thumbnails from :func:`glocal.viz.atlas_thumbnails`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..attribution.engine import Attributor
from ..attribution.explain import ConceptExplainer, ConceptExplanation
from ..data import model_device
from ..errors import InputError, LayerError
from ..index.references import Reference, concept_references
from ..index.references.pictures import min_max_image
from ..progress import progress_bar
from ..structure.atlas import ConceptAtlas
from ..structure.attribution_graph import attribution_graph
from ..structure.layer_graph import LayerGraph
from ..viz.atlas import atlas_thumbnails
from .data import (
    Analysis,
    AtlasBar,
    AtlasLayer,
    ClassScore,
    ConceptCard,
    ConceptUse,
    GraphData,
    ImageReport,
    LayerConcepts,
    ModelReport,
    ReferenceSet,
)
from .graphs import report_graph
from .pictures import SIZES, heatmap_png, image_png, picture_png

if TYPE_CHECKING:
    from ..index.concept_index import ConceptIndex
    from ..structure.concept_graph import ConceptGraph

__all__ = ["SIZES", "build_report"]

logger = logging.getLogger(__name__)


def build_report(
    attributor: Attributor,
    inputs: torch.Tensor,
    *,
    layers: Sequence[str],
    pictures: torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
    concepts: int = 6,
    index: ConceptIndex | None = None,
    dataset: Any = None,
    to_image: Callable[[torch.Tensor], torch.Tensor] | None = None,
    references: int = 6,
    graph_widths: Sequence[int] | None = (3, 2),
    layer_graph: LayerGraph | None = None,
    atlas: ConceptAtlas | None = None,
    graphs: Sequence[ConceptGraph | None] | None = None,
    name: str = "model",
    description: str = "",
    progress: bool = True,
    predictions: int = 3,
    classes: int = 5,
    atlas_top: int = 8,
    graph_references: bool = False,
    analyses: Sequence[Analysis] = (),
) -> ModelReport:
    """One model's section of a report: what the model sees in ``inputs``, and what the dataset says about it.

    Parameters
    ----------
    attributor
        The engine (model, composite, concept types); with ``index``, the one the index was built with.
    inputs
        ``(N, ...)`` model inputs: a few images (each gets its own part of the section).
    layers
        The layers whose top concepts are shown; the attribution graph starts at the last one.
    pictures
        ``(N, 1 or 3, H, W)`` the inputs as people see them, in [0, 1]; default: each input min-max scaled.
    class_names
        Names of the model's outputs (default: their numbers).
    concepts
        Top concepts per layer and image.
    index, dataset
        A concept index and the dataset it was built on: RelMax and ActMax references and class statistics for
        every concept shown (layers the index lacks get none, and a note says so).
    to_image
        Maps dataset samples to pictures in [0, 1] for the references (default: min-max scaling).
    references
        Reference samples per concept and mode.
    graph_widths
        Widths of each image's attribution graph (see :func:`~glocal.attribution_graph`), rooted at the image's top
        concept of the last layer; ``None``: no graph.
    layer_graph
        How the layers connect (default: traced from the model), for the graph.
    atlas
        A concept atlas to show: vote bars per layer, with reference thumbnails when ``index`` is given.
    graphs
        Attribution graphs already computed, one per image (``None`` for an image without one; computed with
        ``heatmaps=True`` for the node heatmaps): shown instead of computing them (``graph_widths`` is then unused).
    name, description
        The section's title and the paragraph below it.
    progress
        Show a progress bar.
    predictions, classes, atlas_top
        How many top predicted classes per image, classes per concept's statistics, and atlas concepts per layer.
    graph_references
        Also give the graphs' nodes of the index's layers references (a button in the node's panel); off by
        default, as they about double the size of a section.
    analyses
        Model-wide analyses shown after the atlas, made from results with :mod:`glocal.report.analyses`
        (``pruning_analysis``, ``flipping_analysis``, ``diagnosis_analysis``) and :mod:`glocal.report.parts`
        (``parts_analysis``).

    Returns
    -------
    ModelReport
        Plain data; pictures are PNG bytes at the sizes of :data:`SIZES`. Render it with
        :func:`~glocal.report.write_report` (a file) or :func:`~glocal.report.view.render_section` (a fragment).
    """
    inputs, pictures, layers = _check(inputs, pictures, layers, concepts, references, index, dataset)
    n = inputs.shape[0]
    reference_layers = [layer for layer in layers if index is not None and layer in index.layers]
    notes: list[str] = []
    if index is not None:
        notes += [
            f"the index has no layer {layer!r}: its concepts have no references"
            for layer in layers
            if layer not in reference_layers
        ]
    if graphs is not None and len(graphs) != n:
        raise InputError(f"graphs gives {len(graphs)} attribution graphs for {n} images; give one per image (or None)")
    computed = graphs is None and graph_widths is not None
    steps = len(layers) + (n if computed else 0) + len(reference_layers) + (atlas is not None)
    # references are rendered at most at the inputs' own size: small inputs (28 px digits) are shown scaled up with
    # crisp pixels rather than stored scaled up
    pixels = min(SIZES["reference"], max(inputs.shape[-2:])) if inputs.dim() == 4 else SIZES["reference"]
    explainer = ConceptExplainer(attributor.model, attributor.composite, concepts=attributor.concepts)
    inputs = inputs.to(model_device(attributor.model))
    with progress_bar(steps, f"report {name}", enabled=progress, unit="step") as bar:
        explanations: list[ConceptExplanation] = []
        for layer in layers:
            explanations.append(explainer(inputs, layer, select=concepts))
            bar.update()
        first = explanations[0]
        graph_data: list[GraphData | None] = [None if g is None else report_graph(g) for g in graphs or [None] * n]
        for row in range(n):
            top = explanations[-1].concept_ids[row]
            if not computed or graph_widths is None or not top:
                continue
            graph = attribution_graph(
                attributor,
                inputs[row : row + 1],
                layers[-1],
                top[0],
                target=int(first.targets[row]),
                widths=graph_widths,
                layer_graph=layer_graph,
                heatmaps=True,
                progress=False,
            )
            graph_data[row] = report_graph(graph)
            bar.update()
        cards: dict[str, ConceptCard] = {}
        for layer in reference_layers:
            assert index is not None
            shown = {c for e in explanations if e.layer == layer for row in e.concept_ids for c in row}
            nodes = {
                node.concept
                for graph in graph_data
                if graph is not None and graph_references
                for node in graph.nodes
                if node.layer == layer
            }
            ids = sorted(shown | nodes)
            cards.update(
                _cards(index, dataset, attributor, layer, ids, to_image, references, classes, class_names, pixels)
            )
            bar.update()
        atlas_layers: tuple[AtlasLayer, ...] = ()
        if atlas is not None:
            atlas_layers = _atlas(atlas, index, dataset, attributor, to_image, atlas_top, pixels)
            bar.update()
    probabilities = first.prediction.detach().float().softmax(-1).cpu()
    images = []
    for row in range(n):
        top_p, top_c = probabilities[row].topk(min(predictions, probabilities.shape[-1]))
        target = int(first.targets[row])
        images.append(
            ImageReport(
                number=row,
                picture=picture_png(pictures[row], SIZES["picture"]),
                target=target,
                target_name=_name(target, class_names),
                predictions=tuple(
                    ClassScore(int(c), _name(int(c), class_names), float(p)) for p, c in zip(top_p, top_c, strict=True)
                ),
                heatmap=heatmap_png(first.heatmap[row], SIZES["picture"]),
                layers=tuple(_uses(explanation, row) for explanation in explanations),
                graph=graph_data[row],
            )
        )
    return ModelReport(
        name=name,
        description=description,
        images=tuple(images),
        concepts=cards,
        atlas=atlas_layers,
        atlas_samples=atlas.n_samples if atlas is not None else 0,
        atlas_k=atlas.k if atlas is not None else 0,
        notes=tuple(notes),
        analyses=tuple(analyses),
    )


def _check(
    inputs: Any,
    pictures: torch.Tensor | None,
    layers: Sequence[str],
    concepts: int,
    references: int,
    index: Any,
    dataset: Any,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 2 or inputs.shape[0] == 0:
        what = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise InputError(f"inputs must be a tensor (N, ...) with at least one sample, got {what}")
    if isinstance(layers, str) or not layers:
        raise LayerError(f"layers must be a non-empty sequence of layer names, e.g. ['features.10'], got {layers!r}")
    if concepts < 1 or references < 1:
        raise InputError(f"concepts and references must be positive counts, got {concepts} and {references}")
    if (index is None) != (dataset is None):
        raise InputError(
            "index and dataset come together (the references are samples of the dataset the index was built on); "
            f"got index={'given' if index is not None else None} and dataset={'given' if dataset is not None else None}"
        )
    if pictures is None:
        if inputs.dim() != 4 or inputs.shape[1] not in (1, 3):
            raise InputError(
                f"inputs of shape {tuple(inputs.shape)} are no images (N, 1 or 3, H, W): pass pictures=, the inputs "
                "as people see them (N, 1 or 3, H, W) in [0, 1]"
            )
        pictures = min_max_image(inputs.detach().cpu())
    if pictures.dim() != 4 or pictures.shape[0] != inputs.shape[0] or pictures.shape[1] not in (1, 3):
        raise InputError(
            f"pictures must be (N, 1|3, H, W) with N = {inputs.shape[0]} (one per input); got {tuple(pictures.shape)}"
        )
    return inputs, pictures, list(layers)


def _name(label: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= label < len(class_names):
        return str(class_names[label])
    return str(label)


def _uses(explanation: ConceptExplanation, row: int) -> LayerConcepts:
    ids = explanation.concept_ids[row]
    return LayerConcepts(
        layer=explanation.layer,
        concepts=tuple(
            ConceptUse(
                layer=explanation.layer,
                concept=int(concept),
                share=float(explanation.concept_shares[row, j]),
                relevance=float(explanation.concept_relevance[row, concept]),
                heatmap=heatmap_png(explanation.concept_heatmaps[row, j], SIZES["heatmap"]),
            )
            for j, concept in enumerate(ids)
        ),
    )


def _reference_set(reference: Reference, mode: str, pixels: int) -> ReferenceSet:
    return ReferenceSet(
        mode=mode,
        sample_ids=tuple(int(i) for i in reference.sample_ids),
        scores=tuple(float(s) for s in reference.scores),
        images=tuple(image_png(image, pixels) for image in reference.images),
    )


def _cards(
    index: ConceptIndex,
    dataset: Any,
    attributor: Attributor,
    layer: str,
    ids: list[int],
    to_image: Callable[[torch.Tensor], torch.Tensor] | None,
    n: int,
    classes: int,
    class_names: Sequence[str] | None,
    pixels: int,
) -> dict[str, ConceptCard]:
    if not ids:
        return {}
    found = {}
    for mode in ("relmax_sum", "actmax_sum"):
        found[mode] = concept_references(
            index,
            dataset,
            attributor,
            layer,
            ids,
            mode=mode,
            n=n,
            size=pixels,
            to_image=to_image,
            progress=False,
        )
    has_classes = index.statistics(layer).class_relevance is not None
    cards = {}
    for concept in ids:
        card = ConceptCard(
            layer=layer,
            concept=concept,
            relmax=_reference_set(found["relmax_sum"][concept], "relmax", pixels),
            actmax=_reference_set(found["actmax_sum"][concept], "actmax", pixels),
            classes=tuple(
                ClassScore(label, _name(label, class_names), score)
                for label, score in (index.classes(layer, concept, n=classes) if has_classes else [])
            ),
        )
        cards[card.key] = card
    return cards


def _atlas(
    atlas: ConceptAtlas,
    index: ConceptIndex | None,
    dataset: Any,
    attributor: Attributor,
    to_image: Callable[[torch.Tensor], torch.Tensor] | None,
    top: int,
    pixels: int,
) -> tuple[AtlasLayer, ...]:
    thumbnails = {}
    if index is not None:
        options: dict[str, Any] = {"progress": False}
        if to_image is not None:
            options["to_image"] = to_image
        thumbnails = atlas_thumbnails(atlas, index, dataset, attributor, top=top, n=4, size=min(48, pixels), **options)
    return tuple(
        AtlasLayer(
            layer=layer,
            n_concepts=int(atlas.n_concepts[layer]),
            bars=tuple(
                AtlasBar(
                    concept=int(entry.concept),
                    votes=int(entry.votes),
                    mean_share=float(entry.mean_share),
                    voter_share=float(entry.voter_share),
                    thumbnail=(
                        image_png(thumbnails[(layer, entry.concept)], SIZES["thumbnail"])
                        if (layer, entry.concept) in thumbnails
                        else None
                    ),
                )
                for entry in atlas.entries[layer][:top]
            ),
        )
        for layer in atlas.layers
    )
