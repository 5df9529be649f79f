"""The paired Wilcoxon signed-rank test, as ``scipy.stats.wilcoxon`` computes it with its defaults.

For differences ``d = x - y``, zeros are dropped (``zero_method="wilcox"``), the remaining ``|d|`` are ranked (ties
get the average rank) and ``T+`` is the sum of the ranks of the positive differences. Under the null hypothesis
(the differences are symmetric about zero) every sign pattern is equally likely, which gives ``T+``'s distribution:

* **exact** -- the distribution of ``T+`` over all ``2**m`` sign patterns of the ``m`` non-zero ranks (counted by
  dynamic programming over doubled ranks, so that average ranks stay integers). Used, as scipy's ``method="auto"``
  does, for at most 50 differences without ties or zeros, and for at most 13 differences with ties or zeros (where
  scipy enumerates the sign patterns with a permutation test: the same numbers).
* **approx** -- the normal approximation otherwise: ``z = (T+ - m(m+1)/4) / s`` with
  ``s**2 = m(m+1)(2m+1)/24 - sum(t**3 - t)/48`` over the tie groups' sizes ``t``, without continuity correction.

One-sided p-values: ``"greater"`` is ``P(T >= T+)`` (x tends to be larger than y), ``"less"`` is ``P(T <= T+)``;
``"two-sided"`` is twice the smaller of the two, at most 1. The statistic is ``T+`` for one-sided tests and
``min(T+, T-)`` for the two-sided one (scipy's convention).

>>> result = wilcoxon_signed_rank([1.0, 2.0, 3.0, 4.0, 5.0], alternative="greater")
>>> result.statistic, result.pvalue, result.method   # all 5 positive: only 1 of 32 sign patterns reaches T+ = 15
(15.0, 0.03125, 'exact')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..errors import InputError

__all__ = ["ALTERNATIVES", "WilcoxonResult", "wilcoxon_signed_rank"]

ALTERNATIVES = ("two-sided", "greater", "less")
EXACT_LIMIT = 50  # at most this many differences without ties or zeros: exact distribution
EXACT_LIMIT_TIES = 13  # at most this many differences with ties or zeros: exact (conditional) distribution


@dataclass(frozen=True)
class WilcoxonResult:
    """The result of :func:`wilcoxon_signed_rank`.

    Attributes
    ----------
    statistic
        ``T+`` (one-sided) or ``min(T+, T-)`` (two-sided).
    pvalue
        The p-value under ``alternative``.
    n
        Number of non-zero differences (those that were ranked).
    zeros
        Number of zero differences (dropped).
    method
        ``"exact"`` or ``"approx"`` (normal approximation).
    alternative
        ``"two-sided"``, ``"greater"`` or ``"less"``.
    zstatistic
        ``(T+ - mean) / sd`` of the normal approximation (``nan`` for the exact method).
    """

    statistic: float
    pvalue: float
    n: int
    zeros: int
    method: str
    alternative: str
    zstatistic: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``NaN`` where undefined)."""
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"Wilcoxon signed-rank ({self.alternative}, {self.method}): statistic {self.statistic:g}, "
            f"p = {self.pvalue:.4g}, n = {self.n}"
        )


def average_ranks(values: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Ranks 1..n of ``values`` (1-d, float64), ties given the average of their ranks; and the tie groups' sizes.

    >>> ranks, ties = average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0], dtype=torch.float64))
    >>> ranks.tolist(), ties
    ([3.5, 1.0, 3.5, 2.0], [1, 1, 2])
    """
    order = torch.argsort(values, stable=True)
    ordered = values[order]
    ranks = torch.empty_like(values)
    sizes = []
    start = 0
    n = values.numel()
    while start < n:
        end = start + 1
        while end < n and ordered[end] == ordered[start]:
            end += 1
        ranks[order[start:end]] = (start + 1 + end) / 2.0  # mean of ranks start+1 .. end
        sizes.append(end - start)
        start = end
    return ranks, sizes


def sign_rank_counts(doubled_ranks: Sequence[int]) -> list[int]:
    """How many of the ``2**m`` sign patterns give each doubled sum ``2 T+ = 0, 1, ..., sum(doubled_ranks)``.

    >>> sign_rank_counts([2, 4, 6])   # ranks 1, 2, 3: T+ = 0, 1, 2, 3 (twice: 3 and 1+2), 4, 5, 6
    [1, 0, 1, 0, 1, 0, 2, 0, 1, 0, 1, 0, 1]
    """
    counts = [1]
    for rank in doubled_ranks:
        grown = counts + [0] * rank
        for total, count in enumerate(counts):
            grown[total + rank] += count
        counts = grown
    return counts


def wilcoxon_signed_rank(
    x: Sequence[float] | torch.Tensor,
    y: Sequence[float] | torch.Tensor | None = None,
    *,
    alternative: str = "two-sided",
) -> WilcoxonResult:
    """Paired Wilcoxon signed-rank test of ``x`` against ``y`` (or of ``x`` against zero when ``y`` is ``None``).

    Gives the same statistic and p-value as ``scipy.stats.wilcoxon(x, y, alternative=alternative)`` with its
    defaults (``zero_method="wilcox"``, ``correction=False``, ``method="auto"``); see the module docstring for the
    definitions.

    Parameters
    ----------
    x, y
        Paired samples of equal length (1-d).
    alternative
        ``"two-sided"``, ``"greater"`` (``x - y`` tends to be positive) or ``"less"``.

    Returns
    -------
    WilcoxonResult
        ``nan`` statistic and p-value when a difference is ``nan`` or no difference is left (all zero; the exact
        method then gives p = 1 as scipy's permutation test does for at most 13 values).

    Examples
    --------
    >>> wilcoxon_signed_rank([2.0, 3.0, 1.0], [1.0, 1.0, 1.0], alternative="greater").pvalue  # one zero dropped
    0.25
    """
    if alternative not in ALTERNATIVES:
        raise InputError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    first = torch.as_tensor(x, dtype=torch.float64).flatten()
    differences = first
    if y is not None:
        second = torch.as_tensor(y, dtype=torch.float64).flatten()
        if second.shape != first.shape:
            raise InputError(
                f"x and y must be paired samples of the same length, got {first.numel()} and {second.numel()} values"
            )
        differences = first - second
    total = differences.numel()
    if total == 0 or bool(differences.isnan().any()):
        return WilcoxonResult(math.nan, math.nan, 0, 0, "exact", alternative)
    zero = differences == 0
    zeros = int(zero.sum())
    kept = differences[~zero]
    m = kept.numel()
    ranks, ties = average_ranks(kept.abs())
    plus = float(ranks[kept > 0].sum())
    minus = float(ranks[kept < 0].sum())
    statistic = min(plus, minus) if alternative == "two-sided" else plus
    tied = any(size > 1 for size in ties)
    exact = total <= EXACT_LIMIT_TIES or (total <= EXACT_LIMIT and not tied and zeros == 0)
    if exact:
        counts = sign_rank_counts([round(2 * float(r)) for r in ranks])
        patterns = float(sum(counts))
        observed = round(2 * plus)
        less = sum(counts[: observed + 1]) / patterns
        greater = sum(counts[observed:]) / patterns
        pvalue = {"less": less, "greater": greater, "two-sided": min(1.0, 2 * min(less, greater))}[alternative]
        return WilcoxonResult(statistic, pvalue, m, zeros, "exact", alternative)
    mean = m * (m + 1) / 4
    variance = (m * (m + 1) * (2 * m + 1) - sum(t**3 - t for t in ties) / 2) / 24
    if variance <= 0:
        return WilcoxonResult(statistic, math.nan, m, zeros, "approx", alternative)
    z = (plus - mean) / math.sqrt(variance)
    lower = 0.5 * math.erfc(-z / math.sqrt(2))  # P(Z <= z)
    upper = 0.5 * math.erfc(z / math.sqrt(2))  # P(Z >= z)
    if alternative == "two-sided":
        return WilcoxonResult(statistic, min(1.0, 2 * min(lower, upper)), m, zeros, "approx", alternative, -abs(z))
    pvalue = upper if alternative == "greater" else lower
    return WilcoxonResult(statistic, pvalue, m, zeros, "approx", alternative, z)
