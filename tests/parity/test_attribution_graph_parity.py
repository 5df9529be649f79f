"""The compat AttributionGraph and trace_model_graph against zennit-crp's own, on the same models."""

from __future__ import annotations

import copy

import pytest
import torch
from parity_models import fashion_composite, fashion_images, fashion_model

from glocal import Attributor
from glocal.attribution.layers import get_layer_names
from glocal.compat import AttributionGraph, ChannelConcept, CondAttribution, trace_model_graph
from glocal.structure.attribution_graph import attribution_graph

crp_attribution = pytest.importorskip("crp.attribution")
crp_concepts = pytest.importorskip("crp.concepts")
crp_graph = pytest.importorskip("crp.graph")


def _crp_graph(model, sample, composite, layers, **call):
    model = copy.deepcopy(model)  # zennit-crp switches the parameters' requires_grad off and leaves them so
    sample = sample.clone().requires_grad_(True)  # zennit-crp insists
    graph = crp_graph.trace_model_graph(model, sample, layers)
    layer_map = {name: crp_concepts.ChannelConcept() for name in layers}
    attribution = crp_attribution.CondAttribution(model)
    result = crp_attribution.AttributionGraph(attribution, graph, layer_map)(sample, composite, verbose=False, **call)
    return graph, result


def _ours(model, sample, composite, layers, **call):
    graph = trace_model_graph(model, sample, layers)
    layer_map = {name: ChannelConcept() for name in layers}
    result = AttributionGraph(CondAttribution(model), graph, layer_map)(sample, composite, **call)
    return graph, result


def _assert_same(ours, theirs, rtol=1e-5):
    assert ours.nodes == theirs.nodes
    assert list(ours.connections) == list(theirs.connections)
    for key, edges in theirs.connections.items():
        mine = ours.connections[key]
        assert [(layer, c) for layer, c, _ in mine] == [(layer, c) for layer, c, _ in edges]
        expected = torch.tensor([value for _, _, value in edges], dtype=torch.float64)
        got = torch.tensor([value for _, _, value in mine], dtype=torch.float64)
        torch.testing.assert_close(got, expected, rtol=rtol, atol=1e-7)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        ({"concept_id": None, "layer_name": "linear1", "target": None, "width": [3, 2]}, "from output"),
        ({"concept_id": None, "layer_name": "linear1", "target": None, "width": [4], "abs_norm": False}, "raw"),
        ({"concept_id": None, "layer_name": "conv2", "target": None, "width": [5]}, "from activation"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_fashion_graph_equals_zennit_crp(call, name):
    model = fashion_model()
    sample = fashion_images(4)[2:3]
    layers = ["conv1", "conv2", "parallel.0", "linear1", "linear2"]
    with torch.no_grad():
        predicted = int(model(sample).argmax())
    relevance = Attributor(model, fashion_composite())(sample, {"y": [predicted]}, record=[call["layer_name"]])
    call = dict(call)
    layer_relevance = relevance.relevances[call["layer_name"]][0]
    call["concept_id"] = int(
        layer_relevance.flatten(1).sum(1).argmax() if layer_relevance.dim() > 1 else layer_relevance.argmax()
    )
    if name != "from activation":
        call["target"] = predicted
    crp_model_graph, theirs = _crp_graph(model, sample, fashion_composite(), layers, **call)
    our_model_graph, ours = _ours(model, sample, fashion_composite(), layers, **call)
    for layer in layers:
        assert our_model_graph.find_input_layers(layer) == crp_model_graph.find_input_layers(layer), layer
    _assert_same(ours, theirs)
    assert len(ours.nodes) > 1 and any(value != 0 for edges in ours.connections.values() for _, _, value in edges)


def test_vgg16_graph_equals_zennit_crp():
    torchvision = pytest.importorskip("torchvision")
    from zennit.composites import EpsilonPlusFlat

    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None).eval()
    sample = torch.rand(1, 3, 64, 64)
    layers = get_layer_names(model, [torch.nn.Conv2d, torch.nn.Linear])
    call = {"concept_id": 7, "layer_name": "features.28", "target": 3, "width": [4, 2]}
    _, theirs = _crp_graph(model, sample, EpsilonPlusFlat(), layers, **call)
    _, ours = _ours(model, sample, EpsilonPlusFlat(), layers, **call)
    _assert_same(ours, theirs)


def test_native_graph_edges_equal_brute_force_conditional_relevance():
    """Every edge of glocal's own graph is the child's relevance under its whole path, computed one by one."""
    model = fashion_model()
    sample = fashion_images(4)[1:2]
    attributor = Attributor(model, fashion_composite())
    plain = attributor(sample, {"y": [3]}, record=["linear1"], heatmap=False)
    root = int(plain.relevances["linear1"][0].argmax())
    graph = attribution_graph(attributor, sample, "linear1", root, target=3, widths=[3, 2])
    assert graph.root.relevance == pytest.approx(float(plain.relevances["linear1"][0, root]), rel=1e-6)
    # conv2 and parallel.0 feed linear1: 3 children over both; conv1 feeds conv2 (2 children each); parallel.0 none
    children = graph.children(graph.root.id)
    assert len(children) == 3
    assert len(graph.nodes) == 1 + 3 + 2 * sum(child.layer == "conv2" for child, _ in children)
    per_layer = attribution_graph(attributor, sample, "linear1", root, target=3, widths=[3, 2], per_layer=True)
    assert len(per_layer.nodes) == 1 + 6 + 6  # zennit-crp's counting: 3 per input layer, 2 per input layer
    for edge in graph.edges:
        child = graph.node(edge.child)
        parent = graph.node(edge.parent)
        condition = {"y": [3], **{layer: [c] for layer, c in parent.path}}
        result = attributor(sample, condition, record=[child.layer], heatmap=False)
        expected = float(result.relevances[child.layer][0, child.concept].sum())
        assert edge.relevance == pytest.approx(expected, rel=1e-5, abs=1e-7)
        assert child.relevance == edge.relevance
        assert edge.share == pytest.approx(expected / parent.relevance, rel=1e-5, abs=1e-7)
        # the kept children are the most relevant over all the layers feeding the parent
        lower = {"linear1": ["conv2", "parallel.0"], "conv2": ["conv1"]}[parent.layer]
        condition = {"y": [3], **{layer: [c] for layer, c in parent.path}}
        relevances = attributor(sample, condition, record=lower, heatmap=False).relevances
        pool = sorted(
            (-float(value), layer, c)
            for layer in lower
            for c, value in enumerate(relevances[layer][0].flatten(1).sum(1).tolist())
        )
        kept = {(c.layer, c.concept) for c, _ in graph.children(parent.id)}
        assert kept == {(layer, c) for _, layer, c in pool[: len(kept)]}
