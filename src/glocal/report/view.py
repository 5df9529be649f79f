"""Views of report data: HTML fragments rendered with jinja2 templates (autoescaped), for a file or a server.

:func:`render_section` renders one :class:`~glocal.report.ModelReport` as an HTML fragment, :func:`render_page` a
whole self-contained page (CSS and JavaScript inlined, pictures as ``data:`` URIs). Every text from the user (names,
class names, layer names, descriptions) goes through jinja2's autoescaping; the only markup built here is the
attribution graph's SVG coordinates, which are numbers.
"""

from __future__ import annotations

import base64
import functools
import importlib.resources
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jinja2

from .._version import __version__
from .charts import chart_layout
from .data import GraphData, ModelReport
from .pictures import HEATMAP_COLOURS, HEATMAP_PERCENTILE, SIZES

__all__ = ["BUDGET", "GraphLayout", "graph_layout", "render_page", "render_section"]

BUDGET = 2_000_000
"""The size budget of a report section in bytes (about 2 MB); :func:`render_page` notes a section over it."""

COLUMN, ROW, RADIUS = 190, 40, 15


@dataclass(frozen=True)
class GraphLayout:
    """Where the nodes and edges of an attribution graph are drawn: the root on the left, each level one column to
    the right, children next to each other and their parent at their middle height."""

    width: int
    height: int
    nodes: tuple[dict[str, Any], ...]
    edges: tuple[dict[str, Any], ...]


def graph_layout(graph: GraphData) -> GraphLayout:
    """Coordinates for drawing ``graph`` as an SVG (see :class:`GraphLayout`)."""
    children: dict[str, list[str]] = {}
    for node in graph.nodes:
        if node.parent is not None:
            children.setdefault(node.parent, []).append(node.id)
    rows: dict[str, float] = {}
    next_row = 0

    def place(node_id: str) -> float:
        nonlocal next_row
        below = children.get(node_id, [])
        if not below:
            rows[node_id] = next_row
            next_row += 1
        else:
            placed = [place(child) for child in below]
            rows[node_id] = (placed[0] + placed[-1]) / 2
        return rows[node_id]

    place(graph.root)
    depth = max((node.depth for node in graph.nodes), default=0)
    shares = {edge.child: edge.share for edge in graph.edges}
    position = {
        node.id: (110 + node.depth * COLUMN, 36 + rows.get(node.id, 0) * ROW) for node in graph.nodes if node.id in rows
    }
    nodes = tuple(
        {
            "id": node.id,
            "x": position[node.id][0],
            "y": position[node.id][1],
            "label": f"{node.concept}",
            "layer": node.layer,
            "share": node.share_of_root,
            "r": RADIUS if node.depth == 0 else max(6.0, RADIUS * math.sqrt(min(1.0, abs(node.share_of_root)))),
            "positive": node.relevance >= 0,
            "leaf": node.id not in children,
        }
        for node in graph.nodes
        if node.id in position
    )
    edges = tuple(
        {
            "x1": position[edge.parent][0],
            "y1": position[edge.parent][1],
            "x2": position[edge.child][0],
            "y2": position[edge.child][1],
            "width": 1 + 7 * min(1.0, abs(shares.get(edge.child, 0.0))),
            "positive": edge.share >= 0,
        }
        for edge in graph.edges
        if edge.parent in position and edge.child in position
    )
    return GraphLayout(
        width=110 + depth * COLUMN + 170, height=int(60 + max(next_row - 1, 0) * ROW), nodes=nodes, edges=edges
    )


def _data_uri(png: bytes | None) -> str:
    return "" if png is None else "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


@functools.cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("glocal.report", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["uri"] = _data_uri
    environment.filters["percent"] = _percent
    environment.globals["graph_layout"] = graph_layout
    environment.globals["chart_layout"] = chart_layout
    environment.globals["sizes"] = SIZES
    return environment


def _asset(name: str) -> str:
    return (importlib.resources.files("glocal.report") / "templates" / name).read_text(encoding="utf-8")


def render_section(section: ModelReport, number: int = 0) -> str:
    """One model's section as an HTML fragment (needs the page's CSS and script, see :func:`render_page`).

    ``number`` makes the fragment's element ids unique when a page holds several sections.
    """
    card_ids = {key: f"s{number}-card-{i}" for i, key in enumerate(section.concepts)}
    return (
        _environment()
        .get_template("section.html.j2")
        .render(section=section, number=number, card_ids=card_ids, over_budget=section.picture_bytes > BUDGET)
    )


def render_page(sections: Sequence[ModelReport], title: str, *, size: int | None = None) -> str:
    """A whole self-contained page: the sections, the inlined CSS and script, and a footer with the size budget.

    ``size`` is the page's own size in bytes, shown in the footer (:func:`glocal.report.write_report` measures it).
    """
    return (
        _environment()
        .get_template("page.html.j2")
        .render(
            title=title,
            sections=[render_section(section, number) for number, section in enumerate(sections)],
            names=[section.name for section in sections],
            css=_asset("report.css"),
            script=_asset("report.js"),
            budget=BUDGET,
            size=size,
            version=__version__,
            colours=HEATMAP_COLOURS,
            percentile=HEATMAP_PERCENTILE,
        )
    )
