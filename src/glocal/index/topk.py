"""Streaming top-k per concept, exact under any split of the data.

The order is total: a higher score first, and between equal scores the smaller sample id first. Hence updating with
batches in any order, or merging the states of several shards, gives bit-identical results to one pass over all
data. NaN scores rank below every number.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["TopK"]


def _select(scores: torch.Tensor, ids: torch.Tensor, positions: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """The ``k`` best entries per row of ``(rows, m)`` tensors, best first."""
    scores = torch.where(scores.isnan(), -torch.inf, scores)
    empty = ids < 0
    # ties: smaller id first; empty slots (id -1) last among equal scores
    id_key = torch.where(empty, torch.iinfo(torch.int64).max, ids)
    order = id_key.argsort(dim=1, stable=True)
    scores, ids, positions = (t.gather(1, order) for t in (scores, ids, positions))
    order = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    return scores.gather(1, order), ids.gather(1, order), positions.gather(1, order)


@dataclass
class TopK:
    """The ``k`` best samples of each of ``rows`` concepts (or class-concept pairs).

    Attributes
    ----------
    scores
        ``(rows, k)`` float32, best first; ``-inf`` in unused slots.
    ids
        ``(rows, k)`` int64 sample ids; ``-1`` in unused slots.
    positions
        ``(rows, k)`` int64 flat spatial position of the sample's most relevant (or active) unit; ``-1`` unused.

    Examples
    --------
    >>> top = TopK.empty(rows=2, k=2)
    >>> top.update(torch.tensor([[1.0, 5.0], [3.0, 5.0]]), torch.tensor([10, 11]), torch.zeros(2, 2, dtype=torch.long))
    >>> top.ids.tolist()   # concept 0: samples 11 (3.0) and 10 (1.0); concept 1: a tie, the smaller id first
    [[11, 10], [10, 11]]
    """

    scores: torch.Tensor
    ids: torch.Tensor
    positions: torch.Tensor

    @classmethod
    def empty(cls, rows: int, k: int) -> TopK:
        return cls(
            scores=torch.full((rows, k), -torch.inf),
            ids=torch.full((rows, k), -1, dtype=torch.int64),
            positions=torch.full((rows, k), -1, dtype=torch.int64),
        )

    @property
    def k(self) -> int:
        return self.scores.shape[1]

    def update(self, scores: torch.Tensor, ids: torch.Tensor, positions: torch.Tensor, first_row: int = 0) -> None:
        """Add a batch: ``scores`` ``(N, R)``, sample ``ids`` ``(N,)``, ``positions`` ``(N, R)``.

        The batch's R columns update rows ``first_row`` to ``first_row + R`` (e.g. one class's block of concepts).
        """
        n, width = scores.shape
        if n == 0:
            return
        self.offer(
            torch.arange(first_row, first_row + width),
            scores.detach().cpu().T,
            ids.to(torch.int64).cpu().view(1, n).expand(width, n),
            positions.to(torch.int64).cpu().T,
        )

    def offer(self, rows: torch.Tensor, scores: torch.Tensor, ids: torch.Tensor, positions: torch.Tensor) -> None:
        """Add candidates to some rows: ``scores``, ``ids``, ``positions`` are ``(len(rows), w)``; id ``-1`` is empty.

        Candidates that rank below a row's k-th entry cannot enter it and are dropped before any sorting, so that
        a scan's later batches, which rarely change the top-k, cost a comparison instead of a sort.
        """
        scores = torch.where(scores.isnan(), -torch.inf, scores.float())
        passing = (scores >= self.scores[rows, -1:]) & (ids >= 0)
        if not bool(passing.any()):
            return
        keep_rows, keep_columns = passing.any(1), passing.any(0)
        rows, passing = rows[keep_rows], passing[keep_rows][:, keep_columns]
        scores = torch.where(passing, scores[keep_rows][:, keep_columns], -torch.inf)
        ids = torch.where(passing, ids[keep_rows][:, keep_columns], -1)
        positions = positions[keep_rows][:, keep_columns]
        self.scores[rows], self.ids[rows], self.positions[rows] = _select(
            torch.cat([self.scores[rows], scores], 1),
            torch.cat([self.ids[rows], ids], 1),
            torch.cat([self.positions[rows], positions], 1),
            self.k,
        )

    def rows(self, start: int, stop: int) -> TopK:
        """Rows ``start:stop`` as their own state, sharing memory (:meth:`offer` on this state updates in place)."""
        return TopK(self.scores[start:stop], self.ids[start:stop], self.positions[start:stop])

    def merge(self, other: TopK) -> TopK:
        """The top-k of both states together (exact: the same as one pass over both shards' data)."""
        if other.scores.shape != self.scores.shape:
            raise ValueError(
                f"cannot merge top-k states of shapes {tuple(self.scores.shape)} and {tuple(other.scores.shape)}"
            )
        scores, ids, positions = _select(
            torch.cat([self.scores, other.scores], 1),
            torch.cat([self.ids, other.ids], 1),
            torch.cat([self.positions, other.positions], 1),
            self.k,
        )
        return TopK(scores, ids, positions)
