"""The part-location views: landmarks follow the pictures exactly."""

import json

import pytest
import torch

pytest.importorskip("skimage", reason="the views are made from scikit-image's photos")

from part_views import LANDMARKS, photo_views, view_maps


def test_a_marked_pixel_lands_where_its_landmark_is_computed(tmp_path, monkeypatch):
    # paint each landmark of chelsea as a bright 5x5 square on a black photo: in every view the brightest pixel must
    # be within a pixel or two of the computed landmark (bilinear sampling of a square blurs it by under a pixel)
    import skimage.data

    record = json.loads(LANDMARKS.read_text())["photos"]["chelsea"]
    black = torch.zeros(300, 451, 3, dtype=torch.uint8)
    row, col = record["landmarks"]["nose"]
    black[row - 2 : row + 3, col - 2 : col + 3] = 255
    monkeypatch.setattr(skimage.data, "chelsea", lambda: black.numpy())
    views = photo_views("chelsea", count=12, size=96, seed=3)
    nose = views.names.index("nose")
    checked = 0
    for v in range(12):
        where = views.landmarks[v, nose]
        if torch.isnan(where).any():
            continue
        brightest = views.pictures[v].sum(0).flatten().argmax()
        found = torch.tensor([brightest // 96, brightest % 96], dtype=torch.float32)
        assert (found - where).abs().max() <= 2.0, (v, found, where)
        checked += 1
    assert checked >= 6  # most views keep the nose in the picture


def test_views_are_seeded_and_flip_half_of_the_time():
    a, b = view_maps(200, 64, 300, 451, seed=1), view_maps(200, 64, 300, 451, seed=1)
    assert torch.equal(a, b)
    mirrored = (torch.linalg.det(a[:, :, :2]) < 0).float().mean()
    assert 0.35 < float(mirrored) < 0.65
