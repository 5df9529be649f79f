"""The blur and peak of heatmaps against hand-computed Gaussian weights and scipy."""

from __future__ import annotations

import math

import pytest
import torch

from glocal.errors import InputError
from glocal.parts.peaks import gaussian_blur, heatmap_peaks

# sigma = 1: the kernel runs over k = -3..3 (3 sigma), weights exp(-k^2 / 2) / S with
# S = 1 + 2 (e^-0.5 + e^-2 + e^-4.5) = 1 + 2 (0.60653 + 0.13534 + 0.01111) = 2.50596
S = 1 + 2 * (math.exp(-0.5) + math.exp(-2) + math.exp(-4.5))
W = [math.exp(-(k**2) / 2) / S for k in range(4)]  # 0.39905, 0.24203, 0.05401, 0.00443


def _impulse(height: int, width: int, row: int, col: int, value: float = 1.0) -> torch.Tensor:
    heatmap = torch.zeros(1, height, width, dtype=torch.float64)
    heatmap[0, row, col] = value
    return heatmap


def test_an_interior_impulse_spreads_by_the_separable_weights_and_keeps_its_sum():
    blurred = gaussian_blur(_impulse(9, 9, 4, 4), sigma=1.0)[0]  # 3 pixels from every border: nothing is clipped
    assert float(blurred[4, 4]) == pytest.approx(W[0] ** 2)  # 0.15924
    assert float(blurred[4, 5]) == pytest.approx(W[0] * W[1])  # 0.09658
    assert float(blurred[6, 7]) == pytest.approx(W[2] * W[3])
    assert float(blurred[0, 4]) == 0.0  # 4 rows away: beyond the kernel
    assert float(blurred.sum()) == pytest.approx(1.0)
    assert torch.equal(blurred, blurred.T)


def test_borders_are_replicated():
    # at the corner, rows and columns -3..-1 repeat the impulse's own row and column: the corner keeps
    # (w0 + w1 + w2 + w3)^2 = 0.69952^2 = 0.48933
    blurred = gaussian_blur(_impulse(9, 9, 0, 0), sigma=1.0)[0]
    assert float(blurred[0, 0]) == pytest.approx(sum(W) ** 2)
    # column 1 reads columns -2..4; -2, -1 (replicas) and 0 hold the impulse, at offsets 3, 2, 1
    assert float(blurred[0, 1]) == pytest.approx(sum(W) * (W[1] + W[2] + W[3]))  # 0.69952 * 0.30047
    # per axis, column c >= 0 keeps the weights of offsets -c..-3: 0.69952 + 0.30047 + 0.05844 + 0.00443 = 1.06287;
    # the total is its square, 1.12969, not 1: a border pixel's relevance counts more than once
    along = sum(sum(W[k] for k in range(c, 4)) for c in range(4))
    assert float(blurred.sum()) == pytest.approx(along**2)


def test_sigma_zero_is_the_identity():
    heatmaps = torch.rand(2, 5, 7, generator=torch.Generator().manual_seed(0))
    assert gaussian_blur(heatmaps, 0.0) is heatmaps
    flat = heatmaps.flatten(1).argmax(1)
    assert heatmap_peaks(heatmaps, 0.0).tolist() == [[float(i // 7), float(i % 7)] for i in flat.tolist()]


@pytest.mark.parametrize("sigma", [1.0, 1.5])
def test_parity_with_scipy(sigma):
    ndimage = pytest.importorskip("scipy.ndimage")
    # scipy's radius int(3 sigma + 0.5) equals ours, ceil(3 sigma), for these sigmas; 'nearest' replicates borders
    heatmaps = torch.rand(2, 11, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = gaussian_blur(heatmaps, sigma)
    for n in range(2):
        theirs = ndimage.gaussian_filter(heatmaps[n].numpy(), sigma, mode="nearest", truncate=3.0)
        assert torch.allclose(ours[n], torch.from_numpy(theirs), atol=1e-12)


@pytest.mark.parametrize(("bright", "peak"), [(2.4, [6.0, 2.0]), (2.5, [1.0, 7.0])])
def test_a_dense_blob_beats_a_brighter_pixel_once_blurred(bright, peak):
    # a 3 x 3 block of 0.5 centred on (6, 2) against one pixel at (1, 7). Blurred (sigma 1) the block's centre is
    # 0.5 (w0 + 2 w1)^2 = 0.38994 and the pixel bright * w0^2 = bright * 0.15924: the pixel wins above
    # 0.5 (1 + 2 e^-0.5)^2 = 2.4488
    heatmap = torch.zeros(1, 9, 9)
    heatmap[0, 5:8, 1:4] = 0.5
    heatmap[0, 1, 7] = bright
    assert heatmap_peaks(heatmap, sigma=0).tolist() == [[1.0, 7.0]]
    assert heatmap_peaks(heatmap, sigma=1.0).tolist() == [peak]


def test_ties_go_to_the_first_pixel_in_row_major_order():
    heatmaps = torch.zeros(3, 8, 8)
    heatmaps[0, 5, 2] = heatmaps[0, 2, 5] = 1.0  # same value, same neighbourhood: (2, 5) comes first
    heatmaps[1, 4, 4] = 1.0
    for sigma in (0.0, 1.0):
        # the all-zero third heatmap peaks at (0, 0)
        assert heatmap_peaks(heatmaps, sigma).tolist() == [[2.0, 5.0], [4.0, 4.0], [0.0, 0.0]]


def test_peaks_are_per_heatmap_and_follow_non_square_shapes():
    heatmaps = torch.zeros(2, 4, 10)
    heatmaps[0, 3, 9] = 1.0
    heatmaps[1, 0, 6] = 1.0
    peaks = heatmap_peaks(heatmaps, sigma=0.5)
    assert peaks.dtype == torch.float32 and peaks.tolist() == [[3.0, 9.0], [0.0, 6.0]]


def test_bad_input():
    with pytest.raises(InputError, match=r"heatmaps must be \(N, height, width\), got \(8, 8\)"):
        gaussian_blur(torch.zeros(8, 8), 1.0)
    with pytest.raises(InputError, match=r"sigma must be >= 0 pixels, got -1\.0"):
        gaussian_blur(torch.zeros(1, 8, 8), -1.0)
    with pytest.raises(InputError, match=r"got \(1, 1, 8, 8\)"):
        heatmap_peaks(torch.zeros(1, 1, 8, 8), 1.0)
