"""build_report's data is what glocal's own functions compute, and it is plain data."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from zennit.composites import EpsilonPlusFlat

import glocal
from glocal.errors import InputError, LayerError
from glocal.report import build_report


def test_shares_and_ids_match_the_concept_explainer(mnist_report) -> None:
    LAYERS = mnist_report.layers
    explainer = glocal.ConceptExplainer(mnist_report.attributor.model, EpsilonPlusFlat())
    for position, layer in enumerate(LAYERS):
        explanation = explainer(mnist_report.inputs, layer, select=4)
        for row, image in enumerate(mnist_report.report.images):
            shown = image.layers[position]
            assert shown.layer == layer
            assert [use.concept for use in shown.concepts] == explanation.concept_ids[row]
            torch.testing.assert_close(
                torch.tensor([use.share for use in shown.concepts]),
                explanation.concept_shares[row],
                rtol=1e-4,
                atol=1e-6,
            )
            assert shown.concepts[0].share > shown.concepts[-1].share > 0


def test_prediction_and_targets(mnist_report) -> None:
    first, second = mnist_report.report.images
    assert (first.target, first.target_name) == (0, "digit 0")
    assert second.target == 9 and second.target_name == mnist_report.names[9]
    assert first.predictions[0].label == 0 and first.predictions[0].score > 0.9
    assert sum(p.score for p in first.predictions) <= 1.0 + 1e-6
    assert len(first.predictions) == 3


def test_references_match_concept_references(mnist_report) -> None:
    built = mnist_report
    LAYERS = built.layers
    card = built.report.concepts[f"{LAYERS[0]}:{built.report.images[0].layers[0].concepts[0].concept}"]
    for mode, refs in (("relmax_sum", card.relmax), ("actmax_sum", card.actmax)):
        expected = glocal.concept_references(
            built.index,
            built.dataset,
            built.attributor,
            card.layer,
            card.concept,
            mode=mode,
            n=4,
            size=28,
            progress=False,
        )
        assert refs is not None
        assert refs.sample_ids == tuple(expected.sample_ids) and len(refs.sample_ids) == 4
        assert refs.scores == pytest.approx(expected.scores)
        pixels = [Image.open(io.BytesIO(png)).convert("RGB") for png in refs.images]
        assert [p.size for p in pixels] == [(28, 28)] * 4  # the digits' own size, at most SIZES['reference']
        for mine, theirs in zip(pixels, expected.images, strict=True):
            assert np.array_equal(np.asarray(mine), np.asarray(theirs.convert("RGB")))
    assert [c.label for c in card.classes] == [label for label, _ in built.index.classes(card.layer, card.concept)]


def test_every_shown_concept_has_a_card_and_the_graph_starts_at_the_top_concept(mnist_report) -> None:
    report = mnist_report.report
    LAYERS = list(mnist_report.layers)
    shown = {use.key for image in report.images for layer in image.layers for use in layer.concepts}
    nodes = {f"{n.layer}:{n.concept}" for image in report.images for n in image.graph.nodes if n.layer in LAYERS}
    assert shown | nodes == set(report.concepts) and len(nodes - shown) > 0
    for image in report.images:
        graph = image.graph
        assert graph is not None
        assert graph.root == f"{LAYERS[-1]}:{image.layers[-1].concepts[0].concept}"
        assert len(graph.nodes) == 1 + 2 + 4 and len(graph.edges) == 6
        assert all(node.heatmap for node in graph.nodes)
    atlas = report.atlas
    assert [layer.layer for layer in atlas] == LAYERS and report.atlas_samples == 200
    assert [bar.concept for bar in atlas[0].bars] == mnist_report.atlas.top(LAYERS[0], 8)
    assert all(bar.thumbnail for layer in atlas for bar in layer.bars)


def test_to_dict_is_json(mnist_report) -> None:
    data = json.loads(json.dumps(mnist_report.report.to_dict()))
    assert data["name"] == "MNIST CNN"
    png = base64.b64decode(data["images"][0]["picture"])
    assert png.startswith(b"\x89PNG") and Image.open(io.BytesIO(png)).size == (28, 28)
    assert set(data["concepts"]) == set(mnist_report.report.concepts)


def test_bad_arguments_say_what_to_do() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(32, 3))
    attributor = glocal.Attributor(net, EpsilonPlusFlat())
    with pytest.raises(LayerError, match="non-empty sequence"):
        build_report(attributor, torch.rand(1, 1, 6, 6), layers="0", progress=False)
    with pytest.raises(InputError, match="index and dataset come together"):
        build_report(attributor, torch.rand(1, 1, 6, 6), layers=["0"], dataset=[1], progress=False)
    with pytest.raises(InputError, match="pass pictures="):
        build_report(glocal.Attributor(torch.nn.Linear(4, 2)), torch.rand(2, 4), layers=[""], progress=False)


def test_without_index_a_report_has_no_cards() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 3))
    before = {name: value.clone() for name, value in net.state_dict().items()}
    report = build_report(
        glocal.Attributor(net, EpsilonPlusFlat()),
        torch.rand(2, 1, 6, 6),
        layers=["0"],
        concepts=2,
        graph_widths=None,
        progress=False,
    )
    assert report.concepts == {} and report.atlas == ()
    assert [len(image.layers[0].concepts) for image in report.images] == [2, 2]
    assert all(image.graph is None for image in report.images)
    # the user's model is left as it was: same weights, no hooks left behind
    assert all(torch.equal(before[name], value) for name, value in net.state_dict().items())
    assert all(not module._forward_hooks and not module._backward_hooks for module in net.modules())
