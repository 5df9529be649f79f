"""The part graph section of a report: a paragraph, the graph's picture inline (a data: URI, nothing fetched) with its
caption, and a table of every node with its strongest child."""

from __future__ import annotations

import base64
import io
import re

import pytest
import torch
from PIL import Image

from glocal.parts import PartEdge, PartGraph, PartNode
from glocal.report import ModelReport, write_report
from glocal.report.data import Analysis, Picture
from glocal.report.parts import PART_GRAPH_WIDTH, parts_analysis
from glocal.report.view import render_section

pytest.importorskip("matplotlib")


def _graph() -> PartGraph:
    """Two nodes over "up" and two over "down" on two 20 x 20 images; up:0's children are down:1 (share 0.5) and
    down:0 (0.25); up:1 has none."""
    heatmap = torch.zeros(20, 20)
    heatmap[5, 6] = 1.0
    nodes = tuple(
        PartNode(
            f"{layer}:{k}",
            layer,
            channels,
            scores=(1.0 + k, 3.0 - k),
            positions=((5.0, 6.0), (7.0, 8.0)),
            present=(True, k == 0),
            heatmap=heatmap,
        )
        for layer, k, channels in (("up", 0, (4, 9)), ("up", 1, (2,)), ("down", 0, (1, 3, 5, 7)), ("down", 1, (0,)))
    )
    edges = (PartEdge("up:0", "down:0", 1.0, 0.25), PartEdge("up:0", "down:1", 2.0, 0.5))
    settings = {"threshold": 2.0, "min_support": 0.25, "radius": 0.1}
    return PartGraph(("up", "down"), nodes, edges, targets=(3, 3), image_size=(20, 20), settings=settings)


def test_the_analysis_says_what_it_shows_and_lists_every_node():
    analysis = parts_analysis(_graph(), torch.rand(2, 3, 20, 20), class_names=[f"name {i}" for i in range(5)])
    assert analysis.title == "Parts: an explanatory graph of object parts"
    assert "2 images, explained for name 3 (class 3), over the layers up > down (top first)" in analysis.text
    assert "part nodes per layer up: 2, down: 2" in analysis.text
    assert "at least 2 times a fair share in at least 25% of the images" in analysis.text
    (table,) = analysis.tables
    assert table.rows == (
        # mean scores: (1 + 3) / 2 = 2 for k = 0, (2 + 2) / 2 = 2 for k = 1; support: 2 of 2, 1 of 2
        ("up", "up:0", "4, 9", "100%", "2", "down:1", "50.0%"),
        ("up", "up:1", "2", "50%", "2", "", ""),
        ("down", "down:0", "1, 3, 5, 7", "100%", "2", "", ""),
        ("down", "down:1", "0", "50%", "2", "", ""),
    )
    (picture,) = analysis.pictures
    image = Image.open(io.BytesIO(picture.png))
    assert image.format == "PNG" and image.width <= PART_GRAPH_WIDTH and image.height > 100
    assert "4 of 4 nodes drawn" in picture.title and "up, down" in picture.alt


def test_the_picture_is_inline_in_the_page_with_its_caption(tmp_path):
    analysis = parts_analysis(_graph(), None, title="Parts of <threes>")
    section = ModelReport("m", "", (), {}, analyses=(analysis,))
    html = render_section(section)
    assert "Parts of &lt;threes&gt;" in html and "<threes>" not in html
    (uri,) = re.findall(r'<figure class="analysis-picture"><img src="(data:image/png;base64,[^"]+)"', html)
    assert base64.b64decode(uri.split(",", 1)[1]) == analysis.pictures[0].png
    assert "<figcaption>The part graph (4 of 4 nodes drawn)" in html
    assert html.count('<table class="analysis-table">') == 1 and "<td>down:1</td>" in html
    path = tmp_path / "report.html"
    write_report([section], path)
    page = path.read_text(encoding="utf-8")
    assert uri in page
    # self-contained: nothing is fetched (every src is a data: URI, no stylesheet links, no remote URLs)
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', page))
    assert "<link" not in page and "http://" not in page and "https://" not in page.replace("https://www.w3.org", "")
    assert section.to_dict()["analyses"][0]["pictures"][0]["png"] == uri.split(",", 1)[1]


def test_analyses_without_pictures_render_as_before():
    plain = render_section(ModelReport("m", "", (), {}, analyses=(Analysis("A", "text"),)))
    assert "analysis-picture" not in plain
    two = Analysis("A", "", pictures=(Picture("one", b"\x89PNG1", "first"), Picture("two", b"\x89PNG2", "second")))
    html = render_section(ModelReport("m", "", (), {}, analyses=(two,)))
    assert html.count('class="analysis-picture"') == 2 and 'alt="second"' in html
