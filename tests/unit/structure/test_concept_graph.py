"""Attribution graph results: JSON round trips, networkx and DOT exports, and the saved picture."""

from __future__ import annotations

import json

import pytest
import torch
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonPlus

from glocal import Attributor
from glocal.errors import InputError
from glocal.structure.attribution_graph import attribution_graph
from glocal.structure.concept_graph import ConceptGraph


@pytest.fixture
def skip_graph(skip_net, digits):
    attributor = Attributor(skip_net, EpsilonPlus(canonizers=[SequentialMergeBatchNorm()]))
    sample = digits[:1]
    relevance = attributor(sample, {"y": [2]}, record=["linear1"], heatmap=False).relevances["linear1"][0]
    root = int(relevance.argmax())
    return attributor, sample, attribution_graph(attributor, sample, "linear1", root, target=2, widths=[2, 2])


def test_json_round_trip_with_and_without_heatmaps(skip_net, digits, tmp_path):
    attributor = Attributor(skip_net, EpsilonPlus())
    sample = digits[2:3]
    graph = attribution_graph(attributor, sample, "linear1", 1, widths=[3, 2], heatmaps=True)
    loaded = ConceptGraph.from_json(graph.to_json(tmp_path / "graph.json", heatmaps=True))
    assert loaded == graph  # nodes, edges, target, widths (heatmaps and prediction compare below)
    torch.testing.assert_close(loaded.prediction, graph.prediction, rtol=0, atol=0)
    for ours, theirs in zip(loaded.nodes, graph.nodes, strict=True):
        assert ours.path == theirs.path and ours.depth == theirs.depth
        torch.testing.assert_close(ours.heatmap, theirs.heatmap, rtol=0, atol=0)
    plain = ConceptGraph.from_dict(json.loads(graph.to_json(indent=None)))  # heatmaps left out by default
    assert plain == graph and all(node.heatmap is None for node in plain.nodes)
    with pytest.raises(InputError, match="to_dict's form"):
        ConceptGraph.from_dict({"nodes": []})


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
