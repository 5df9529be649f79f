"""glocal's own attribution graphs: edges equal brute-force conditional relevances; exports and pictures."""

from __future__ import annotations

import json

import pytest
import torch
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonPlus, EpsilonPlusFlat

from glocal import Attributor
from glocal.attribution_graph import attribution_graph, parse_path
from glocal.errors import ConceptError, InputError, LayerError


def _most_relevant(attributor, sample, layer, target):
    relevance = attributor(sample, {"y": [target]}, record=[layer], heatmap=False).relevances[layer][0]
    return int((relevance.flatten(1).sum(1) if relevance.dim() > 1 else relevance).argmax())


@pytest.fixture
def skip_graph(skip_net, digits):
    attributor = Attributor(skip_net, EpsilonPlus(canonizers=[SequentialMergeBatchNorm()]))
    sample = digits[:1]
    root = _most_relevant(attributor, sample, "linear1", 2)
    return attributor, sample, attribution_graph(attributor, sample, "linear1", root, target=2, widths=[2, 2])


def test_edges_equal_brute_force_through_a_skip_connection(skip_graph):
    attributor, sample, graph = skip_graph
    # linear1 is fed by conv2 and the parallel branch: 2 children each; conv2's children come from conv1
    assert [node.layer for node in graph.nodes] == ["linear1", "conv2", "conv2", "parallel.0", "parallel.0"] + [
        "conv1"
    ] * 4
    for edge in graph.edges:
        child, parent = graph.node(edge.child), graph.node(edge.parent)
        condition = {"y": [2], **{layer: [c] for layer, c in parent.path}}
        relevance = attributor(sample, condition, record=[child.layer], heatmap=False).relevances[child.layer][0]
        per_concept = relevance.flatten(1).sum(1).double()
        assert edge.relevance == pytest.approx(float(per_concept[child.concept]), rel=1e-5, abs=1e-8)
        share = edge.relevance / parent.relevance if parent.relevance else 0.0
        assert edge.share == pytest.approx(share, rel=1e-9)
        total = float(per_concept.abs().sum())
        assert edge.normalized == pytest.approx(edge.relevance / total if total else 0.0, rel=1e-5)
        siblings = [c.concept for c, _ in graph.children(parent.id) if c.layer == child.layer]
        ranked = [c for c in per_concept.argsort(descending=True, stable=True).tolist() if per_concept[c] != 0]
        assert siblings == ranked[: len(siblings)] and len(siblings) == min(2, len(ranked))
    # the root's relevance is its share of the target's relevance at linear1
    plain = attributor(sample, {"y": [2]}, record=["linear1"], heatmap=False).relevances["linear1"][0]
    assert graph.root.relevance == pytest.approx(float(plain[graph.root.concept]), rel=1e-6)
    assert graph.target == 2


def test_node_heatmaps_are_the_path_conditional_heatmaps(skip_net, digits):
    attributor = Attributor(skip_net, EpsilonPlus())
    sample = digits[1:2]
    root = _most_relevant(attributor, sample, "linear1", 0)
    graph = attribution_graph(attributor, sample, "linear1", root, target=0, widths=[2, 1], heatmaps=True)
    for node in graph.nodes:
        expected = attributor(sample, {"y": [0], **{layer: [c] for layer, c in node.path}}).heatmap[0]
        assert node.heatmap is not None
        torch.testing.assert_close(node.heatmap, expected)


def test_both_path_settings_agree_on_a_sequential_model(conv_net, images):
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    sample = images[:1]
    sole = attribution_graph(attributor, sample, "5", 3, widths=[3, 2])
    parallel = attribution_graph(attributor, sample, "5", 3, widths=[3, 2], sole_path=False)
    assert sole.target == int(conv_net(sample).argmax())  # default: the prediction
    assert [n.id for n in sole.nodes] == [n.id for n in parallel.nodes]
    for a, b in zip(sole.edges, parallel.edges, strict=True):
        assert a.relevance == pytest.approx(b.relevance, rel=1e-5, abs=1e-8)


def test_exports(skip_graph, tmp_path):
    _, sample, graph = skip_graph
    data = json.loads(graph.to_json(tmp_path / "graph.json"))
    assert (tmp_path / "graph.json").exists()
    assert [n["id"] for n in data["nodes"]] == [n.id for n in graph.nodes]
    assert data["edges"][0]["share"] == graph.edges[0].share
    networkx = pytest.importorskip("networkx")
    digraph = graph.to_networkx()
    assert isinstance(digraph, networkx.DiGraph)
    assert digraph.number_of_nodes() == len(graph.nodes) and digraph.number_of_edges() == len(graph.edges)
    edge = graph.edges[0]
    assert digraph.edges[edge.child, edge.parent]["relevance"] == edge.relevance
    dot = graph.to_dot(images={graph.root.id: "root.png"})
    assert dot.startswith("digraph") and dot.count("->") == len(graph.edges) and 'image="root.png"' in dot
    pytest.importorskip("matplotlib")
    path = graph.save(tmp_path / "graph.png", inputs=sample)
    assert path.stat().st_size > 1000


def test_bad_input_and_model_unchanged(skip_net, digits):
    attributor = Attributor(skip_net, EpsilonPlus())
    before = [(len(m._forward_hooks), len(m._forward_pre_hooks), m.training) for m in skip_net.modules()]
    with pytest.raises(InputError, match="one sample"):
        attribution_graph(attributor, digits, "linear1", 0)
    with pytest.raises(LayerError, match="not in the layer graph"):
        attribution_graph(attributor, digits[:1], "relu", 0)
    with pytest.raises(ConceptError, match="out of range"):
        attribution_graph(attributor, digits[:1], "linear1", 8)
    with pytest.raises(ValueError, match="widths"):
        attribution_graph(attributor, digits[:1], "linear1", 0, widths=[2, 0])
    with pytest.raises(InputError, match="target 9 is out of range"):
        attribution_graph(attributor, digits[:1], "linear1", 0, target=9)
    assert before == [(len(m._forward_hooks), len(m._forward_pre_hooks), m.training) for m in skip_net.modules()]
    assert all(p.grad is None for p in skip_net.parameters())


def test_parse_path():
    assert parse_path("features.40:117 -> features.37:5/features.34:392") == [
        ("features.40", 117),
        ("features.37", 5),
        ("features.34", 392),
    ]
    with pytest.raises(InputError, match="layer:concept"):
        parse_path("features.40")
