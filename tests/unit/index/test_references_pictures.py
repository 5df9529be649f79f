"""Reference pictures: cropping, resizing, padding and fading the irrelevant part."""

from __future__ import annotations

import numpy as np
import torch

from glocal.index.references import render_references


def test_render_fades_the_irrelevant_part_and_keeps_the_size() -> None:
    torch.manual_seed(2)
    images = torch.rand(2, 3, 8, 8) * 0.5 + 0.5  # brighter than the dark background
    heatmaps = torch.zeros(2, 8, 8)
    heatmaps[:, :, :4] = 1.0  # only the left half is relevant
    full = [(0, 0, 8, 8)] * 2
    opaque = render_references(images, heatmaps, full, size=8, opacity=0.0)
    for picture, image in zip(opaque, images, strict=True):
        assert picture.size == (8, 8) and picture.mode == "RGB"
        array = torch.from_numpy(np.asarray(picture, dtype=np.float32)) / 255
        assert (array[:, 4:] == 0.0).all()  # irrelevant: flat black
        torch.testing.assert_close(array[:, :4], image[:, :, :4].permute(1, 2, 0), atol=1 / 255, rtol=0)
    grey = render_references(images, heatmaps, full, size=8, opacity=0.2, background=0.5)
    array = torch.from_numpy(np.asarray(grey[0], dtype=np.float32)) / 255
    expected = 0.2 * images[0, :, :, 4:].permute(1, 2, 0) + 0.8 * 0.5
    torch.testing.assert_close(array[:, 4:], expected, atol=1 / 255, rtol=0)


def test_render_crops_resizes_and_pads() -> None:
    images = torch.rand(1, 3, 20, 20)
    heatmaps = torch.ones(1, 20, 20)
    (picture,) = render_references(images, heatmaps, [(2, 5, 12, 10)], size=32, opacity=0.0)  # 10 x 5 crop
    assert picture.size == (32, 32)
    assert picture.getpixel((0, 16)) == (0, 0, 0)  # padding left and right of the tall crop
    assert picture.getpixel((16, 16)) != (0, 0, 0)
    (uncropped,) = render_references(images, heatmaps, [(2, 5, 12, 10)], size=32, crop=False)
    assert uncropped.getpixel((0, 16)) != (255, 255, 255)
