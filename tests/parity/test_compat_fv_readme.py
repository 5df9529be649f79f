"""zennit-crp's README (feature visualization) and the start of its tutorial, run with zennit-crp and glocal.compat.

Offline stand-in for VGG16-BN on ImageNet: torchvision's ``vgg16_bn(weights=None)`` (seeded; its layer names, with
a small head of ten classes instead of the 25088 x 4096 classifier) on four real photos (skimage, 32 x 32), every
Conv2d and Linear layer in the layer map, normalisation as ``preprocess_fn`` as in the tutorial. Only the imports
differ between the two runs (and ``canonizers=`` by keyword, which zennit >= 0.4.7 needs).
"""

from __future__ import annotations

import contextlib
import io
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonPlusFlat

import glocal.compat.attribution as compat_attribution
import glocal.compat.concepts as compat_concepts
import glocal.compat.helper as compat_helper
import glocal.compat.image as compat_image
import glocal.compat.visualization as compat_visualization

matplotlib.use("Agg")
torchvision = pytest.importorskip("torchvision")
skimage_data = pytest.importorskip("skimage.data")
crp = types.SimpleNamespace(
    attribution=pytest.importorskip("crp.attribution"),
    concepts=pytest.importorskip("crp.concepts"),
    helper=pytest.importorskip("crp.helper"),
    visualization=pytest.importorskip("crp.visualization"),
    image=pytest.importorskip("crp.image"),
)
compat = types.SimpleNamespace(
    attribution=compat_attribution,
    concepts=compat_concepts,
    helper=compat_helper,
    visualization=compat_visualization,
    image=compat_image,
)
PHOTOS = ("chelsea", "coffee", "astronaut", "stereo_motorcycle")
MEAN, STD = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]


class Photos(torch.utils.data.Dataset):
    """Four photos in [0, 1] (not normalised, for plotting) with made-up labels."""

    def __init__(self) -> None:
        pictures = []
        for name in PHOTOS:
            photo = getattr(skimage_data, name)()
            photo = np.asarray(photo[0] if isinstance(photo, tuple) else photo)  # stereo pairs: the left picture
            photo = torch.from_numpy(np.ascontiguousarray(photo[..., :3])).permute(2, 0, 1).float()[None] / 255
            side = min(photo.shape[2:])
            square = photo[..., :side, :side]
            pictures.append(torch.nn.functional.interpolate(square, size=(32, 32), mode="area")[0])
        self.images = torch.stack(pictures)
        self.labels = [3, 7, 3, 1]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], self.labels[index]


def preprocessing(batch: torch.Tensor) -> torch.Tensor:
    return (batch - MEAN.to(batch)) / STD.to(batch)


def readme(package: Any, model: torch.nn.Module, dataset: Photos, path: Path) -> dict[str, Any]:
    """zennit-crp's README, attribution part and feature visualization part, with ``package`` for ``crp``."""
    composite = EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])
    attribution = package.attribution.CondAttribution(model)
    cc = package.concepts.ChannelConcept()
    layer_names = package.helper.get_layer_names(model, [torch.nn.Conv2d, torch.nn.Linear])
    data = preprocessing(dataset[0][0][None]).requires_grad_()
    attr = attribution(data, [{"features.27": [50], "y": [1]}], composite, record_layer=layer_names)
    rel_c = cc.attribute(attr.relevances["features.40"])
    concept_ids = torch.argsort(rel_c, descending=True)[0]  # the README forgets the batch dimension: [0]
    layer_map = {name: cc for name in layer_names}
    fv = package.visualization.FeatureVisualization(
        attribution, dataset, layer_map, preprocess_fn=preprocessing, path=str(path)
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        fv.run(composite, 0, len(dataset))
    ref_c = fv.get_max_reference(concept_ids[:5], "features.40", "relevance", composite=composite)
    figure = package.image.plot_grid(ref_c)
    import matplotlib.pyplot as plt

    figure = plt.gcf() if figure is None else figure  # zennit-crp's plot_grid returns nothing
    # the tutorial's first cell: references without heatmaps
    samples = fv.get_max_reference(concept_ids[:5], "features.40", "relevance", (0, 4))
    return {"fv": fv, "concepts": concept_ids[:5].tolist(), "ref_c": ref_c, "figure": figure, "samples": samples}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torchvision.models.vgg16_bn(weights=None, num_classes=10)
    # a small head (the 25088 x 4096 classifier costs more than everything else and tests nothing more)
    model.avgpool = torch.nn.AdaptiveAvgPool2d(1)
    model.classifier = torch.nn.Sequential(
        torch.nn.Linear(512, 64), torch.nn.ReLU(), torch.nn.Dropout(), torch.nn.Linear(64, 10)
    )
    model.eval()
    dataset = Photos()
    root = tmp_path_factory.mktemp("readme")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("crp.maximization", "crp.statistics"):  # its gc.collect() per checkpoint: most of its time
            patch.setattr(f"{name}.gc", types.SimpleNamespace(collect=lambda: 0))
        original = crp.image.zimage.imgify  # zennit's array palettes, unreadable on recent Pillow (13): stored as bytes

        def imgify(*args: Any, **kwargs: Any) -> Image.Image:
            picture = original(*args, **kwargs)
            if picture.mode == "P" and isinstance(picture.palette.palette, np.ndarray):
                picture.putpalette(np.asarray(picture.palette.palette, dtype=np.uint8).tobytes(), "RGB")
            return picture

        patch.setattr(crp.image.zimage, "imgify", imgify)
        theirs = readme(crp, model, dataset, root / "crp")
    ours = readme(compat, model, dataset, root / "glocal")
    yield {"model": model, "dataset": dataset, "crp": theirs, "glocal": ours}
    torch.set_num_threads(threads)


def unique_ranks(scores: np.ndarray) -> np.ndarray:
    return (np.abs(scores[:, None] - scores[None, :]) <= 1e-6 * np.abs(scores).max()).sum(1) == 1


def test_readme_references(runs: dict[str, Any]) -> None:
    """The same concepts, samples and grid; the heatmaps differ (RelMax heatmaps start from relevance here)."""
    theirs, ours = runs["crp"], runs["glocal"]
    assert ours["concepts"] == theirs["concepts"]
    _, crp_scores, _ = crp.helper.load_maximization(theirs["fv"].RelMax.PATH, "features.40")
    assert [int(k) for k in theirs["ref_c"]] == list(ours["ref_c"]) == ours["concepts"]  # zennit-crp: tensor keys
    crp_ref_c = {int(k): v for k, v in theirs["ref_c"].items()}
    crp_samples_of = {int(k): v for k, v in theirs["samples"].items()}
    compared = 0
    for concept in ours["concepts"]:
        (images, heatmaps), (crp_images, crp_heatmaps) = ours["ref_c"][concept], crp_ref_c[concept]
        assert len(images) == len(heatmaps) == 4
        assert [p.size for p in heatmaps] == [p.size for p in crp_heatmaps] == [(32, 32)] * 4
        for rank in np.flatnonzero(unique_ranks(np.asarray(crp_scores[:, concept]))):
            np.testing.assert_array_equal(np.asarray(images[rank]), np.asarray(crp_images[rank]))
            compared += 1
        samples, crp_samples = ours["samples"][concept], crp_samples_of[concept]
        assert samples.shape == crp_samples.shape == (4, 3, 32, 32)
        assert torch.equal(samples[0], crp_samples[0])
    assert compared >= 12
    figure, expected = ours["figure"], theirs["figure"]
    assert len(figure.axes) == len(expected.axes) == 5 * 2 * 4
    # rows are labelled with the keys: Python ints here, zennit-crp kept the elements of the tensor it was given
    labels = [str(c) for c in ours["concepts"]]
    assert [a.get_ylabel() for a in figure.axes if a.get_ylabel()] == labels
    assert [a.get_ylabel() for a in expected.axes if a.get_ylabel()] == [f"tensor({c})" for c in labels]


def test_readme_heatmaps_start_from_relevance(runs: dict[str, Any]) -> None:
    """Documented difference: zennit-crp starts RelMax heatmaps at the activation; glocal at the sample's label."""
    ours, dataset = runs["glocal"], runs["dataset"]
    oracle = crp.attribution.CondAttribution(runs["model"])
    composite = EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])
    concepts = ours["concepts"][:2]
    references = ours["fv"].get_max_reference(concepts, "features.40", "relevance", (0, 4), composite, plot_fn=None)
    for concept in concepts:
        samples, heatmaps = references[concept]
        ids = [i for i in ours["fv"].index.top("features.40", ours["fv"].relmax_mode).ids[concept].tolist() if i >= 0]
        assert len(ids) == 4
        assert all(torch.equal(samples[rank], dataset[i][0]) for rank, i in enumerate(ids))
        data = preprocessing(torch.stack([dataset[i][0] for i in ids])).requires_grad_()
        conditions = [{"features.40": [concept], "y": [dataset[i][1]]} for i in ids]
        expected = oracle(data, conditions, composite).heatmap.detach()
        torch.testing.assert_close(heatmaps, expected, rtol=1e-4, atol=1e-6)
        activation_start = oracle(data, [{"features.40": [concept]}], composite, start_layer="features.40").heatmap
        assert not torch.allclose(heatmaps, activation_start.detach(), rtol=1e-2, atol=1e-4)
