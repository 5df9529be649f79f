"""Concept figures: layout and titles carry the numbers they should; files are written as asked."""

from __future__ import annotations

import builtins
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from zennit.composites import EpsilonPlus

from glocal import ConceptExplainer, ConceptExplanation
from glocal.viz.concepts import concept_figure, figure_size, save_concept_figures

pytest.importorskip("matplotlib")

WHITE, RED, BLUE = (255, 255, 255), (255, 0, 0), (0, 0, 255)


def _explanation(
    shares: list[list[float]], ids: list[list[int]], size: tuple[int, int] = (6, 8), targets: tuple[int, ...] = (2, 1)
) -> ConceptExplanation:
    """A hand-made explanation: N samples, K concepts, heatmaps with one red and one blue pixel; class 2 predicted."""
    n, k = len(shares), len(shares[0])
    heatmap = torch.zeros(n, *size)
    heatmap[:, 0, 0], heatmap[:, -1, -1] = 1.0, -1.0
    prediction = torch.zeros(n, 4)
    prediction[:, 2] = 1.0  # every sample predicts class 2
    return ConceptExplanation(
        layer="block",
        prediction=prediction,
        targets=torch.tensor(targets[:n]),
        heatmap=heatmap,
        concept_relevance=torch.zeros(n, 10),
        shares=torch.zeros(n, 10),
        concept_ids=ids,
        concept_shares=torch.tensor(shares),
        concept_heatmaps=heatmap[:, None].repeat(1, k, 1, 1),
    )


# -- concept_figure ----------------------------------------------------------------------------------------------------


def test_figure_has_image_heatmap_and_one_titled_panel_per_concept():
    explanation = _explanation([[0.25, -0.125, 0.05]], [[7, 3, 9]], targets=(1,))
    figure = concept_figure(explanation, torch.rand(1, 3, 6, 8), class_names=["a", "b", "cat", "d"])
    titles = [axes.get_title() for axes in figure.axes]
    assert len(figure.axes) == 2 + 3
    assert titles == ["input", "heatmap (all concepts)", "concept 7\n+25.0%", "concept 3\n-12.5%", "concept 9\n+5.0%"]
    header = figure._suptitle.get_text()
    assert "explained: b (class 1)" in header and "predicted: cat (class 2)" in header
    assert "'block'" in header and "these 3 together: +17.5%" in header
    same = concept_figure(_explanation([[0.5]], [[0]]), torch.rand(1, 3, 6, 8), class_names=["a", "b", "cat", "d"])
    assert same._suptitle.get_text().startswith("predicted and explained: cat (class 2)\n")


def test_figure_shows_the_pictures_it_was_given():
    explanation = _explanation([[0.5]], [[0]])
    images = torch.zeros(1, 3, 6, 8)
    images[0, 1] = 1.0  # a green image
    figure = concept_figure(explanation, images)
    shown = figure.axes[0].get_images()[0].get_array()
    assert shown.shape == (6, 8, 3) and np.allclose(shown[..., 1], 1.0) and np.allclose(shown[..., 0], 0.0)
    heatmap = np.asarray(figure.axes[1].get_images()[0].get_array())
    assert tuple(heatmap[0, 0]) == RED and tuple(heatmap[-1, -1]) == BLUE and tuple(heatmap[2, 3]) == WHITE


def test_figure_size_follows_panels_columns_and_aspect():
    explanation = _explanation([[0.5, 0.2, 0.1, 0.1, 0.05, 0.05]], [[0, 1, 2, 3, 4, 5]], size=(6, 12))
    figure = concept_figure(explanation, torch.rand(1, 3, 6, 12), columns=4, panel_size=2.0)
    # 8 panels in 2 rows of 4; each picture is 2 inches wide and 1 high; each row has a title strip
    assert tuple(figure.get_size_inches()) == pytest.approx(figure_size(8, 4, aspect=0.5, panel_size=2.0))
    assert figure_size(8, 4, aspect=0.5, panel_size=2.0) == (8.0, 0.55 + 2 * (1.0 + 0.45))
    assert figure_size(3, 4) == (7.5, 0.55 + 2.5 + 0.45)  # fewer panels than columns: one short row


def test_figure_accepts_pil_images_and_picks_the_sample():
    explanation = _explanation([[0.5], [0.25]], [[4], [8]])
    images = [Image.new("RGB", (8, 6), (255, 0, 0)), Image.new("RGB", (8, 6), (0, 0, 255))]
    figure = concept_figure(explanation, images, sample=1)
    assert figure.axes[2].get_title() == "concept 8\n+25.0%"
    assert np.allclose(figure.axes[0].get_images()[0].get_array()[..., 2], 1.0)
    with pytest.raises(IndexError, match="2 samples"):
        concept_figure(explanation, images, sample=2)


def test_figure_does_not_touch_pyplot():
    before = sys.modules.get("matplotlib.pyplot")
    concept_figure(_explanation([[0.5]], [[0]]), torch.rand(1, 3, 6, 8))
    assert sys.modules.get("matplotlib.pyplot") is before


def test_missing_matplotlib_says_how_to_install_it(monkeypatch):
    real_import = builtins.__import__

    def without_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_matplotlib)
    with pytest.raises(ImportError, match=r"pip install glocal\[viz\]"):
        concept_figure(_explanation([[0.5]], [[0]]), torch.rand(1, 3, 6, 8))


# -- save_concept_figures ----------------------------------------------------------------------------------------------


def test_save_writes_one_png_per_sample(tmp_path):
    explanation = _explanation([[0.5, 0.25], [0.4, 0.1]], [[1, 2], [3, 4]])
    paths = save_concept_figures(explanation, torch.rand(2, 3, 6, 8), tmp_path / "out", ["a", "b", "cat", "d"], dpi=50)
    assert [path.name for path in paths] == ["000-cat.png", "001-b.png"]
    for path in paths:
        with Image.open(path) as image:
            # 4 panels of 2.5 inches in one row, at 50 dots per inch: 500 pixels wide; matplotlib truncates to pixels
            width, height = figure_size(4, 4, aspect=6 / 8)
            assert image.size == (int(width * 50), int(height * 50)) == (500, 143)


def test_save_uses_given_names_and_checks_their_number(tmp_path):
    explanation = _explanation([[0.5]], [[1]])
    assert save_concept_figures(explanation, torch.rand(1, 3, 6, 8), tmp_path, names=["photo"])[0].name == "photo.png"
    with pytest.raises(ValueError, match="2 names for 1 samples"):
        save_concept_figures(explanation, torch.rand(1, 3, 6, 8), tmp_path, names=["a", "b"])


def test_figure_of_a_real_explanation(conv_net, images):
    explanation = ConceptExplainer(conv_net, EpsilonPlus())(images, "2", select=3)
    figure = concept_figure(explanation, images.clamp(0, 1), sample=1)
    assert len(figure.axes) == 5
    for axes, concept_id, share in zip(
        figure.axes[2:], explanation.concept_ids[1], explanation.concept_shares[1].tolist(), strict=True
    ):
        assert axes.get_title() == f"concept {concept_id}\n{share:+.1%}"
