"""zennit-crp's README (attribution part) and its tutorial ``tutorials/attributions.ipynb``, cell by cell, run with
``glocal.compat`` and with zennit-crp side by side.

Offline stand-ins: torchvision's ``vgg16_bn`` with random weights (the tutorial loads ImageNet weights), its batch
norms' statistics taken from four real photos (so that activations keep their scale through the random layers) and
its first classifier layer reading a 1 x 1 instead of a 7 x 7 pooled map (49 times fewer weights: the layer names
stay, the test stays fast); a real photo (``skimage``'s cat, instead of the tutorial's lizard) at 32 x 32 pixels;
the tutorial's 512 concepts of ``generate`` become 12. Everything runs in float64: in float32 conditional heatmaps
of this random network differ between glocal and zennit-crp by up to 3e-3 of their largest value (rounding, amplified
where positive and negative contributions cancel); in float64 they agree to 1e-13. The code of each cell is
otherwise the tutorial's, with ``crp.`` replaced by ``glocal.compat.`` (and the composite's canonizers passed by
keyword, as zennit >= 0.4.7 needs). The one documented difference met on the way (the relevance recorded at a
conditioned layer, which zennit-crp counts twice with ``exclude_parallel=True``) is asserted as such.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonPlusFlat

from glocal.compat.attribution import AttributionGraph, CondAttribution
from glocal.compat.concepts import ChannelConcept
from glocal.compat.graph import trace_model_graph
from glocal.compat.helper import abs_norm, get_layer_names
from real_models import photos

crp_attribution = pytest.importorskip("crp.attribution")
crp_concepts = pytest.importorskip("crp.concepts")
crp_helper = pytest.importorskip("crp.helper")
crp_graph = pytest.importorskip("crp.graph")
torchvision = pytest.importorskip("torchvision")

TOLERANCE = 1e-9


pytestmark = pytest.mark.usefixtures("one_thread")


class Both:
    """The tutorial's objects, once from glocal.compat and once from zennit-crp (on its own copy of the model)."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        model = torchvision.models.vgg16_bn(weights=None)
        model.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        model.classifier[0] = torch.nn.Linear(512, 4096)
        images = photos(("chelsea", "coffee", "rocket", "astronaut"))
        images = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear")
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # the plain average over the calibration batch
        with torch.no_grad():
            model.train()(images)
        self.model = model.eval().double()
        self.their_model = copy.deepcopy(self.model)
        self.sample = images[:1].double()
        self.their_sample = self.sample.clone().requires_grad_(True)  # the tutorial sets requires_grad itself
        self.ours = CondAttribution(self.model, no_param_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.theirs = crp_attribution.CondAttribution(self.their_model, no_param_grad=True)
        self.cc, self.their_cc = ChannelConcept(), crp_concepts.ChannelConcept()
        self.layer_names = get_layer_names(self.model, [torch.nn.Conv2d, torch.nn.Linear])

    @staticmethod
    def composite() -> EpsilonPlusFlat:
        return EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])

    def call(self, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        ours = self.ours(self.sample, *args, self.composite(), **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.their_sample.grad = None
            theirs = self.theirs(self.their_sample, *args, self.composite(), **kwargs)
        return ours, theirs


@pytest.fixture(scope="module")
def both() -> Both:
    return Both()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    actual, expected = actual.detach().float(), expected.detach().float()
    scale = max(float(expected.abs().max()), 1e-12)
    error = float((actual - expected).abs().max()) / scale
    assert error <= TOLERANCE, f"{what}: relative error {error:.2e}"
    assert scale > 1e-8, f"{what}: all zero, the comparison would prove nothing"


def test_readme_conditional_attributions(both: Both) -> None:
    assert both.layer_names == crp_helper.get_layer_names(both.model, [torch.nn.Conv2d, torch.nn.Linear])
    conditions = [{"features.27": [50], "y": [1]}]
    ours, theirs = both.call(conditions, record_layer=both.layer_names)
    assert_close(ours.heatmap, theirs.heatmap, "heatmap")
    assert_close(ours.prediction, theirs.prediction, "prediction")
    assert set(ours.activations) == set(theirs.activations) == set(both.layer_names)
    for name in both.layer_names:
        assert_close(ours.activations[name], theirs.activations[name], f"activation of {name}")
        if name != "features.27":  # zennit-crp counts the conditioned layer's relevance twice (see migration.md)
            assert_close(ours.relevances[name], theirs.relevances[name], f"relevance of {name}")
    assert_close(ours.relevances["features.27"], theirs.relevances["features.27"] / 2, "relevance of features.27")
    rel_c = both.cc.attribute(ours.relevances["features.40"])
    their_rel_c = both.their_cc.attribute(theirs.relevances["features.40"])
    assert_close(rel_c, their_rel_c, "concept relevance")
    assert torch.equal(
        torch.argsort(rel_c, descending=True)[0, :10], torch.argsort(their_rel_c, descending=True)[0, :10]
    )


def test_tutorial_section_2_heatmaps(both: Both) -> None:
    # mask_map as cc.mask and as a dict; attr[0] is attr.heatmap
    ours, theirs = both.call([{"y": 46}], mask_map=both.cc.mask)
    assert torch.equal(ours[0], ours.heatmap)
    assert_close(ours.heatmap, theirs.heatmap, "heatmap of class 46")
    mask_map = {name: both.cc.mask for name in both.layer_names}
    ours_dict = both.ours(both.sample, [{"y": 46}], both.composite(), mask_map=mask_map)
    assert_close(ours_dict.heatmap, ours.heatmap, "heatmap with a dict mask_map")
    # channel 35 of features.40; broadcasting two conditions
    for conditions in (
        [{"y": [46], "features.40": [35]}],
        [{"features.40": [35], "y": [46]}, {"features.20": [10], "y": [2]}],
    ):
        (heatmap, _, _, _), (their_heatmap, _, _, _) = both.call(conditions)
        assert heatmap.shape == (len(conditions), 32, 32)
        assert_close(heatmap, their_heatmap, f"heatmaps of {conditions}")


def test_tutorial_section_2_2_relevance_initialisation(both: Both) -> None:
    ours, theirs = both.call([{"y": [46], "features.40": [35]}], init_rel=-1)
    assert_close(ours.heatmap, theirs.heatmap, "init_rel=-1")

    def select_max(pred: torch.Tensor) -> torch.Tensor:
        index = torch.softmax(pred, dim=-1).argmax(-1).item()
        mask = torch.zeros_like(pred)
        mask[0, index] = pred[0, index]
        return mask

    ours, theirs = both.call([{"features.40": [35]}], init_rel=select_max)
    assert_close(ours.heatmap, theirs.heatmap, "init_rel=select_max")
    ours, theirs = both.call([{"features.40": [35]}], start_layer="features.40")
    assert_close(ours.heatmap, theirs.heatmap, "start_layer")


def test_tutorial_section_2_3_and_2_4_latent_relevances(both: Both) -> None:
    ours, theirs = both.call([{"y": [46]}], record_layer=both.layer_names)
    assert ours.activations["features.40"].shape == ours.relevances["features.40"].shape == (1, 512, 2, 2)
    rel_c = both.cc.attribute(ours.relevances["features.40"], abs_norm=True)
    their_rel_c = both.their_cc.attribute(theirs.relevances["features.40"], abs_norm=True)
    assert_close(rel_c, their_rel_c, "concept relevance")
    _, concept_ids = torch.topk(rel_c[0], 6)
    assert torch.equal(concept_ids, torch.topk(their_rel_c[0], 6).indices)
    conditions = [{"features.40": [id], "y": [46]} for id in concept_ids]  # tensor ids, as in the tutorial
    (heatmap, _, _, _), (their_heatmap, _, _, _) = both.call(conditions)
    assert_close(heatmap, their_heatmap, "heatmaps of the six concepts")
    # several layers in one condition, the posterior layer first (zennit-crp requires it; glocal takes any order)
    conditions = [{"features.40": [35], "features.37": [24], "y": [46]}]
    ours, theirs = both.call(conditions, exclude_parallel=True)
    assert_close(ours.heatmap, theirs.heatmap, "two conditioned layers")
    reversed_order = both.ours(both.sample, [{"features.37": [24], "features.40": [35], "y": [46]}], both.composite())
    assert_close(reversed_order.heatmap, ours.heatmap, "layers named in the other order")


def test_tutorial_section_3_generate_and_local_analysis(both: Both) -> None:
    conditions = [{"features.40": [id], "y": [46]} for id in torch.arange(0, 12)]
    ours = list(
        both.ours.generate(
            both.sample, conditions, both.composite(), record_layer=both.layer_names, batch_size=5, verbose=False
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        their_sample = both.sample.clone().requires_grad_(True)
        theirs = list(
            both.theirs.generate(
                their_sample, conditions, both.composite(), record_layer=both.layer_names, batch_size=5, verbose=False
            )
        )
    assert [len(attr.heatmap) for attr in ours] == [len(attr.heatmap) for attr in theirs] == [5, 5, 2]
    for mine, their in zip(ours, theirs, strict=True):
        assert_close(mine.heatmap, their.heatmap, "generated heatmaps")
        assert_close(mine.relevances["features.37"], their.relevances["features.37"], "generated relevance")
    # local analysis: relevance of each concept inside a region of the image
    mask = torch.zeros(32, 32, dtype=torch.float64)
    mask[:, 24:] = 1
    rel_c = torch.cat([torch.sum(attr.heatmap * mask[None, :, :], dim=(1, 2)) for attr in ours])
    their_rel_c = torch.cat([torch.sum(attr.heatmap * mask[None, :, :], dim=(1, 2)) for attr in theirs])
    indices = torch.topk(rel_c, 5).indices
    assert torch.equal(indices, torch.topk(their_rel_c, 5).indices)
    assert_close(abs_norm(rel_c)[indices], crp_helper.abs_norm(their_rel_c)[indices], "normed regional relevance")


def test_tutorial_section_4_decomposition_and_graph(both: Both) -> None:
    ours, theirs = both.call([{"y": [46], "features.40": [469]}], record_layer=["features.37"])
    rel_c = both.cc.attribute(ours.relevances["features.37"], abs_norm=True)
    their_rel_c = both.their_cc.attribute(theirs.relevances["features.37"], abs_norm=True)
    assert torch.equal(torch.argsort(rel_c, descending=True)[0, :5], torch.argsort(their_rel_c, descending=True)[0, :5])

    graph = trace_model_graph(both.model, both.sample, both.layer_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        their_graph = crp_graph.trace_model_graph(both.their_model, both.their_sample, both.layer_names)
    assert "features.37 -> features.40" in str(graph)
    assert graph.find_input_layers("features.40") == their_graph.find_input_layers("features.40") == ["features.37"]
    layer_map = {name: both.cc for name in both.layer_names}
    attgraph = AttributionGraph(both.ours, graph, layer_map)
    nodes, connections = attgraph(both.sample, both.composite(), 71, "features.40", 46, width=[5, 2], abs_norm=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        their_map = {name: both.their_cc for name in both.layer_names}
        their_attgraph = crp_attribution.AttributionGraph(both.theirs, their_graph, their_map)
        their_nodes, their_connections = their_attgraph(
            both.their_sample, both.composite(), 71, "features.40", 46, width=[5, 2], abs_norm=True, verbose=False
        )
    assert nodes == their_nodes and len(nodes) == 1 + 5 + 10
    assert list(connections) == list(their_connections)
    for key, edges in their_connections.items():
        assert [edge[:2] for edge in connections[key]] == [edge[:2] for edge in edges]
        assert [edge[2] for edge in connections[key]] == pytest.approx([edge[2] for edge in edges], rel=1e-3, abs=1e-6)
