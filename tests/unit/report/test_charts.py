"""Line charts of report analyses: coordinates computed by hand, bands, gaps, and the rendered SVG."""

from __future__ import annotations

import math

from glocal.report.charts import HEIGHT, LEFT, TOP, chart_layout, nice_ticks
from glocal.report.data import Analysis, Chart, ModelReport, Series, Table
from glocal.report.view import render_section


def test_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0.31, 0.52) == [0.3, 0.35, 0.4, 0.45, 0.5, 0.55]
    assert nice_ticks(2.0, 2.0) == [2.0, 2.2, 2.4, 2.6, 2.8, 3.0]  # a flat line still gets an axis


def test_points_band_and_gaps_by_hand():
    # x ticks 0..1 (step 0.2), y ticks 0..1 with count=6 (raw step 1/6 -> 0.2); the box is 304 x 180 px at (56, 20)
    series = Series("random", x=(0.0, 0.5, 1.0), y=(0.5, math.nan, 0.25), low=(0.25, 0.25, 0.0), high=(1.0, 1.0, 0.5))
    layout = chart_layout(Chart("t", "rate", "accuracy", (series,)))
    assert layout.box == (LEFT, TOP, 304, 180)
    # y = 0.5 -> 20 + 0.5 * 180 = 110; y = 0.25 -> 20 + 0.75 * 180 = 155; the nan point is left out of the line
    assert layout.lines[0]["points"] == "56.0,110.0 360.0,155.0"
    # the band runs along low left to right, then along high back: y = 1 -> 20, y = 0 -> 200
    assert layout.lines[0]["band"] == "56.0,155.0 208.0,155.0 360.0,200.0 360.0,110.0 208.0,20.0 56.0,20.0"
    assert layout.height == HEIGHT + 16 + 8  # one legend row


def test_analysis_renders_as_svg_and_table_with_escaped_text():
    chart = Chart("<b>acc</b>", "rate", "accuracy", (Series("crit<script>", (0.0, 1.0), (1.0, 0.0)),))
    table = Table("AUC", ("criterion", "AUC"), (("<i>x</i>", "0.5"),), (False, True))
    section = ModelReport("m", "", (), {}, analyses=(Analysis("Pruning & co", "text", (chart,), (table,)),))
    html = render_section(section)
    assert html.count("<svg") == 1 and html.count("<polyline") == 1
    assert "<script>" not in html and "crit&lt;script&gt;" in html and "&lt;i&gt;x&lt;/i&gt;" in html
    assert "Pruning &amp; co" in html and '<td class="num">0.5</td>' in html


def test_every_css_rule_is_written_once():
    from importlib.resources import files

    css = (files("glocal.report") / "templates" / "report.css").read_text(encoding="utf-8")
    selectors = [line.split("{")[0].strip() for line in css.splitlines() if "{" in line and not line.startswith("@")]
    assert len(selectors) == len(set(selectors)), sorted({s for s in selectors if selectors.count(s) > 1})
    assert ".page-header, main, .page-footer { max-width: 1320px" in css  # the page is centred
