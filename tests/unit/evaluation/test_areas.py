"""AOPC, ABPC and the normalised area against numbers worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from glocal.errors import InputError
from glocal.evaluation import abpc, aopc, normalised_area


def test_aopc_by_hand():
    curves = torch.tensor([[5.0, 4.0, 2.0], [1.0, 2.0, 0.0]])
    # sample 0: (0 + 1 + 3) / 3 = 4/3; sample 1: (0 - 1 + 1) / 3 = 0
    assert aopc(curves).tolist() == pytest.approx([4 / 3, 0.0])


def test_abpc_by_hand():
    lerf = torch.tensor([[5.0, 5.0, 4.0, 0.0]])
    morf = torch.tensor([[5.0, 1.0, 0.0, 0.0]])
    assert abpc(lerf, morf).tolist() == pytest.approx([(0 + 4 + 4 + 0) / 4])
    with pytest.raises(InputError, match="same shape"):
        abpc(lerf, morf[:, :3])


def test_normalised_area_by_hand():
    curves = torch.tensor([[4.0, 2.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    fractions = [0.0, 0.25, 0.5, 1.0]
    # sample 0 / 4: 1, .5, .5, 0 -> trapezoids .25 * .75 + .25 * .5 + .5 * .25 = .4375
    # sample 1 / 2: all .5 -> .5; sample 2: reference -1, not positive -> nan
    area = normalised_area(curves, fractions, torch.tensor([4.0, 2.0, -1.0]))
    assert area[:2].tolist() == pytest.approx([0.4375, 0.5])
    assert math.isnan(area[2])
    with pytest.raises(InputError, match="fractions"):
        normalised_area(curves, [0.0, 1.0], torch.ones(3))
