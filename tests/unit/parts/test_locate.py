"""locate_parts and locate_groups on new images of the hand-built two-place model (two_places.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_receptive import assert_unchanged, snapshot
from two_places import two_place_attributor, two_place_images, two_place_model

from glocal.errors import ConceptError, InputError, LayerError
from glocal.parts import PartGraph, PartNode, locate_groups, locate_parts, part_graph

REL = 1e-5  # the epsilon of fc's rule takes a relative 1e-6 of the relevance

# New places, two of them in corners (the blur's replicated borders must not move a lone pixel's peak)
PLACES_A = [(0, 0), (15, 15), (6, 8), (11, 3)]
PLACES_B = [(8, 8), (0, 15), (14, 1), (3, 12)]
VALUES_A = [1.0, 2.0, 2.0, 1.0]
VALUES_B = [1.0, 0.5, 0.2, 1.0]
SCORES_A = [1.8, 3.6, 3.6, 1.8]  # 1.8 a
SCORES_B = [2.2, 1.1, 0.44, 2.2]  # 2.2 b
# Shares of B in the layer's relevance, 2.2 b / (1.8 a + 2.2 b): 0.55, 1.1 / 4.7 = 0.234, 0.44 / 4.04 = 0.109, 0.55.
# With the graph's threshold 0.5, conv2 (2 channels) needs 0.25: B is absent in images 1 and 2; conv1 (4 channels)
# needs 0.125: absent in image 2 only. A's shares (>= 0.45) pass both.
B_AT_CONV2 = [True, False, False, True]
B_AT_CONV1 = [True, True, False, True]


def _node(node_id: str, channels: tuple[int, ...]) -> PartNode:
    # what the graph learnt in its own images does not matter to locating: one image's worth of anything
    return PartNode(node_id, node_id.split(":")[0], channels, scores=(1.0,), positions=((0.0, 0.0),), present=(True,))


# The graph test_part_build finds on its images, written down by hand
GRAPH = PartGraph(
    layers=("conv2", "conv1"),
    nodes=(_node("conv2:0", (1,)), _node("conv2:1", (0,)), _node("conv1:0", (2, 3)), _node("conv1:1", (0, 1))),
    edges=(),
    targets=(0,),
    image_size=(16, 16),
    settings={"threshold": 0.5, "smoothing": 0.02},
)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return two_place_images(PLACES_A, PLACES_B, VALUES_A, VALUES_B)


def _floats(places: list[tuple[int, int]]) -> list[list[float]]:
    return [[float(row), float(col)] for row, col in places]


def test_parts_are_found_at_the_new_places(images):
    model = two_place_model()
    before = snapshot(model)
    found = locate_parts(two_place_attributor(model), GRAPH, images, heatmaps=True, progress=False)
    assert_unchanged(before, model)
    assert found.node_ids == ("conv2:0", "conv2:1", "conv1:0", "conv1:1") and found.targets == (0, 0, 0, 0)
    assert found.positions.shape == (4, 4, 2)
    for k, places in enumerate([PLACES_B, PLACES_A, PLACES_B, PLACES_A]):
        assert found.positions[:, k].tolist() == _floats(places)  # also where B is absent: its peak is still at B
    expected = torch.tensor([SCORES_B, SCORES_A, SCORES_B, SCORES_A]).T
    assert torch.allclose(found.scores, expected, rtol=REL)
    assert found.present.T.tolist() == [B_AT_CONV2, [True] * 4, B_AT_CONV1, [True] * 4]
    # heatmaps: each node's relevance, all of it on its own pixel (conservation)
    assert found.heatmaps is not None and found.heatmaps.shape == (4, 4, 16, 16)
    assert torch.allclose(found.heatmaps.sum((-2, -1)), expected, rtol=REL)
    rows, cols = zip(*PLACES_B, strict=True)
    assert torch.allclose(found.heatmaps[torch.arange(4), 0, list(rows), list(cols)], expected[:, 0], rtol=REL)
    assert found.to_dict() == {
        "node_ids": list(found.node_ids),
        "positions": found.positions.tolist(),
        "scores": found.scores.tolist(),
        "present": found.present.tolist(),
        "targets": [0, 0, 0, 0],
    }
    assert locate_parts(two_place_attributor(), GRAPH, images, progress=False).heatmaps is None


def test_a_graph_locates_its_parts_in_its_own_images_where_it_found_them(images):
    attributor = two_place_attributor()
    graph = part_graph(attributor, images, ["conv2", "conv1"], threshold=0.5, heatmaps=False, progress=False)
    found = locate_parts(attributor, graph, images, progress=False)
    assert found.node_ids == tuple(node.id for node in graph.nodes)
    for k, node in enumerate(graph.nodes):
        assert [tuple(p) for p in found.positions[:, k].tolist()] == list(node.positions)
        assert found.scores[:, k].tolist() == pytest.approx(node.scores, rel=1e-6)
        assert tuple(found.present[:, k].tolist()) == node.present


def test_groups_under_a_parent_see_only_its_relevance(images):
    attributor = two_place_attributor()
    # conv1 through conv2's A channel only: channels 0 and 1 get a and 0.8 a, B's pair nothing. Default threshold 1
    # over 4 channels: present at >= 0.25 of the 1.8 a arriving, which a / 1.8 a = 0.56 and 0.8 / 1.8 = 0.44 pass.
    found = locate_groups(attributor, images, "conv1", [[0], [1], [2, 3]], paths={"conv2": [0]})
    assert found.node_ids == ("conv1:0", "conv1:1", "conv1:2")
    assert torch.allclose(found.scores, torch.tensor([[a, 0.8 * a, 0.0] for a in VALUES_A]), rtol=REL)
    assert found.present.tolist() == [[True, True, False]] * 4
    assert found.positions[:, 0].tolist() == found.positions[:, 1].tolist() == _floats(PLACES_A)
    # B's pair has an all-zero heatmap: its peak is the first pixel in row-major order
    assert found.positions[:, 2].tolist() == [[0.0, 0.0]] * 4
    # without a parent all relevance arrives: B's pair carries 2.2 b; names label the groups
    free = locate_groups(attributor, images, "conv1", [[2, 3]], names=["wheel"], targets=0, smoothing=0.0)
    assert free.node_ids == ("wheel",) and free.targets == (0, 0, 0, 0)
    assert torch.allclose(free.scores[:, 0], torch.tensor(SCORES_B), rtol=REL)
    assert free.positions[:, 0].tolist() == _floats(PLACES_B) and free.heatmaps is None


def test_bad_graphs_groups_and_images(images):
    attributor = two_place_attributor()
    with pytest.raises(InputError, match=r"built on 16 x 16 images, got \(8, 16\); resize"):
        locate_parts(attributor, GRAPH, images[:, :, :8], progress=False)
    empty = replace(GRAPH, nodes=())
    with pytest.raises(InputError, match="no nodes to locate"):
        locate_parts(attributor, empty, images, progress=False)
    elsewhere = replace(GRAPH, layers=("conv9",), nodes=(replace(GRAPH.nodes[0], layer="conv9"),))
    with pytest.raises(LayerError, match="no layer named 'conv9'"):
        locate_parts(attributor, elsewhere, images, progress=False)
    with pytest.raises(ConceptError, match=r"concept id 4 is out of range: this layer has 4 channels"):
        locate_groups(attributor, images, "conv1", [[0], [4]])  # the engine's own check of concept ids
    with pytest.raises(InputError, match=r"'fc' gives \(1,\) maps; parts need \(C, h, w\) maps"):
        locate_groups(attributor, images, "fc", [[0]])
    for groups in ([], [[0], []]):
        with pytest.raises(InputError, match="groups must be non-empty lists of channels"):
            locate_groups(attributor, images, "conv1", groups)
    with pytest.raises(InputError, match=r"data must be images \(N, C, H, W\)"):
        locate_groups(attributor, images[0], "conv1", [[0]])
