"""Where the lines of a report :class:`~glocal.report.data.Chart` are drawn: SVG coordinates, axis ticks and a legend.

The page draws the chart from these numbers with a template (no plotting library, nothing fetched): a frame, ticks at
"nice" steps (1, 2 or 5 times a power of ten), one polyline per series, a translucent band where a series has one, and
a legend below. Series colours cycle through :data:`COLOURS`.

>>> from glocal.report.data import Chart, Series
>>> line = Series("relevance", x=(0.0, 0.5, 1.0), y=(1.0, 0.9, 0.1))
>>> layout = chart_layout(Chart("accuracy", "rate", "accuracy", (line,)))
>>> layout.lines[0]["points"]
'56.0,20.0 208.0,38.0 360.0,182.0'
>>> [tick["label"] for tick in layout.x_ticks]
['0', '0.2', '0.4', '0.6', '0.8', '1']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .data import Chart

__all__ = ["COLOURS", "ChartLayout", "chart_layout", "nice_ticks"]

COLOURS = ("#b4232f", "#2452b4", "#2e8b57", "#d17a00", "#7a3fb0", "#6b6b6b", "#0f8b8d", "#c2185b")
"""Series colours, in order (the first, glocal's red, goes to the first series: the method being shown)."""

WIDTH, HEIGHT = 380, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 20, 20, 40


@dataclass(frozen=True)
class ChartLayout:
    """The drawing of one chart: the frame's box, ticks, one polyline (and band) per series and the legend rows."""

    width: int
    height: int
    box: tuple[float, float, float, float]
    x_ticks: tuple[dict[str, Any], ...]
    y_ticks: tuple[dict[str, Any], ...]
    lines: tuple[dict[str, Any], ...]
    legend_height: int


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``[low, high]`` (steps of 1, 2 or 5 times a power of ten).

    >>> nice_ticks(0, 1)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    >>> nice_ticks(-3.1, 12.5)
    [-5.0, 0.0, 5.0, 10.0, 15.0]
    """
    if not high > low:
        high = low + 1.0
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks = []
    value = first
    while value < high + step * 0.999:
        ticks.append(float(round(value, 10)))
        value += step
    return ticks


def _label(value: float) -> str:
    return f"{value:.4g}"


def chart_layout(chart: Chart) -> ChartLayout:
    """SVG coordinates for ``chart`` (see the module docstring); non-finite values are left out of their line."""
    xs = [x for series in chart.series for x in series.x if math.isfinite(x)]
    ys = [
        y
        for series in chart.series
        for values in (series.y, series.low or (), series.high or ())
        for y in values
        if math.isfinite(y)
    ]
    x_ticks = nice_ticks(min(xs, default=0.0), max(xs, default=1.0))
    y_ticks = nice_ticks(min(ys, default=0.0), max(ys, default=1.0), count=6)
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    inner_width, inner_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return round(LEFT + (x - x0) / (x1 - x0) * inner_width, 1)

    def py(y: float) -> float:
        return round(TOP + (y1 - y) / (y1 - y0) * inner_height, 1)

    lines = []
    for number, series in enumerate(chart.series):
        points = [(x, y) for x, y in zip(series.x, series.y, strict=True) if math.isfinite(x) and math.isfinite(y)]
        band = ""
        if series.low is not None and series.high is not None:
            lower = [(x, lo) for x, lo in zip(series.x, series.low, strict=True) if math.isfinite(lo)]
            upper = [(x, hi) for x, hi in zip(series.x, series.high, strict=True) if math.isfinite(hi)]
            band = " ".join(f"{px(x)},{py(y)}" for x, y in [*lower, *reversed(upper)])
        lines.append(
            {
                "name": series.name,
                "colour": COLOURS[number % len(COLOURS)],
                "points": " ".join(f"{px(x)},{py(y)}" for x, y in points),
                "band": band,
                "legend_y": HEIGHT + 16 * number + 6,
            }
        )
    return ChartLayout(
        width=WIDTH,
        height=HEIGHT + 16 * len(lines) + 8,
        box=(LEFT, TOP, inner_width, inner_height),
        x_ticks=tuple({"at": px(x), "label": _label(x)} for x in x_ticks),
        y_ticks=tuple({"at": py(y), "label": _label(y)} for y in y_ticks),
        lines=tuple(lines),
        legend_height=16 * len(lines) + 8,
    )
