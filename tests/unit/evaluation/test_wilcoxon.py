"""The Wilcoxon signed-rank test against scipy.stats.wilcoxon (its defaults) on many random cases: small and large
samples, ties, zeros, every alternative; and one case worked by hand."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from glocal.errors import InputError
from glocal.evaluation import wilcoxon_signed_rank
from glocal.evaluation.wilcoxon import average_ranks, sign_rank_counts

scipy_stats = pytest.importorskip("scipy.stats")


def cases():
    rng = np.random.default_rng(0)
    for case in range(120):
        n = int(rng.integers(2, 80))
        kind = case % 4
        if kind == 0:  # continuous, shifted: no ties
            yield rng.normal(size=n), rng.normal(size=n) + 0.3
        elif kind == 1:  # small integers against zero: many ties and zeros
            yield rng.integers(-3, 4, size=n).astype(float), None
        elif kind == 2:  # rounded: some ties, some zeros
            yield rng.normal(size=n).round(1), rng.normal(size=n).round(1)
        else:  # one-sample, all positive
            yield rng.exponential(size=n), None


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_matches_scipy(alternative):
    methods = set()
    for x, y in cases():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = scipy_stats.wilcoxon(x, y, alternative=alternative)
        got = wilcoxon_signed_rank(x, y, alternative=alternative)
        methods.add(got.method)
        assert got.statistic == pytest.approx(float(expected.statistic), abs=1e-9)
        assert got.pvalue == pytest.approx(float(expected.pvalue), rel=1e-9, abs=1e-12)
    assert methods == {"exact", "approx"}


def test_by_hand():
    # d = (1, -2, 3, 0, 4): the zero is dropped; ranks of |d| = 1, 2, 3, 4; T+ = 1 + 3 + 4 = 8, T- = 2.
    # T+ >= 8 in 3 of 16 sign patterns ({1,3,4}, {2,3,4}, {1,2,3,4}), so p(greater) = 3/16.
    result = wilcoxon_signed_rank([1.0, -2.0, 3.0, 0.0, 4.0], alternative="greater")
    assert (result.statistic, result.pvalue, result.n, result.zeros, result.method) == (8.0, 3 / 16, 4, 1, "exact")
    # two-sided: statistic min(8, 2) = 2, p = 2 * min(P(T <= 8) = 14/16, 3/16) = 6/16
    assert wilcoxon_signed_rank([1.0, -2.0, 3.0, 0.0, 4.0]).pvalue == pytest.approx(6 / 16)
    assert average_ranks(torch.tensor([2.0, 2.0, 1.0], dtype=torch.float64))[0].tolist() == [2.5, 2.5, 1.0]
    assert sum(sign_rank_counts([2, 4, 6, 8])) == 16
    assert result.to_dict()["pvalue"] == 3 / 16


def test_bad_input():
    with pytest.raises(InputError, match="same length"):
        wilcoxon_signed_rank([1.0, 2.0], [1.0])
    with pytest.raises(InputError, match="alternative"):
        wilcoxon_signed_rank([1.0, 2.0], alternative="bigger")
    assert np.isnan(wilcoxon_signed_rank([1.0, float("nan")]).pvalue)
