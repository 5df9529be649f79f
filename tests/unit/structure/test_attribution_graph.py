"""glocal's own attribution graphs: edges equal brute-force conditional relevances, widths, budgets and bad input."""

from __future__ import annotations

import pytest
import torch
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonPlus, EpsilonPlusFlat

from glocal import Attributor, LayerGraph
from glocal.errors import ConceptError, InputError, LayerError, TargetError
from glocal.structure.attribution_graph import attribution_graph, node_bound
from glocal.structure.concept_graph import ConceptGraph


def _most_relevant(attributor, sample, layer, target):
    relevance = attributor(sample, {"y": [target]}, record=[layer], heatmap=False).relevances[layer][0]
    return int((relevance.flatten(1).sum(1) if relevance.dim() > 1 else relevance).argmax())


@pytest.fixture
def skip_graph(skip_net, digits):
    attributor = Attributor(skip_net, EpsilonPlus(canonizers=[SequentialMergeBatchNorm()]))
    sample = digits[:1]
    root = _most_relevant(attributor, sample, "linear1", 2)
    return attributor, sample, attribution_graph(attributor, sample, "linear1", root, target=2, widths=[2, 2])


def _layer_scores(attributor, sample, target, path, layer):
    condition = {"y": [target], **{name: [c] for name, c in path}}
    relevance = attributor(sample, condition, record=[layer], heatmap=False).relevances[layer][0]
    return (relevance.flatten(1).sum(1) if relevance.dim() > 1 else relevance).double()


def test_edges_equal_brute_force_through_a_skip_connection(skip_graph):
    attributor, sample, graph = skip_graph
    for edge in graph.edges:
        child, parent = graph.node(edge.child), graph.node(edge.parent)
        per_concept = _layer_scores(attributor, sample, 2, parent.path, child.layer)
        assert edge.relevance == pytest.approx(float(per_concept[child.concept]), rel=1e-5, abs=1e-8)
        share = edge.relevance / parent.relevance if parent.relevance else 0.0
        assert edge.share == pytest.approx(share, rel=1e-9)
        total = float(per_concept.abs().sum())
        assert edge.normalized == pytest.approx(edge.relevance / total if total else 0.0, rel=1e-5)
    # the root's relevance is its share of the target's relevance at linear1
    plain = attributor(sample, {"y": [2]}, record=["linear1"], heatmap=False).relevances["linear1"][0]
    assert graph.root.relevance == pytest.approx(float(plain[graph.root.concept]), rel=1e-6)
    assert graph.target == 2


def test_widths_bound_the_children_over_all_input_layers(skip_graph):
    """linear1 is fed by conv2 and the parallel branch: its 2 children are the 2 most relevant over both layers."""
    attributor, sample, graph = skip_graph
    for parent in graph.nodes:
        lower = {"linear1": ["conv2", "parallel.0"], "conv2": ["conv1"]}.get(parent.layer, [])
        pool = [
            (float(value), layer, c)
            for layer in lower
            for c, value in enumerate(_layer_scores(attributor, sample, 2, parent.path, layer).tolist())
            if value != 0
        ]
        pool.sort(key=lambda item: (-item[0], lower.index(item[1]), item[2]))
        expected = [(layer, c) for _, layer, c in pool[: graph.widths[parent.depth]]] if parent.depth < 2 else []
        assert [(child.layer, child.concept) for child, _ in graph.children(parent.id)] == expected
    assert len(graph.nodes) <= 1 + 2 + 2 * 2


def test_per_layer_keeps_widths_children_per_input_layer(skip_net, digits):
    attributor = Attributor(skip_net, EpsilonPlus(canonizers=[SequentialMergeBatchNorm()]))
    sample = digits[:1]
    root = _most_relevant(attributor, sample, "linear1", 2)
    graph = attribution_graph(attributor, sample, "linear1", root, target=2, widths=[2, 2], per_layer=True)
    # 2 children from each of conv2 and parallel.0; conv2's children come from conv1, parallel.0 reads the input
    assert [node.layer for node in graph.nodes] == ["linear1", "conv2", "conv2", "parallel.0", "parallel.0"] + [
        "conv1"
    ] * 4
    assert graph.per_layer and ConceptGraph.from_json(graph.to_json()).per_layer


def test_node_budget_is_checked_before_any_work(skip_net, digits):
    attributor = Attributor(skip_net, EpsilonPlus())
    # linear1 <- (conv2 <- conv1, parallel.0): at most 1 + 5 + 5 * 4 nodes with widths [5, 4]
    layers = LayerGraph(
        ("parallel.0", "conv1", "conv2", "linear1"),
        {"parallel.0": (), "conv1": (), "conv2": ("conv1",), "linear1": ("conv2", "parallel.0")},
    )
    assert node_bound(layers, "linear1", [5, 4]) == 26
    assert node_bound(layers, "linear1", [5, 4], per_layer=True) == 1 + 5 * (1 + 4) + 5
    with pytest.raises(InputError, match=r"up to 26 nodes .* max_nodes=20.*max_nodes=26 or None"):
        attribution_graph(attributor, digits[:1], "linear1", 0, widths=[5, 4], max_nodes=20, layer_graph=layers)
    graph = attribution_graph(attributor, digits[:1], "linear1", 0, widths=[5, 4], max_nodes=26, layer_graph=layers)
    assert len(graph.nodes) <= 26


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
    with pytest.raises(TargetError, match=r"targets \[9\] are out of range"):
        attribution_graph(attributor, digits[:1], "linear1", 0, target=9)
    assert before == [(len(m._forward_hooks), len(m._forward_pre_hooks), m.training) for m in skip_net.modules()]
    assert all(p.grad is None for p in skip_net.parameters())


def test_block_graph_of_the_real_mobilenet_v2():
    """Naming a block gives the graph over the blocks' outputs: a chain, so widths bound every level exactly."""
    from glocal.demo import composite
    from real_models import mobilenet_v2, photos

    model = mobilenet_v2()
    sample = torch.nn.functional.interpolate(photos(("chelsea",)), size=112, mode="bilinear", antialias=True)  # quick
    attributor = Attributor(model, composite())
    graph = attribution_graph(attributor, sample, "features.16", 63, target=285, widths=[3, 2], progress=False)
    assert [node.layer for node in graph.nodes] == ["features.16", *["features.15"] * 3, *["features.14"] * 6]
    relevance = _layer_scores(attributor, sample, 285, graph.root.path, "features.15")
    expected = relevance.argsort(descending=True, stable=True)[:3].tolist()
    assert [child.concept for child, _ in graph.children(graph.root.id)] == expected
    for child, edge in graph.children(graph.root.id):
        assert edge.relevance == pytest.approx(float(relevance[child.concept]), rel=1e-4, abs=1e-7)


def test_progress_bar_shows_levels_only_when_asked(skip_net, digits, capsys, monkeypatch):
    attributor = Attributor(skip_net, EpsilonPlus())
    monkeypatch.setattr("glocal.progress.DELAY", 0.0)  # show the bar at once, however quick the graph
    attribution_graph(attributor, digits[:1], "linear1", 1, widths=[2, 2], progress=False)
    assert "attribution graph" not in capsys.readouterr().err
    attribution_graph(attributor, digits[:1], "linear1", 1, widths=[2, 2])
    assert "attribution graph" in capsys.readouterr().err
