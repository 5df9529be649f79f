"""The synthetic part images: seeded, each class's parts where their centres say."""

import math

import torch

from part_shapes import CLASSES, PARTS, part_images, part_mask


def test_symmetric_parts_are_centred_where_they_are_painted():
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    for part in ("disc", "square", "ring", "cross"):
        mask = part_mask(part, rows - 30.0, cols - 21.0, 8.0)
        assert mask.sum() > 30, part
        assert float(rows[mask].mean()) == 30.0 and float(cols[mask].mean()) == 21.0, part


def test_images_are_seeded_and_have_exactly_their_class_parts():
    a, b = part_images(8, size=48, seed=5), part_images(8, size=48, seed=5)
    assert torch.equal(a.pictures, b.pictures) and torch.allclose(a.centres, b.centres, equal_nan=True)
    assert not torch.equal(a.pictures, part_images(8, size=48, seed=6).pictures)
    for n in range(8):
        present = {PARTS[k] for k in range(len(PARTS)) if not math.isnan(float(a.centres[n, k, 0]))}
        assert present == set(CLASSES[int(a.labels[n])])
        inside = a.centres[n][~torch.isnan(a.centres[n, :, 0])]
        assert bool(((inside >= 0) & (inside <= 47)).all())  # every part centre lies in the picture
