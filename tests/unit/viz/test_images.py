"""Heatmap images: colours and scaling carry the numbers they should."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glocal.viz.images import heatmap_image

WHITE, RED, BLUE = (255, 255, 255), (255, 0, 0), (0, 0, 255)


def test_zero_maps_to_the_colour_map_centre_and_signs_to_red_and_blue():
    image = heatmap_image(torch.tensor([[-3.0, -1.5, 0.0, 1.5, 3.0]]))
    assert image.mode == "RGB" and image.size == (5, 1)
    pixels = [image.getpixel((x, 0)) for x in range(5)]
    assert pixels[0] == BLUE and pixels[2] == WHITE and pixels[4] == RED
    # half of the largest value is half way to the end colour: pale blue, pale red
    light_blue, light_red = pixels[1], pixels[3]
    assert light_blue[2] == 255 and 110 < light_blue[0] == light_blue[1] < 145
    assert light_red[0] == 255 and 110 < light_red[1] == light_red[2] < 145


def test_symmetric_scaling_uses_the_largest_absolute_value():
    # -1 is a third of the bound 3, so it is much paler than the full blue it would be with min-max scaling.
    image = heatmap_image(torch.tensor([[-1.0, 0.0, 3.0]]))
    assert image.getpixel((1, 0)) == WHITE
    assert image.getpixel((2, 0)) == RED
    assert image.getpixel((0, 0))[0] > 150  # pale blue: red and green channels still high


def test_vmax_gives_several_heatmaps_one_scale():
    image = heatmap_image(torch.tensor([[1.0, 2.0]]), vmax=2.0)
    assert image.getpixel((1, 0)) == RED
    assert image.getpixel((0, 0)) != RED


def test_percentile_saturates_the_extremes():
    heatmap = torch.cat([torch.full((99,), 1.0), torch.tensor([100.0])]).view(1, 100)
    plain = heatmap_image(heatmap)
    clipped = heatmap_image(heatmap, percentile=90)
    assert plain.getpixel((0, 0))[1] > 240  # 1 out of 100: nearly white
    assert clipped.getpixel((0, 0)) == RED and clipped.getpixel((99, 0)) == RED


def test_all_zero_heatmap_is_all_centre_colour():
    image = heatmap_image(torch.zeros(3, 4))
    assert np.all(np.asarray(image) == 255)


def test_unsigned_scaling_maps_minimum_and_maximum_to_the_ends():
    image = heatmap_image(np.array([[2.0, 3.0, 4.0]]), symmetric=False)
    assert [image.getpixel((x, 0)) for x in range(3)] == [BLUE, WHITE, RED]


def test_other_zennit_colour_maps():
    image = heatmap_image(torch.tensor([[-1.0, 0.0, 1.0]]), cmap="coldnhot")
    assert image.getpixel((1, 0)) == (0, 0, 0)  # coldnhot is centred on black
    assert image.getpixel((2, 0)) == WHITE


def test_heatmap_image_rejects_batches_and_nan():
    with pytest.raises(ValueError, match=r"shape \(H, W\)"):
        heatmap_image(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="NaN"):
        heatmap_image(torch.tensor([[float("nan")]]))
