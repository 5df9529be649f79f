"""Co-location distances and average-linkage grouping against hand-worked cases."""

from __future__ import annotations

import math

import pytest
import torch

from glocal.errors import InputError
from glocal.parts.grouping import MIN_COMMON, average_linkage, colocation_distances

INF = math.inf


def _matrix(*upper: float) -> torch.Tensor:
    """The symmetric (C, C) distances with a zero diagonal from the upper triangle, row by row."""
    channels = round((1 + math.sqrt(1 + 8 * len(upper))) / 2)
    out = torch.zeros(channels, channels, dtype=torch.float64)
    rows, cols = torch.triu_indices(channels, channels, offset=1)
    out[rows, cols] = out[cols, rows] = torch.tensor(upper, dtype=torch.float64)
    return out


def test_the_median_ignores_an_image_that_sends_a_channel_elsewhere():
    # channel 0 at the origin; channel 1 at distances 1, 2, 3, 40, 50 (two images where it went elsewhere).
    # Diagonal 10: 0.1, 0.2, 0.3, 4, 5 -> median 0.3 (the mean would be 1.92)
    positions = torch.zeros(5, 2, 2)
    positions[:, 1] = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [24.0, 32.0], [30.0, 40.0]])
    distances = colocation_distances(positions, torch.ones(5, 2, dtype=torch.bool), diagonal=10.0)
    assert distances.dtype == torch.float64
    assert torch.allclose(distances, torch.tensor([[0.0, 0.3], [0.3, 0.0]], dtype=torch.float64))
    # the diagonal scales it: 3 pixels of a 20-pixel diagonal
    assert float(colocation_distances(positions, torch.ones(5, 2, dtype=torch.bool), 20.0)[0, 1]) == pytest.approx(0.15)
    # with an even count, torch's median is the lower of the middle two: 0.1, 0.2, 0.3, 4 -> 0.2 (not 0.25)
    even = colocation_distances(positions[:4], torch.ones(4, 2, dtype=torch.bool), diagonal=10.0)
    assert float(even[0, 1]) == pytest.approx(0.2)


def test_only_images_where_both_are_present_count():
    # as above, but channel 1 is absent in the images with 1 and 2 pixels: 0.3, 4, 5 -> median 4
    positions = torch.zeros(5, 2, 2)
    positions[:, 1] = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [24.0, 32.0], [30.0, 40.0]])
    present = torch.ones(5, 2, dtype=torch.bool)
    present[:2, 1] = False
    assert float(colocation_distances(positions, present, diagonal=10.0)[0, 1]) == pytest.approx(4.0)
    # channel 0 also absent in image 4: two common images, fewer than MIN_COMMON = 3, so no distance at all
    present[4, 0] = False
    assert MIN_COMMON == 3
    distances = colocation_distances(positions, present, diagonal=10.0)
    assert distances[0, 1] == distances[1, 0] == INF and distances[0, 0] == distances[1, 1] == 0.0
    # ... unless two are enough: 0.3 and 4, the lower middle
    assert float(colocation_distances(positions, present, diagonal=10.0, min_common=2)[0, 1]) == pytest.approx(0.3)


def test_three_channels_symmetric():
    # 3 images; channels 0 and 1 at the same place, channel 2 three pixels right and four down (5 of a diagonal 10)
    positions = torch.tensor([[[1.0, 1.0], [1.0, 1.0], [5.0, 4.0]]]).repeat(3, 1, 1)
    positions[1] += 2.0  # a common shift changes nothing
    distances = colocation_distances(positions, torch.ones(3, 3, dtype=torch.bool), diagonal=10.0)
    expected = torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 0.5], [0.5, 0.5, 0.0]], dtype=torch.float64)
    assert torch.allclose(distances, expected)


def test_bad_shapes():
    with pytest.raises(InputError, match=r"positions must be \(images, channels, 2\), got \(3, 2\)"):
        colocation_distances(torch.zeros(3, 2), torch.ones(3, 2, dtype=torch.bool), 1.0)
    with pytest.raises(InputError, match=r"positions must be .* got \(3, 2, 3\)"):
        colocation_distances(torch.zeros(3, 2, 3), torch.ones(3, 2, dtype=torch.bool), 1.0)
    with pytest.raises(InputError, match=r"present must be \(3, 2\), got \(2, 3\)"):
        colocation_distances(torch.zeros(3, 2, 2), torch.ones(2, 3, dtype=torch.bool), 1.0)
    with pytest.raises(InputError, match=r"distances must be a square \(C, C\) matrix, got \(2, 3\)"):
        average_linkage(torch.zeros(2, 3), 0.1)


def test_the_radius_is_inclusive():
    assert average_linkage(_matrix(0.25), radius=0.25) == [[0, 1]]
    assert average_linkage(_matrix(0.25), radius=0.2499) == [[0], [1]]
    assert average_linkage(_matrix(0.0), radius=0.0) == [[0, 1]]


def test_average_linkage_does_not_chain():
    # a - b and b - c are 0.125 apart, a - c 0.5: single linkage would merge all three (each step 0.125 <= 0.25);
    # average linkage merges a, b first (a tie with b, c: the lower channels go first), then {a, b} - c is
    # (0.5 + 0.125) / 2 = 0.3125 > 0.25
    assert average_linkage(_matrix(0.125, 0.5, 0.125), radius=0.25) == [[0, 1], [2]]
    # a - c at 0.375: (0.375 + 0.125) / 2 = 0.25 <= 0.25, so all three
    assert average_linkage(_matrix(0.125, 0.375, 0.125), radius=0.25) == [[0, 1, 2]]
    # the same chain the other way round: b - c is now the closer pair and goes first
    assert average_linkage(_matrix(0.125, 0.5, 0.0625), radius=0.25) == [[0], [1, 2]]


def test_the_link_is_the_mean_over_all_pairs_of_two_groups():
    # {0, 3} at 0.0, {1, 2} at 0.0; across: 0-1 0.125, 0-2 0.25, 1-3 0.375, 2-3 0.25 -> mean 0.25 (the pair at
    # 0.125 alone would merge them at radius 0.24; the mean does not)
    distances = _matrix(0.125, 0.25, 0.0, 0.0, 0.375, 0.25)
    assert average_linkage(distances, radius=0.24) == [[0, 3], [1, 2]]  # sorted groups, by their first channel
    assert average_linkage(distances, radius=0.25) == [[0, 1, 2, 3]]


def test_channels_never_seen_together_never_merge():
    # 0 - 1 have no distance; 2 is close to both. The first merge takes 0 and 2 (the tie goes to the lower pair),
    # then {0, 2} - 1 averages inf and 0.01: inf, however large the radius
    distances = _matrix(INF, 0.01, 0.01)
    assert average_linkage(distances, radius=10.0) == [[0, 2], [1]]
    assert average_linkage(distances, radius=INF) == [[0, 2], [1]]
    # nothing finite at all: every channel stays alone (radius inf used to merge a group with itself and drop it)
    assert average_linkage(_matrix(INF, INF, INF), radius=INF) == [[0], [1], [2]]


def test_trivial_sizes():
    assert average_linkage(torch.zeros(0, 0), radius=1.0) == []
    assert average_linkage(torch.zeros(1, 1), radius=1.0) == [[0]]
