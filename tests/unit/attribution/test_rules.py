"""The shortcuts ``glocal.attribution.rules`` takes around zennit's rule machinery give what zennit itself gives."""

from __future__ import annotations

import pytest
import torch
from zennit_rules import zennit_rules

from glocal.attribution.rules import _coefficient, _nonzero


@pytest.mark.parametrize("rule_name", list(zennit_rules()))
def test_coefficient_equals_the_reducer_on_unit_tensors(rule_name):
    rule = zennit_rules()[rule_name]
    terms = len(rule.input_modifiers)
    like = torch.zeros(2)
    for k in range(terms):
        units = [torch.ones(()) if j == k else torch.zeros(()) for j in range(terms)]
        expected = float(rule.reducer(units, units))
        assert float(_coefficient(rule.reducer, k, terms, like)) == pytest.approx(expected, abs=0)


def test_coefficient_of_a_reducer_that_needs_tensors():
    def stacked(inputs, gradients):  # torch functions only accept tensors
        return torch.stack([i * g for i, g in zip(inputs, gradients, strict=True)]).sum(0) * 3.0

    value = _coefficient(stacked, 1, 2, torch.zeros(2, dtype=torch.float64))
    assert isinstance(value, torch.Tensor) and value.dtype == torch.float64 and float(value) == 3.0


@pytest.mark.parametrize("size", [7, 1 << 17])
def test_nonzero(size):
    zeros = torch.zeros(size)
    assert not _nonzero(zeros) and not _nonzero(torch.zeros(0))
    for value in (1e-30, -2.0, float("nan")):
        probe = zeros.clone()
        probe[size // 2] = value
        assert _nonzero(probe)
    assert _nonzero(torch.zeros(size, dtype=torch.int64).index_fill_(0, torch.tensor([3]), 1))
    assert not _nonzero(torch.zeros(size, dtype=torch.bool))
