"""Location instability against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from glocal.errors import InputError
from glocal.parts import layer_instability, model_instability, unit_instability

NAN = math.nan


def test_hand_computed_unit_with_two_landmarks_and_an_invisible_one():
    # 4 images, diagonal 10. Landmark 0 at distances 1, 2, 3 (image 3 hides it); landmark 1 at distance 5 everywhere.
    positions = torch.zeros(4, 2)
    landmarks = torch.tensor(
        [[[1.0, 0.0], [3.0, 4.0]], [[0.0, 2.0], [0.0, 5.0]], [[3.0, 0.0], [5.0, 0.0]], [[NAN, NAN], [4.0, 3.0]]]
    )
    # landmark 0: distances / 10 = 0.1, 0.2, 0.3 -> std (N-1) = 0.1; landmark 1: 0.5 four times -> std 0
    value = unit_instability(positions, torch.ones(4), landmarks, diagonals=10.0)
    assert value == pytest.approx((0.1 + 0.0) / 2)


def test_only_the_top_k_images_count_and_diagonals_are_per_image():
    positions = torch.zeros(3, 2)
    landmarks = torch.tensor([[[6.0, 8.0]], [[3.0, 4.0]], [[30.0, 40.0]]])  # distances 10, 5, 50
    scores = torch.tensor([3.0, 2.0, 1.0])
    # top 2: images 0 and 1, distances 10 / 100 and 5 / 25 -> 0.1 and 0.2 -> std = 0.0707...
    value = unit_instability(positions, scores, landmarks, diagonals=torch.tensor([100.0, 25.0, 1.0]), k=2)
    assert value == pytest.approx(math.sqrt(0.005))
    # a constant offset is perfectly stable, however large
    moved = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    assert unit_instability(moved, scores, moved[:, None] + 7.0, diagonals=50.0) == 0.0


def test_a_landmark_seen_once_gives_nan():
    landmarks = torch.tensor([[[1.0, 1.0]], [[NAN, NAN]]])
    assert math.isnan(unit_instability(torch.zeros(2, 2), torch.ones(2), landmarks, diagonals=1.0))


def test_layer_mean_over_the_strongest_units_and_model_mean():
    landmarks = torch.tensor([[[0.0, 1.0]], [[0.0, 2.0]], [[0.0, 3.0]]])  # distances 1, 2, 3 from the origin
    still = (torch.zeros(3, 2), torch.tensor([5.0, 5.0, 5.0]))  # instability std(1, 2, 3) / 10 = 0.1
    follows = (landmarks[:, 0] - 1.0, torch.tensor([1.0, 1.0, 1.0]))  # constant offset: 0
    layer = layer_instability([still, follows], landmarks, diagonals=10.0)
    assert layer.units == pytest.approx((0.1, 0.0)) and layer.instability == pytest.approx(0.05)
    strongest = layer_instability([still, follows], landmarks, diagonals=10.0, top=1)
    assert strongest.counted == (0,) and strongest.instability == pytest.approx(0.1)
    assert model_instability({"a": layer, "b": strongest}) == pytest.approx(0.075)


def test_bad_shapes_say_what_was_expected():
    with pytest.raises(InputError, match=r"landmarks must be \(2, landmarks, 2\)"):
        unit_instability(torch.zeros(2, 2), torch.ones(2), torch.zeros(2, 2), diagonals=1.0)
    with pytest.raises(InputError, match="k must be at least 2"):
        unit_instability(torch.zeros(2, 2), torch.ones(2), torch.zeros(2, 1, 2), diagonals=1.0, k=1)
