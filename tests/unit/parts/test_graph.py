"""PartGraph's questions and its JSON form, on a graph written down by hand (no model)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from glocal.errors import InputError
from glocal.parts import PartEdge, PartGraph, PartNode

NAN = math.nan


def _node(node_id: str, channels: tuple[int, ...], scores, positions, present, heatmap=None) -> PartNode:
    return PartNode(
        node_id,
        node_id.split(":")[0],
        channels,
        tuple(scores),
        tuple(positions),
        tuple(bool(p) for p in present),
        heatmap,
    )


# Three layers a > b > c, four images of 30 x 40 pixels (diagonal 50).
A0 = _node("a:0", (3,), (4.0, 2.0, 3.0, 1.0), ((10.0, 10.0), (12.0, 10.0), (10.0, 14.0), (0.0, 0.0)), (1, 1, 1, 0))
A1 = _node("a:1", (1, 5), (1.0, 1.0, 0.0, 2.0), ((20.0, 30.0), (20.0, 30.0), (0.0, 0.0), (22.0, 30.0)), (1, 0, 0, 1))
B0 = _node("b:0", (0,), (2.0,) * 4, ((11.0, 10.0), (12.0, 13.0), (14.0, 14.0), (5.0, 5.0)), (1, 1, 1, 1))
B1 = _node("b:1", (2, 4), (3.0, 0.0, 0.0, 0.0), ((10.0, 10.0),) * 4, (1, 0, 0, 0))
B2_POSITIONS = ((8.0, 6.0), (15.0, 17.0), (44.0, 54.0), (5.0, 5.0))
B2 = _node("b:2", (7,), (0.5,) * 4, B2_POSITIONS, (0, 0, 0, 0))  # never present
C0 = _node("c:0", (1,), (1.0,) * 4, ((1.0, 2.0),) * 4, (1, 1, 1, 1), heatmap=torch.arange(12.0).view(3, 4) / 7)
EDGES = (
    PartEdge("a:0", "b:0", 3.0, 0.3),
    PartEdge("a:0", "b:1", 6.0, 0.6),
    PartEdge("a:1", "b:0", 2.0, 0.5),
    PartEdge("a:1", "b:2", 1.0, 0.25),
    PartEdge("b:0", "c:0", 1.0, 0.125),
    PartEdge("b:1", "c:0", 2.5, 0.8),
)
GRAPH = PartGraph(
    layers=("a", "b", "c"),
    nodes=(A0, A1, B0, B1, B2, C0),
    edges=EDGES,
    targets=(7, 7, 2, 7),
    image_size=(30, 40),
    settings={"threshold": 1.0, "radius": 0.1, "images": 4},
)


def test_node_summaries():
    assert A0.support == 0.75 and A1.support == 0.5 and B2.support == 0.0
    assert A0.mean_score == 2.5 and A1.mean_score == 1.0
    assert A0.example == 0 and A1.example == 3 and B0.example == 0  # ties: the first image
    empty = _node("x:0", (0,), (), (), ())
    assert empty.support == 0.0 and empty.mean_score == 0.0
    assert GRAPH.diagonal == 50.0


def test_lookups():
    assert GRAPH.node("b:1") is B1
    with pytest.raises(KeyError, match=r"no node 'b:9'; its nodes are \['a:0', 'a:1'"):
        GRAPH.node("b:9")
    assert GRAPH.layer_nodes("b") == [B0, B1, B2] and GRAPH.layer_nodes("c") == [C0]
    with pytest.raises(InputError, match=r"no layer 'd'; its layers are \['a', 'b', 'c'\]"):
        GRAPH.layer_nodes("d")


def test_children_parents_and_chains_follow_the_strongest_edges():
    assert [(node.id, edge.relevance) for node, edge in GRAPH.children("a:0")] == [("b:1", 6.0), ("b:0", 3.0)]
    assert [(node.id, edge.share) for node, edge in GRAPH.parents("b:0")] == [("a:0", 0.3), ("a:1", 0.5)]
    assert [(node.id, edge.relevance) for node, edge in GRAPH.parents("c:0")] == [("b:1", 2.5), ("b:0", 1.0)]
    assert GRAPH.children("c:0") == [] and GRAPH.parents("a:1") == []
    # a:0 -> b:1 (6 > 3) -> c:0; a:1 -> b:0 (2 > 1) -> c:0; b:2 has no children
    assert [node.id for node in GRAPH.chain("a:0")] == ["a:0", "b:1", "c:0"]
    assert [node.id for node in GRAPH.chain("a:1")] == ["a:1", "b:0", "c:0"]
    assert GRAPH.chain("b:2") == [B2]


def test_nearest_takes_the_median_over_images_where_the_node_is_present():
    # layer a, points = a:0's positions but 3 + 4 = 5 pixels off in image 0; image 3 has no point (NaN).
    # a:0 (present in 0, 1, 2): distances 5, 0, 0 -> median 0. a:1 (present in 0 and 3, 3 skipped): only image 0,
    # |(20, 30) - (13, 14)| = |(7, 16)| = 17.46 -> 0.349 of the diagonal.
    points = [(13.0, 14.0), (12.0, 10.0), (10.0, 14.0), (NAN, NAN)]
    node, distance = GRAPH.nearest("a", points)
    assert node is A0 and distance == 0.0
    # near a:1: a:0 counts images 0 and 1, |(10, 10) - (20, 30)| = 22.36 and |(12, 10) - (20, 30)| = 21.54 -> 0.43;
    # a:1 counts images 0 and 3, 0 and |(22, 30) - (25, 34)| = 5 -> torch's median of two is the lower one: 0
    node, distance = GRAPH.nearest("a", torch.tensor([[20.0, 30.0], [20.0, 30.0], [NAN, NAN], [25.0, 34.0]]))
    assert node is A1 and distance == 0.0
    # layer b: b:2 sits exactly on these points but is never present, so it is never chosen. b:0 is |(3, 4)| = 5
    # pixels off in images 0 and 1, |(30, 40)| = 50 in image 2, on it in image 3: 0, 5, 5, 50 -> lower median 5 ->
    # 0.1. b:1 counts image 0 only: |(10, 10) - (8, 6)| = |(2, 4)| = 4.47 -> 0.089, the nearest.
    points = list(B2_POSITIONS)
    node, distance = GRAPH.nearest("b", points)
    assert node is B1 and distance == pytest.approx(math.hypot(2, 4) / 50)
    # without image 0's point b:1 has no image left: b:0 at 5, 50, 0 -> median 5 -> 0.1
    node, distance = GRAPH.nearest("b", [(NAN, NAN), *points[1:]])
    assert node is B0 and distance == pytest.approx(0.1)


def test_nearest_errors():
    with pytest.raises(InputError, match=r"one \(row, column\) per image, \(4, 2\), got \(3, 2\)"):
        GRAPH.nearest("a", torch.zeros(3, 2))
    with pytest.raises(InputError, match="no node of layer 'a' is present in an image where the point is given"):
        GRAPH.nearest("a", torch.full((4, 2), NAN))
    only_absent = replace(GRAPH, nodes=(A0, A1, B2, C0))
    with pytest.raises(InputError, match="no node of layer 'b' is present"):
        only_absent.nearest("b", list(B2_POSITIONS))
    with pytest.raises(InputError, match="no layer 'd'"):
        GRAPH.nearest("d", torch.zeros(4, 2))


def test_units_are_the_layer_nodes_positions_and_scores():
    units = GRAPH.units("a")
    assert len(units) == 2
    for (positions, scores), node in zip(units, (A0, A1), strict=True):
        assert positions.shape == (4, 2) and scores.shape == (4,)
        assert positions.dtype == scores.dtype == torch.float64
        assert positions.tolist() == [list(p) for p in node.positions] and scores.tolist() == list(node.scores)


def test_without_heatmaps_drops_only_the_heatmaps():
    light = GRAPH.without_heatmaps()
    assert all(node.heatmap is None for node in light.nodes)
    assert light == GRAPH and GRAPH.node("c:0").heatmap is not None  # heatmaps do not take part in ==


def test_dict_and_json_round_trips(tmp_path: Path):
    data = GRAPH.to_dict()
    assert data["kind"] == "part_graph" and data["image_size"] == [30, 40] and data["targets"] == [7, 7, 2, 7]
    assert data["nodes"][0] == {
        "id": "a:0",
        "layer": "a",
        "channels": [3],
        "scores": [4.0, 2.0, 3.0, 1.0],
        "positions": [[10.0, 10.0], [12.0, 10.0], [10.0, 14.0], [0.0, 0.0]],
        "present": [True, True, True, False],
        "parent": None,
    }
    assert data["edges"][1] == {"parent": "a:0", "child": "b:1", "relevance": 6.0, "share": 0.6}
    assert "heatmap" not in data["nodes"][5] and "heatmap" in GRAPH.to_dict(heatmaps=True)["nodes"][5]
    assert json.loads(json.dumps(data)) == data
    assert PartGraph.from_dict(data) == GRAPH
    text = GRAPH.to_json(indent=None)
    assert "\n" not in text and PartGraph.from_json(text) == GRAPH
    path = tmp_path / "graph.json"
    assert GRAPH.to_json(path, heatmaps=True) == path.read_text(encoding="utf-8")
    for source in (path, str(path)):
        back = PartGraph.from_json(source)
        assert back == GRAPH
        assert (back.nodes, back.edges, back.layers, back.targets, back.image_size, back.settings) == (
            GRAPH.nodes,
            GRAPH.edges,
            GRAPH.layers,
            GRAPH.targets,
            GRAPH.image_size,
            GRAPH.settings,
        )
        heatmap = back.node("c:0").heatmap
        assert heatmap is not None and heatmap.dtype == torch.float32
        assert torch.equal(heatmap, GRAPH.node("c:0").heatmap)
        assert all(back.node(n.id).heatmap is None for n in GRAPH.nodes if n.id != "c:0")
    assert PartGraph.from_json(GRAPH.to_json()).node("c:0").heatmap is None  # saved without heatmaps


def test_a_different_node_or_edge_breaks_equality():
    assert replace(GRAPH, edges=EDGES[:-1]) != GRAPH
    assert replace(GRAPH, nodes=(replace(A0, scores=(4.0, 2.0, 3.0, 1.5)), *GRAPH.nodes[1:])) != GRAPH


def test_from_json_rejects_what_is_not_a_part_graph(tmp_path: Path):
    with pytest.raises(InputError, match=r"expected a part graph \(kind 'part_graph'\), got kind 'attribution_graph'"):
        PartGraph.from_json(json.dumps({**GRAPH.to_dict(), "kind": "attribution_graph"}))
    with pytest.raises(InputError, match="got kind None"):
        PartGraph.from_dict({"layers": []})
    with pytest.raises(InputError, match="not valid JSON"):
        PartGraph.from_json('{"kind": "part_graph",')
    with pytest.raises(InputError, match="no JSON file at"):
        PartGraph.from_json(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "expected a part graph .* got kind 'list'"),
        ({"kind": "concept_graph"}, "expected a part graph .* got kind 'concept_graph'"),
        ({"kind": "part_graph", "layers": ["a"]}, r"the part graph is malformed \(KeyError: 'nodes'\)"),
    ],
)
def test_reading_something_else_says_what_was_expected(data, message):
    with pytest.raises(InputError, match=message):
        PartGraph.from_dict(data)
