"""What the evaluation functions share: the explained output of each sample, step counts, permutation orders, and
chunks of whole row groups that bound the size of one batched pass."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from ..attribution.targets import resolve_targets
from ..errors import InputError, TargetError

__all__ = ["ROW_BUDGET", "Targets", "explained_targets", "group_chunks", "inverse_orders", "step_counts"]

Targets = str | int | Sequence[int] | torch.Tensor
ROW_BUDGET = 1 << 22  # input elements of one batched pass when the caller gives no batch size (16 MiB of float32)


def explained_targets(targets: Targets, output: torch.Tensor) -> list[int]:
    """One output unit per sample: ``"prediction"`` for each sample's argmax, one int for all, or one per sample."""
    if isinstance(targets, str):
        if targets != "prediction":
            raise TargetError(f"targets must be 'prediction', one output unit (int) or one per sample, got {targets!r}")
        return resolve_targets(None, output)
    return resolve_targets(targets, output)


def step_counts(total: int, steps: int) -> list[int]:
    """``steps + 1`` increasing counts from 0 to ``total``: ``k_s = floor(s * total / steps)``; every count from 0 to
    ``total`` when ``steps >= total``.

    >>> step_counts(10, 4), step_counts(3, 8)
    ([0, 2, 5, 7, 10], [0, 1, 2, 3])
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be a positive int, got {steps!r}")
    if steps >= total:
        return list(range(total + 1))
    return [s * total // steps for s in range(steps + 1)]


def inverse_orders(orders: torch.Tensor) -> torch.Tensor:
    """``(..., C)`` permutations to the place of each element in its order: ``result[..., orders[..., i]] = i``.

    >>> inverse_orders(torch.tensor([[2, 0, 1]])).tolist()
    [[1, 2, 0]]
    """
    inverse = torch.empty_like(orders)
    places = torch.arange(orders.shape[-1], device=orders.device).expand_as(orders)
    return inverse.scatter_(-1, orders, places)


def group_chunks(groups: int, rows_per_group: int, row_elements: int, batch_size: int | None) -> Iterator[range]:
    """Consecutive ranges of whole groups (each ``rows_per_group`` rows) of at most ``batch_size`` rows, at least
    one group each; without ``batch_size``, as many rows as keep a chunk's input under :data:`ROW_BUDGET` elements.

    >>> [list(r) for r in group_chunks(5, 3, 100, batch_size=7)]
    [[0, 1], [2, 3], [4]]
    """
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise InputError(f"batch_size must be a positive number of rows (or None), got {batch_size!r}")
    rows = batch_size if batch_size is not None else max(1, ROW_BUDGET // max(1, row_elements))
    per_chunk = max(1, rows // rows_per_group)
    for begin in range(0, groups, per_chunk):
        yield range(begin, min(groups, begin + per_chunk))
