"""part_graph against a hand-built model whose channels fire at known places (see two_places.py for the model and
the relevance it passes, worked out by hand)."""

from __future__ import annotations

import pytest
import torch
from test_receptive import assert_unchanged, snapshot
from two_places import two_place_attributor, two_place_images, two_place_model

from glocal.errors import InputError, LayerError
from glocal.parts import PartEdge, PartGraph, part_graph, receptive_field

# Six images; A and B at least 8.4 pixels apart (0.37 of the 22.6-pixel diagonal, far beyond the radius 0.1).
PLACES_A = [(2, 3), (10, 12), (4, 13), (13, 2), (7, 7), (1, 9)]
PLACES_B = [(9, 10), (3, 4), (12, 5), (5, 9), (1, 1), (8, 2)]
VALUES_A = [1.0, 2.0, 1.5, 1.0, 2.0, 1.0]
VALUES_B = [1.0, 1.0, 2.0, 1.5, 1.0, 1.0]
# The A path carries 1.8 a, the B path 2.2 b (two_places.py):
SCORES_A = [1.8 * a for a in VALUES_A]  # 1.8, 3.6, 2.7, 1.8, 3.6, 1.8: mean 15.3 / 6 = 2.55
SCORES_B = [2.2 * b for b in VALUES_B]  # 2.2, 2.2, 4.4, 3.3, 2.2, 2.2: mean 16.5 / 6 = 2.75, so B ranks first
REL = 1e-5  # the epsilon of fc's rule takes a relative 1e-6 of the relevance


def _floats(places: list[tuple[int, int]]) -> tuple[tuple[float, float], ...]:
    return tuple((float(row), float(col)) for row, col in places)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return two_place_images(PLACES_A, PLACES_B, VALUES_A, VALUES_B)


@pytest.fixture(scope="module")
def graph(images: torch.Tensor) -> PartGraph:
    # threshold 0.5: present at >= 0.25 of conv2's relevance and >= 0.125 of conv1's. The smallest shares: conv2's A
    # in image 3, 1.8 / (1.8 + 3.3) = 0.35; conv1's channel 1 in image 3, 0.8 / 5.1 = 0.16. So every channel is
    # present in every image.
    return part_graph(two_place_attributor(), images, ["conv2", "conv1"], threshold=0.5, progress=False)


def test_the_one_by_one_chain_maps_cells_to_their_own_pixels(images):
    for layer in ("conv1", "conv2"):
        field = receptive_field(two_place_model(), layer, images[:1])
        assert (field.scale, field.offset, field.size) == ((1.0, 1.0), (0.0, 0.0), (1, 1))


def test_channels_at_different_places_stay_apart_and_co_located_ones_merge(graph):
    assert graph.layers == ("conv2", "conv1") and graph.targets == (0,) * 6 and graph.image_size == (16, 16)
    assert [(node.id, node.layer, node.channels) for node in graph.nodes] == [
        ("conv2:0", "conv2", (1,)),  # B (ranked first by its mean score 2.75 against A's 2.55)
        ("conv2:1", "conv2", (0,)),  # A
        ("conv1:0", "conv1", (2, 3)),  # B: 1.2 b and b, at the same place in every image
        ("conv1:1", "conv1", (0, 1)),  # A: a and 0.8 a
    ]
    b_top, a_top, b_low, a_low = graph.nodes
    for node in (b_top, b_low):
        assert node.positions == _floats(PLACES_B)
        assert node.scores == pytest.approx(SCORES_B, rel=REL)
    for node in (a_top, a_low):
        assert node.positions == _floats(PLACES_A)
        assert node.scores == pytest.approx(SCORES_A, rel=REL)
    assert all(node.present == (True,) * 6 for node in graph.nodes)
    assert graph.settings == {
        "threshold": 0.5,
        "min_support": 0.25,
        "radius": 0.1,
        "max_channels": 32,
        "max_nodes": 12,
        "smoothing": 0.02,
        "images": 6,
    }


def test_edges_follow_the_paths_and_carry_all_of_the_parent(graph):
    # conv2's B channel passes all of its relevance (2.2 b) to conv1's channels 2 and 3 and none to A's: an edge of
    # relevance sum(2.2 b) = 16.5 and share 1; no cross edges (a zero flow is no edge)
    assert len(graph.edges) == 2
    (b_edge, a_edge) = graph.edges
    assert (b_edge.parent, b_edge.child, a_edge.parent, a_edge.child) == ("conv2:0", "conv1:0", "conv2:1", "conv1:1")
    assert b_edge.relevance == pytest.approx(16.5, rel=REL) and b_edge.share == pytest.approx(1.0, rel=REL)
    assert a_edge.relevance == pytest.approx(15.3, rel=REL) and a_edge.share == pytest.approx(1.0, rel=REL)


def test_kept_heatmaps_are_the_node_relevance_on_its_best_image(graph):
    # B's best image is 2 (4.4 at (12, 5)); A's best is image 1 (3.6 at (10, 12)), the first of its two 3.6s
    b_top, a_top, b_low, a_low = graph.nodes
    assert (b_top.example, a_top.example, b_low.example, a_low.example) == (2, 1, 2, 1)
    for node, (row, col), value in ((b_top, (12, 5), 4.4), (a_top, (10, 12), 3.6), (a_low, (10, 12), 3.6)):
        assert node.heatmap is not None and node.heatmap.shape == (16, 16)
        assert float(node.heatmap[row, col]) == pytest.approx(value, rel=REL)
        assert float(node.heatmap.abs().sum()) == pytest.approx(value, rel=REL)  # nothing anywhere else


def test_chain_and_nearest_on_the_built_graph(graph):
    assert [node.id for node in graph.chain("conv2:1")] == ["conv2:1", "conv1:1"]
    assert [node.id for node in graph.chain("conv2:0")] == ["conv2:0", "conv1:0"]
    node, distance = graph.nearest("conv2", torch.tensor(PLACES_A, dtype=torch.float64))
    assert node.id == "conv2:1" and distance == 0.0
    node, distance = graph.nearest("conv1", [(row + 3.0, col + 4.0) for row, col in PLACES_B])
    assert node.id == "conv1:0" and distance == pytest.approx(5.0 / graph.diagonal)


def test_presence_under_the_default_threshold_and_min_support(images):
    # threshold 1: present at >= 0.5 of conv2's relevance, i.e. A where 1.8 a >= 2.2 b: only images 1 and 4
    # (3.6 against 2.2); B in the other four. A's support 1/3 passes min_support 0.25 but not 0.5.
    attributor = two_place_attributor()
    graph = part_graph(attributor, images, ["conv2"], heatmaps=False, progress=False)
    assert [(node.channels, node.present) for node in graph.nodes] == [
        ((1,), (True, False, True, True, False, True)),
        ((0,), (False, True, False, False, True, False)),
    ]
    assert graph.nodes[0].support == pytest.approx(2 / 3) and graph.nodes[1].heatmap is None
    strict = part_graph(attributor, images, ["conv2"], min_support=0.5, heatmaps=False, progress=False)
    assert [node.channels for node in strict.nodes] == [(1,)]


def test_lower_layers_see_only_the_relevance_of_the_nodes_kept_above(images):
    attributor = two_place_attributor()
    # max_nodes 1 keeps conv2's B node only: conv1's A channels then receive nothing, so only B's pair is a node
    graph = part_graph(attributor, images, ["conv2", "conv1"], threshold=0.5, max_nodes=1, progress=False)
    assert [(node.id, node.channels) for node in graph.nodes] == [("conv2:0", (1,)), ("conv1:0", (2, 3))]
    assert graph.nodes[1].scores == pytest.approx(SCORES_B, rel=REL)
    # max_channels 1 keeps the single most relevant candidate: conv2's channel 1 (mean 2.75), then conv1's channel
    # 2 (1.2 b, mean 1.5), which takes 1.2 / 2.2 = 6 / 11 of its parent's relevance
    graph = part_graph(attributor, images, ["conv2", "conv1"], threshold=0.5, max_channels=1, progress=False)
    assert [(node.id, node.channels) for node in graph.nodes] == [("conv2:0", (1,)), ("conv1:0", (2,))]
    assert graph.nodes[1].scores == pytest.approx([1.2 * b for b in VALUES_B], rel=REL)
    assert graph.edges == (PartEdge("conv2:0", "conv1:0", pytest.approx(9.0, rel=REL), pytest.approx(6 / 11, rel=REL)),)


@pytest.mark.parametrize("together", [2, 3])
def test_channels_seen_together_in_fewer_than_min_common_images_stay_apart(together):
    # B lies on A's pixel in `together` images and is dark (b = 0) in the others, so wherever both are present they
    # coincide; but 2 images are fewer than MIN_COMMON = 3, so then the pair has no distance and does not merge.
    # B's support is together / 6 >= 0.25 either way; its share there is 2.2 / 4 = 0.55.
    values_b = [1.0] * together + [0.0] * (6 - together)
    images = two_place_images(PLACES_A, PLACES_A, [1.0] * 6, values_b)
    graph = part_graph(two_place_attributor(), images, ["conv2", "conv1"], threshold=0.5, progress=False)
    groups = [(node.id, node.channels) for node in graph.nodes]
    if together == 3:
        assert groups == [("conv2:0", (0, 1)), ("conv1:0", (0, 1, 2, 3))]
        assert graph.nodes[0].scores == pytest.approx([4.0] * 3 + [1.8] * 3, rel=REL)
        return
    # conv1's channels 2 and 3 also share only 2 images: three nodes, ranked by mean 1.8 > 1.2 / 3 > 1 / 3
    assert groups == [("conv2:0", (0,)), ("conv2:1", (1,)), ("conv1:0", (0, 1)), ("conv1:1", (2,)), ("conv1:2", (3,))]
    assert graph.nodes[1].present == (True, True, False, False, False, False)
    # conv2's B channel (2.2 per image, 4.4 in all) splits 1.2 : 1 between channels 2 and 3
    expected = [
        ("conv2:0", "conv1:0", 10.8, 1.0),
        ("conv2:1", "conv1:1", 2.4, 1.2 / 2.2),
        ("conv2:1", "conv1:2", 2.0, 1 / 2.2),
    ]
    assert [(e.parent, e.child) for e in graph.edges] == [(p, c) for p, c, _, _ in expected]
    assert [e.relevance for e in graph.edges] == pytest.approx([r for _, _, r, _ in expected], rel=REL)
    assert [e.share for e in graph.edges] == pytest.approx([s for _, _, _, s in expected], rel=REL)


def test_layers_must_come_top_first(images):
    # conv1 below conv2: conditioning on it first sent relevance back up through the wrong parts (conv2's scores
    # doubled, shares 1.08) without an error; now the forward order decides
    with pytest.raises(InputError, match=r"nearest the output first.*pass layers=\['conv2', 'conv1'\]"):
        part_graph(two_place_attributor(), images, ["conv1", "conv2"], progress=False)
    with pytest.raises(InputError, match=r"pass layers=\['fc', 'conv2'\]"):
        part_graph(two_place_attributor(), images, ["conv2", "fc"], progress=False)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threshold": 0.0}, "threshold must be > 0"),
        ({"threshold": -1.0}, "threshold must be > 0"),
        ({"min_support": 1.5}, r"min_support must be a fraction of the images in \[0, 1\], got 1.5"),
        ({"min_support": -0.1}, "min_support must be a fraction"),
        ({"radius": -0.1}, "radius must be >= 0"),
        ({"max_nodes": 0}, "max_nodes must be a positive int"),
        ({"max_channels": True}, "max_channels must be a positive int"),
        ({"layers": "conv2"}, "layers must be a list of layer names, top .* first, got 'conv2'"),
        ({"layers": []}, "layers must be a list of layer names"),
        ({"layers": ["conv2", "conv2"]}, r"layers must be distinct, got \['conv2', 'conv2'\]"),
        ({"layers": ["fc"]}, r"'fc' gives \(1,\) maps; parts need \(C, h, w\) maps: choose convolutional"),
        ({"layers": ["flatten"]}, r"'flatten' gives \(512,\) maps"),
        ({"data": torch.zeros(2, 16, 16)}, r"data must be images \(N, C, H, W\), got shape \(2, 16, 16\)"),
    ],
)
def test_bad_settings_say_what_to_pass(images, options, message):
    arguments = {"data": images[:3], "layers": ["conv2", "conv1"], **options}
    with pytest.raises(InputError, match=message):
        part_graph(two_place_attributor(), progress=False, **arguments)


def test_the_model_and_data_are_left_as_they_were(images):
    model = two_place_model().train()
    model.conv1.weight.requires_grad_(False)
    attributor = two_place_attributor(model)
    data = images.clone()
    before = snapshot(model)
    part_graph(attributor, data, ["conv2", "conv1"], threshold=0.5, progress=False)
    assert_unchanged(before, model)
    assert torch.equal(data, images) and not data.requires_grad
    for layers, error in (["conv9"], LayerError), (["flatten"], InputError), (["conv1", "conv2"], InputError):
        with pytest.raises(error):
            part_graph(attributor, data, layers, progress=False)
        assert_unchanged(before, model)
    assert model.training and not model.conv1.weight.requires_grad and model.conv2.weight.requires_grad


def test_json_round_trip_of_the_built_graph(graph, tmp_path):
    back = PartGraph.from_json(graph.to_json())
    assert back == graph  # every field but the heatmaps, which compare=False leaves out
    assert (back.nodes, back.edges, back.layers, back.settings, back.targets) == (
        graph.nodes,
        graph.edges,
        graph.layers,
        graph.settings,
        graph.targets,
    )
    assert all(node.heatmap is None for node in back.nodes)
    path = tmp_path / "graph.json"
    graph.to_json(path, heatmaps=True)
    full = PartGraph.from_json(path)
    assert full == graph
    for saved, node in zip(full.nodes, graph.nodes, strict=True):
        assert saved.heatmap is not None and node.heatmap is not None
        assert torch.equal(saved.heatmap, node.heatmap)  # bytes in base64: exact


def _shared_channel_model() -> torch.nn.Sequential:
    """conv1 (2 -> 3): c0 = in0 (A only), c1 = in1 (B only), c2 = in0 + in1 (fires at both places); conv2 (3 -> 2):
    channel 0 = c0 + c2 - 10 c1 (A: a + a; at B, b - 10 b < 0 is cut by the ReLU), channel 1 = c1 + c2 - 10 c0 (B:
    2 b). z+ ignores the negative weights, so conv2's A channel passes a to c0 and a to c2, both on A's pixel, and
    its B channel b to c1 and b to c2 on B's pixel: channel 2 is a part of both, at two places."""
    model = two_place_model()
    conv1, conv2 = torch.nn.Conv2d(2, 3, 1, bias=False), torch.nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv1.weight[:, :, 0, 0] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        conv2.weight[:, :, 0, 0] = torch.tensor([[1.0, -10.0, 1.0], [-10.0, 1.0, 1.0]])
    model.conv1, model.conv2 = conv1, conv2
    return model.eval()


def test_a_channel_shared_by_two_parents_is_a_child_of_each_at_each_ones_place():
    # b > a in some images and a > b in others: channel 2's whole map (without a parent) peaks at A in some, at B in
    # others; under each parent its relevance sits at that parent's place only
    values_a, values_b = [1.0, 2.0, 1.5, 0.7, 1.2, 0.9], [1.3, 0.8, 1.1, 1.6, 0.6, 1.0]
    images = two_place_images(PLACES_A, PLACES_B, values_a, values_b)
    attributor = two_place_attributor(_shared_channel_model())
    graph = part_graph(attributor, images, ["conv2", "conv1"], threshold=0.5, smoothing=0.0, progress=False)
    # conv2: A's mean 2 * 7.3 / 6 = 2.433 beats B's 2 * 6.4 / 6 = 2.133
    assert [(n.id, n.channels, n.parent) for n in graph.nodes] == [
        ("conv2:0", (0,), None),
        ("conv2:1", (1,), None),
        ("conv1:0", (0, 2), "conv2:0"),  # a + a under A's parent
        ("conv1:1", (1, 2), "conv2:1"),  # b + b under B's parent
    ]
    a_top, b_top, a_low, b_low = graph.nodes
    assert a_low.positions == a_top.positions == _floats(PLACES_A)
    assert b_low.positions == b_top.positions == _floats(PLACES_B)
    assert a_low.scores == pytest.approx([2 * a for a in values_a], rel=REL)
    assert b_low.scores == pytest.approx([2 * b for b in values_b], rel=REL)
    assert graph.path("conv1:0") == {"conv2": [0]} and graph.path("conv1:1") == {"conv2": [1]}
    assert graph.path("conv2:0") == {}
    assert [(e.parent, e.child) for e in graph.edges] == [("conv2:0", "conv1:0"), ("conv2:1", "conv1:1")]
    assert [e.share for e in graph.edges] == pytest.approx([1.0, 1.0], rel=REL)


def test_groups_whose_heatmaps_point_at_one_place_merge_though_their_maps_do_not():
    # conv1 (9 x 9 kernel, two weights): channel 0 reads the pixel at its own cell, channel 1 the pixel 4 columns to
    # its right. A bright pixel at A lights channel 0's cell A and channel 1's cell A - (0, 4): their relevance maps
    # peak 4 px apart, 0.088 of the 32 x 32 diagonal (45.25 px), more than radius 0.05, so the channels first form
    # two groups; both heatmaps put all relevance on A's pixel, so the groups are one part and become one node
    conv1 = torch.nn.Conv2d(1, 2, 9, padding=4, bias=False)
    with torch.no_grad():
        conv1.weight.zero_()
        conv1.weight[0, 0, 4, 4] = 1.0
        conv1.weight[1, 0, 4, 8] = 1.0
    model = torch.nn.Sequential(conv1, torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(2 * 32 * 32, 1, bias=False))
    with torch.no_grad():
        model[3].weight.fill_(1.0)
    places = [(5, 10), (20, 6), (12, 25), (28, 15), (9, 18), (16, 12)]
    images = torch.zeros(len(places), 1, 32, 32)
    for n, (row, col) in enumerate(places):
        images[n, 0, row, col] = 1.0 + 0.25 * n
    attributor = two_place_attributor(model.eval())
    graph = part_graph(attributor, images, ["0"], threshold=0.5, radius=0.05, smoothing=0.0, progress=False)
    (node,) = graph.nodes
    assert node.channels == (0, 1) and node.positions == _floats(places)
    # each channel carries half of the output (a and a): the node all of it
    assert node.scores == pytest.approx([2 * (1.0 + 0.25 * n) for n in range(6)], rel=REL)
    assert node.heatmap is not None and float(node.heatmap.sum()) == pytest.approx(2 * 2.25, rel=REL)


def test_no_part_at_the_top_means_no_parts_below(images):
    # threshold 2 over conv2's 2 channels asks for the whole relevance in one channel: no image gives it (B never
    # carries all of 1.8 a + 2.2 b), so no candidate at the top; the layer below is not searched in the whole relevance
    graph = part_graph(two_place_attributor(), images, ["conv2", "conv1"], threshold=2.0, progress=False)
    assert graph.nodes == () and graph.edges == () and graph.layers == ("conv2", "conv1")
