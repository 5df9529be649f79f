"""Pruning curves as a picture: one panel per measure (accuracy, label logit, or for class-specific pruning the
chosen classes' accuracy beside the other classes'), one line per criterion, against the pruning rate.

Needs matplotlib (``pip install "glocal[viz]"``), imported when :func:`curve_figure` is first called.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .images import require_matplotlib

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..pruning.curves import PruningCurve

__all__ = ["curve_figure"]

_TITLES = {
    "accuracy": "accuracy",
    "logit": "mean logit of the label",
    "classes": "accuracy of the chosen classes",
    "others": "accuracy of the other classes",
}


def _title(of: str | int, curve: PruningCurve) -> str:
    if of == "classes" and curve.classes is not None:
        return f"accuracy of class {', '.join(map(str, curve.classes))}"
    return _TITLES.get(of, f"accuracy of class {of}") if isinstance(of, str) else f"accuracy of class {of}"


def curve_figure(
    curves: Mapping[str, PruningCurve], *, of: Sequence[str | int] | None = None, size: float = 3.6
) -> Figure:
    """Each curve against the pruning rate, one panel per measure in ``of`` (see
    :meth:`~glocal.pruning.PruningCurve.values`).

    Default panels: accuracy and the label's logit; when the curves' scores came from chosen classes, the chosen
    classes' accuracy and the other classes' instead of the logit. The legend gives each criterion's AUC.
    """
    figure_class, canvas_class = require_matplotlib()
    first = next(iter(curves.values()))
    panels: list[str | int] = (
        list(of)
        if of is not None
        else (["accuracy", "classes", "others"] if first.classes is not None else ["accuracy", "logit"])
    )
    figure = figure_class(figsize=(size * len(panels), size * 0.8))
    canvas_class(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, panel in zip(axes, panels, strict=True):
        for name, curve in curves.items():
            values = curve.values(panel)
            axis.plot(curve.rates, values, marker="o", markersize=3, label=f"{name} (AUC {curve.auc(panel):.3f})")
        axis.set_title(_title(panel, first), fontsize=10)
        order = "most important first" if first.remove == "most" else "least important first"
        axis.set_xlabel(f"pruning rate ({first.scope} scope, {order})")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    return figure
