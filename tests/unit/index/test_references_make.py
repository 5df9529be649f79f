"""Making references of given samples: a whole Reference, frozen, and its grid."""

from __future__ import annotations

import pytest
import torch
from two_conv_net import LAYER, SIZE, two_conv_net
from zennit.composites import EpsilonPlus

from glocal import Attributor
from glocal.index.references import Reference, make_reference
from glocal.viz.references import reference_grid

TARGETS = [0, 2, 1, 2]


@pytest.fixture
def data() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(4, 3, SIZE, SIZE)


def test_grid_and_reference(data: torch.Tensor) -> None:
    attributor = Attributor(two_conv_net(), EpsilonPlus())
    images = (data - data.min()) / (data.max() - data.min())
    reference = make_reference(
        attributor,
        images,
        data,
        LAYER,
        3,
        sample_ids=[10, 11, 12, 13],
        scores=[4.0, 3.0, 2.0, 1.0],
        positions=[0, 5, 77, 143],
        targets=TARGETS,
        size=24,
    )
    assert isinstance(reference, Reference)
    assert reference.tensors.shape == (4, 3, 24, 24)
    assert len(reference.images) == len(reference.boxes) == 4
    assert all(image.size == (24, 24) for image in reference.images)
    grid = reference.grid(columns=2)
    assert grid.size == (2 * 24 + 3 * 4, 18 + 2 * 24 + 3 * 4)
    assert reference_grid(list(reference.images), columns=8).size == (4 * 24 + 5 * 4, 24 + 2 * 4)
    with pytest.raises(AttributeError):
        reference.channel = 2  # type: ignore[misc]
