"""Part graph figures: one axes per drawn node, one line per drawn edge, thumbnails cropped around the part, markers at
the given positions, and clear errors for images that do not fit the graph."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from glocal.errors import InputError
from glocal.parts import PartEdge, PartGraph, PartNode
from glocal.viz.parts import channel_text, crop_box, part_graph_figure, part_positions_figure

pytest.importorskip("matplotlib")

H, W = 40, 32


def _heatmap(row: int, column: int) -> torch.Tensor:
    heatmap = torch.zeros(H, W)
    heatmap[row, column] = 1.0
    return heatmap


def _graph(heatmaps: bool = True, top_nodes: int = 2) -> PartGraph:
    """Two layers over three images: ``top_nodes`` nodes in "up", three in "down"; every node scores highest on image
    1 and finds its part there at (10 + 5k, 8 + 4k)."""
    nodes = []
    for layer, count in (("up", top_nodes), ("down", 3)):
        for k in range(count):
            where = (10.0 + 5 * k, 8.0 + 4 * k)
            nodes.append(
                PartNode(
                    f"{layer}:{k}",
                    layer,
                    tuple(range(k, k + 2 * k + 1)),
                    scores=(0.1, 2.0 - k / 10, 0.5),
                    positions=((0.0, 0.0), where, (float("nan"), float("nan"))),
                    present=(True, True, k == 0),
                    heatmap=_heatmap(int(where[0]), int(where[1])) if heatmaps else None,
                )
            )
    edges = (
        PartEdge("up:0", "down:0", 3.0, 0.6),
        PartEdge("up:0", "down:2", 0.5, 0.1),
        PartEdge("up:1", "down:1", 1.0, 0.9),
    )
    return PartGraph(("up", "down"), tuple(nodes), edges, targets=(1, 1, 1), image_size=(H, W), settings={})


def _images() -> torch.Tensor:
    images = torch.zeros(3, 1, H, W)
    images[1, 0] = torch.arange(H * W, dtype=torch.float32).reshape(H, W) / (H * W)  # a ramp: crops are recognisable
    return images


def _edge_lines(figure) -> dict[str, object]:
    return {line.get_gid(): line for line in figure.axes[0].get_lines() if (line.get_gid() or "").startswith("edge:")}


def test_channels_are_shortened_and_crops_stay_inside_the_image():
    assert channel_text((7,)) == "ch 7" and channel_text((1, 2, 3)) == "ch 1, 2, 3"
    assert channel_text((3, 5, 8, 9, 10, 11)) == "ch 3, 5, +4"
    # a quarter of 40 x 32 is 10 x 8, widened to the 12-pixel minimum; centred at (20, 16): rows 14..25, columns 10..21
    assert crop_box((20.0, 16.0), (H, W), 0.25) == (14, 10, 12, 12)
    assert crop_box((20.0, 16.0), (H, W), 0.5, least=1) == (10, 8, 20, 16)
    assert crop_box((0.0, 31.0), (H, W), 0.5, least=1) == (0, 16, 20, 16)  # pushed in at the top and the right
    assert crop_box((5.0, 5.0), (8, 8), 0.25) == (0, 0, 8, 8)  # never larger than the image
    assert crop_box((float("nan"), 5.0), (H, W), 0.5, least=1)[0] == 10  # no position: the middle


def test_graph_figure_draws_every_node_and_edge_with_its_label_and_crop():
    graph = _graph()
    figure = part_graph_figure(graph, _images(), dpi=40)
    assert len(figure.axes) == 1 + 5  # the edge axes, then one per node
    titles = [axes.get_title() for axes in figure.axes[1:]]
    assert titles == [f"{n.id}\n{channel_text(n.channels)}\nsupport {n.support:.0%}" for n in graph.nodes]
    assert titles[3] == "down:1\nch 1, 2, 3\nsupport 67%" and titles[2] == "down:0\nch 0\nsupport 100%"
    lines = _edge_lines(figure)
    assert set(lines) == {"edge:up:0->down:0", "edge:up:0->down:2", "edge:up:1->down:1"}
    widths = {gid: line.get_linewidth() for gid, line in lines.items()}
    # widths relative to the widest share drawn (0.9): 0.5 + 5.5 * share / 0.9
    assert widths == pytest.approx(
        {"edge:up:1->down:1": 6.0, "edge:up:0->down:0": 0.5 + 5.5 * 0.6 / 0.9, "edge:up:0->down:2": 0.5 + 5.5 / 9}
    )
    assert "relative to the widest (90% of its upper part's relevance)" in figure.axes[0].texts[1].get_text().replace(
        "\n", " "
    )
    assert lines["edge:up:1->down:1"].get_alpha() > lines["edge:up:0->down:2"].get_alpha()
    # every line runs from below its parent's picture down to above its child's label
    parent, child = figure.axes[1 + 1], figure.axes[1 + 3]  # up:1, down:1
    x, y = lines["edge:up:1->down:1"].get_data()
    width, height = figure.get_size_inches()
    assert x[0] == pytest.approx((parent.get_position().x0 + parent.get_position().x1) / 2 * width)
    assert x[1] == pytest.approx((child.get_position().x0 + child.get_position().x1) / 2 * width)
    assert height * (1 - parent.get_position().y0) < y[0] < y[1] < height * (1 - child.get_position().y1)
    # down:2's thumbnail: its example image (1) cropped 12 x 12 around (20, 16), the heatmap's one pixel at (20, 16)
    picture = figure.axes[1 + 4].get_images()[0].get_array()
    assert picture.shape[:2] == (12, 12)
    strongest = np.unravel_index(np.argmax(picture[..., 0] - picture[..., 2]), (12, 12))
    assert tuple(int(i) for i in strongest) == (20 - 14, 16 - 10)
    ramp = _images()[1, 0]
    assert picture[0, 0, 1] == pytest.approx(float(ramp[14, 10]) * 0.8 + 0.2, abs=1e-6)  # grey image, no heat there


def test_graph_figure_without_heatmaps_marks_the_position_and_without_images_shows_the_heatmap():
    figure = part_graph_figure(_graph(heatmaps=False), _images(), dpi=40)
    axes = figure.axes[1 + 3]  # down:1 at (15, 12) on image 1: crop rows 9..20, columns 6..17
    (marker,) = axes.get_lines()
    assert (marker.get_xdata()[0], marker.get_ydata()[0]) == (12 - 6, 15 - 9)
    assert axes.get_images()[0].get_array().shape[:2] == (12, 12)
    # normalised inputs (outside [0, 1]) are stretched from their minimum to their maximum for drawing
    ramp = _images()[1, 0].double()
    stretched = part_graph_figure(_graph(heatmaps=False), _images() * 3 - 0.5, dpi=40).axes[1 + 3]
    expected = ((ramp - ramp.min()) / (ramp.max() - ramp.min()))[9:21, 6:18]
    assert np.allclose(stretched.get_images()[0].get_array()[..., 0], expected.numpy())
    bare = part_graph_figure(_graph(heatmaps=True), None, dpi=40)
    heat = bare.axes[1].get_images()[0].get_array()  # up:0 at (10, 8): heatmap alone, red at the peak, white around
    assert heat.shape[:2] == (12, 12) and tuple(heat[10 - 4, 8 - 2]) == (1.0, 0.0, 0.0)
    assert tuple(heat[0, 0]) == (1.0, 1.0, 1.0)
    empty = part_graph_figure(_graph(heatmaps=False), None, dpi=40)
    assert len(empty.axes) == 6 and not any(axes.get_images() for axes in empty.axes)
    assert all(axes.texts[0].get_text() == "no heatmap kept" for axes in empty.axes[1:])
    assert "its picture is its conditional heatmap on its best image" in bare.axes[0].texts[1].get_text().replace(
        "\n", " "
    )
    buffer = io.BytesIO()
    empty.savefig(buffer, format="png")
    assert Image.open(buffer).size == pytest.approx(tuple(v * 40 for v in empty.get_size_inches()), abs=1)


def test_graph_figure_keeps_the_most_relevant_nodes_and_only_their_edges():
    figure = part_graph_figure(_graph(top_nodes=5), None, max_nodes=1, dpi=40)
    assert [axes.get_title().split("\n")[0] for axes in figure.axes[1:]] == ["up:0", "down:0"]
    assert set(_edge_lines(figure)) == {"edge:up:0->down:0"}
    headings = [text.get_text() for text in figure.axes[0].texts]
    assert "up\n(1 of 5 nodes)" in headings and "down\n(1 of 3 nodes)" in headings


def test_graph_figure_refuses_images_that_do_not_fit_the_graph():
    graph = _graph()
    with pytest.raises(InputError, match=r"3 images of 40x32 pixels, got 2 of 40x32"):
        part_graph_figure(graph, _images()[:2])
    with pytest.raises(InputError, match=r"got 3 of 32x32"):
        part_graph_figure(graph, torch.zeros(3, 3, 32, 32))
    with pytest.raises(InputError, match=r"\(N, 1 or 3, H, W\).*got \(3, 40, 32\)"):
        part_graph_figure(graph, torch.zeros(3, H, W))
    with pytest.raises(InputError, match="max_nodes"):
        part_graph_figure(graph, max_nodes=0)


def test_graph_method_draws_with_the_figure():
    figure = _graph().figure(_images(), size=1.0, title="my parts")
    assert figure.get_size_inches()[0] == pytest.approx(max(1.5 + 3 * 1.25 + 0.2, 6.0))
    assert "my parts" in [text.get_text() for text in figure.axes[0].texts]


def test_positions_figure_puts_each_marker_at_its_position_per_layer():
    graph = _graph()
    positions = torch.tensor([[3.0, 4.0], [30.0, 20.0], [5.5, 6.5], [float("nan"), 1.0], [39.0, 31.0]])
    present = [True, False, True, True, False]
    figure = part_positions_figure(graph, _images()[1], positions, present=present)
    (axes,) = figure.axes
    lines = {line.get_gid(): line for line in axes.get_lines()}
    assert set(lines) == {"present:up", "absent:up", "present:down", "absent:down"}

    def points(gid):
        return list(zip(lines[gid].get_xdata(), lines[gid].get_ydata(), strict=True))  # x: column, y: row

    assert points("present:up") == [(4.0, 3.0)] and points("absent:up") == [(20.0, 30.0)]
    assert points("present:down") == [(6.5, 5.5)]  # down:1 has no position (NaN): not drawn
    assert points("absent:down") == [(31.0, 39.0)]
    assert lines["present:up"].get_color() != lines["present:down"].get_color()
    assert lines["present:up"].get_marker() != lines["present:down"].get_marker()
    assert lines["absent:up"].get_markerfacecolor() == "none"
    assert sorted(text.get_text() for text in axes.texts) == ["0", "0", "1", "2"]
    assert [text.get_text() for text in axes.get_legend().get_texts()] == [
        "up",
        "up (absent)",
        "down",
        "down (absent)",
    ]
    assert axes.get_images()[0].get_array().shape == (H, W, 3)


def test_positions_figure_takes_node_ids_and_refuses_wrong_shapes():
    ids = ["a:0", "a:1", "b:0"]
    figure = part_positions_figure(ids, torch.rand(1, 3, H, W), [[1.0, 2.0], [1.0, 2.0], [5.0, 6.0]])
    lines = {line.get_gid(): line for line in figure.axes[0].get_lines()}
    assert list(lines["present:a"].get_xdata()) == [2.0, 2.0] and list(lines["present:b"].get_ydata()) == [5.0]
    assert sorted(text.get_text() for text in figure.axes[0].texts) == ["0", "0, 1"]  # one label for one place
    with pytest.raises(InputError, match=r"one picture shaped.*got \(2, 3, 40, 32\)"):
        part_positions_figure(ids, torch.rand(2, 3, H, W), torch.zeros(3, 2))
    with pytest.raises(InputError, match=r"\(3, 2\), got \(2, 2\)"):
        part_positions_figure(ids, torch.rand(3, H, W), torch.zeros(2, 2))
    with pytest.raises(InputError, match=r"one flag per node, \(3,\), got \(2,\)"):
        part_positions_figure(ids, torch.rand(3, H, W), torch.zeros(3, 2), present=[True, False])


def test_graph_figure_puts_each_node_under_its_parent_so_tree_edges_do_not_cross():
    # "down:1" is the second strongest of its row but a child of "up:1", and "down:2" a child of "up:0": drawn under
    # their parents the row reads down:0, down:2 (under up:0), down:1 (under up:1), and no two edges cross
    graph = _graph()
    nodes = tuple(
        replace(node, parent={"down:0": "up:0", "down:1": "up:1", "down:2": "up:0"}.get(node.id))
        for node in graph.nodes
    )
    figure = part_graph_figure(replace(graph, nodes=nodes), _images())
    lines = _edge_lines(figure)
    bottoms = {gid: float(line.get_xdata()[1]) for gid, line in lines.items()}  # x of each edge's child end
    tops = {gid: float(line.get_xdata()[0]) for gid, line in lines.items()}
    assert bottoms["edge:up:0->down:0"] < bottoms["edge:up:0->down:2"] < bottoms["edge:up:1->down:1"]
    pairs = [(tops[g], bottoms[g]) for g in lines]
    assert all((a0 - b0) * (a1 - b1) >= 0 for a0, a1 in pairs for b0, b1 in pairs)  # same order at both ends
