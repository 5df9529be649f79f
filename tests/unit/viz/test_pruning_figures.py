"""Pruning curve figures: one panel per measure, one line per criterion."""

from __future__ import annotations

import pytest

from glocal.pruning import CriteriaComparison, PruningCurve

pytest.importorskip("matplotlib")


def curve(name: str, classes: tuple[int, ...] | None) -> PruningCurve:
    return PruningCurve(
        name, (0.0, 0.5), (0.9, 0.4), ((1.0, 0.8), (0.1, 0.7)), (3.0, 1.0), (0.0, 0.5), 10, "layer", classes
    )


def test_default_panels_and_lines(tmp_path):
    figure = CriteriaComparison({"relevance": curve("relevance", None), "random": curve("random", None)}, 10).figure()
    axes = figure.get_axes()
    assert [axis.get_title() for axis in axes] == ["accuracy", "mean logit of the label"]
    assert [line.get_label() for line in axes[0].get_lines()] == ["relevance (AUC 0.650)", "random (AUC 0.650)"]
    assert list(axes[1].get_lines()[0].get_ydata()) == [3.0, 1.0]
    figure.savefig(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_class_specific_panels():
    figure = curve("relevance", (1,)).figure()
    titles = [axis.get_title() for axis in figure.get_axes()]
    assert titles == ["accuracy", "accuracy of class 1", "accuracy of the other classes"]
    assert list(figure.get_axes()[1].get_lines()[0].get_ydata()) == [0.8, 0.7]
    assert list(figure.get_axes()[2].get_lines()[0].get_ydata()) == [1.0, 0.1]
