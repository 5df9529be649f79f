"""The backward passes of a run: one pass per relevance, members of a group batched, results kept across calls.

Every relevance a run sends down is a gradient ``torch.autograd.grad(source, targets, relevance)``. Where one such
pass is quick (a small model, one sample), the members of a group share one vectorised pass
(``is_grads_batched``), since then the fixed cost of a pass dominates. The relevance arriving at a layer under the
conditions above it is kept for the run's later calls: the next level of an attribution graph starts where the
previous level ended.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from ..lrp.conservation import KeptRelevance

__all__ = ["Gradients", "gradients"]

# members of one group share a vectorised backward pass when one member's pass takes less than this (its fixed
# costs dominate), up to this many elements of the largest probed tensor
_BATCH_BELOW_SECONDS = 1e-3
_BATCHED_ELEMENTS = 1 << 20
# relevances computed for the lowest conditioned layer of a call that a run keeps for later calls (elements)
_KEPT_ELEMENTS = 1 << 22


def gradients(
    source: torch.Tensor, targets: Mapping[Any, torch.Tensor], relevance: torch.Tensor
) -> dict[Any, torch.Tensor | None]:
    """The gradient of ``source`` with ``relevance`` as its upstream gradient at each of ``targets`` (``None`` where
    ``source`` does not depend on it); the graph is kept for later passes."""
    if not targets:
        return {}
    grads = torch.autograd.grad(
        source, list(targets.values()), grad_outputs=relevance, retain_graph=True, allow_unused=True
    )
    return dict(zip(targets.keys(), grads, strict=True))


class Gradients:
    """The backward passes of one run, with what it learns about them (timing, batching) and what it keeps.

    Parameters
    ----------
    targets
        The tensors whose gradients give the relevance arriving at named layers (``None``: the input).
    member_elements
        Elements one member's backward pass handles at most (a probed activation or the input, whole batch).

    Attributes
    ----------
    arriving
        Relevance arriving at a layer (or the input: ``None``) under a key of the conditions above it
        (see :meth:`cached`).
    kept_elements
        Elements of member results in ``arriving``, capped at ``_KEPT_ELEMENTS``.
    batch_members
        Whether members may still share a vectorised pass (false once the model's backward pass could not be
        vectorised).
    pass_seconds
        How long one member's backward pass took (the first one timed).
    kept_relevance
        The current call's heatmap rows' sums for the conservation check, or ``None`` when the call does not check.
    """

    def __init__(
        self, targets: Callable[[Sequence[str | None]], dict[str | None, torch.Tensor]], member_elements: int
    ) -> None:
        self.targets = targets
        self.member_elements = member_elements
        self.arriving: dict[tuple[Any, ...], torch.Tensor | None] = {}
        self.kept_elements = 0
        self.batch_members = True
        self.pass_seconds: float | None = None
        self.kept_relevance: KeptRelevance | None = None

    def grad(
        self, source: torch.Tensor, targets: Mapping[Any, torch.Tensor], relevance: torch.Tensor
    ) -> dict[Any, torch.Tensor | None]:
        """One plain backward pass (see :func:`gradients`)."""
        return gradients(source, targets, relevance)

    def cached(
        self,
        key: tuple[Any, ...],
        source: torch.Tensor,
        relevance: Callable[[], torch.Tensor],
        names: Sequence[str | None],
    ) -> dict[str | None, torch.Tensor | None]:
        """The relevance arriving at ``names`` (``None``: the input) from ``source``, reusing what this run has seen.

        ``key`` identifies ``relevance`` (the targets, the start layer's concepts and the conditions down to the
        layer whose output ``source`` is): the same key and name always mean the same gradient.
        """
        missing = [name for name in names if (key, name) not in self.arriving]
        if missing:
            for name, grad in self.grad(source, self.targets(missing), relevance()).items():
                self.arriving[key, name] = grad
        return {name: self.arriving[key, name] for name in names}

    def members(
        self,
        source: torch.Tensor,
        names: Sequence[str | None],
        relevances: Sequence[Callable[[], torch.Tensor]],
        keys: Sequence[tuple[Any, ...] | None] | None = None,
    ) -> Iterator[dict[Any, torch.Tensor | None]]:
        """The relevance arriving at ``names`` (``None``: the input) from ``source`` for each of ``relevances`` (each
        computed only when its pass runs).

        Members whose backward passes are quick share one vectorised backward pass (``is_grads_batched``): for a
        small model the fixed cost of a pass, not the arithmetic, dominates. The run times its first member pass;
        below ``_BATCH_BELOW_SECONDS`` later members go in batches of at most ``_BATCHED_ELEMENTS`` elements of the
        largest tensor the run probed, so memory stays bounded. A model whose backward pass cannot be vectorised
        falls back to one pass per member for the rest of the run. With ``keys``
        (see :meth:`cached`), results this run already has are reused and new ones are kept, up to
        ``_KEPT_ELEMENTS`` elements, for later calls (a graph's next level starts where this one ended).
        """
        pending: list[tuple[tuple[Any, ...] | None, torch.Tensor]] = []
        for relevance, key in zip(relevances, keys if keys is not None else itertools.repeat(None), strict=False):
            if key is not None and all((key, name) in self.arriving for name in names):
                yield from self.batched(source, names, pending)
                pending = []
                yield {name: self.arriving[key, name] for name in names}
                continue
            pending.append((key, relevance()))
            if len(pending) >= self.batch_size(names):
                yield from self.batched(source, names, pending)
                pending = []
        yield from self.batched(source, names, pending)

    def batch_size(self, names: Sequence[str | None]) -> int:
        """How many members share one backward pass to ``names``."""
        quick = self.pass_seconds is not None and self.pass_seconds < _BATCH_BELOW_SECONDS
        if not (quick and names and self.batch_members):
            return 1
        return max(1, _BATCHED_ELEMENTS // self.member_elements)

    def batched(
        self,
        source: torch.Tensor,
        names: Sequence[str | None],
        pending: list[tuple[tuple[Any, ...] | None, torch.Tensor]],
    ) -> list[dict[Any, torch.Tensor | None]]:
        """The passes of ``pending`` ``(key, relevance)`` members: one vectorised pass, or one pass each."""
        if not pending:
            return []
        targets = self.targets(names)
        results: list[dict[Any, torch.Tensor | None]] | None = None
        relevances = [relevance for _, relevance in pending]
        if len(pending) > 1 and names and self.batch_members and not any(r.requires_grad for r in relevances):
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    batched = torch.autograd.grad(
                        source,
                        list(targets.values()),
                        grad_outputs=torch.stack(relevances),
                        retain_graph=True,
                        allow_unused=True,
                        is_grads_batched=True,
                    )
            except (RuntimeError, NotImplementedError):
                self.batch_members = False
            else:
                for w in caught:
                    if "performance drop" in str(w.message):
                        self.batch_members = False  # an op without a vectorised rule: later, a plain loop
                    else:
                        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                results = [
                    {name: None if g is None else g[i] for name, g in zip(names, batched, strict=True)}
                    for i in range(len(pending))
                ]
        if results is None:
            results = []
            for relevance in relevances:
                start = time.perf_counter()
                results.append(self.grad(source, targets, relevance))
                if self.pass_seconds is None and names:  # the first pass tells whether batching pays off
                    self.pass_seconds = time.perf_counter() - start
        if self.kept_relevance is not None and None in names:  # the heatmap rows' sums, for the conservation check
            for relevance, grads in zip(relevances, results, strict=True):
                heatmap = grads.get(None)
                if heatmap is not None:
                    self.kept_relevance.add(relevance, heatmap)
        for (key, _), grads in zip(pending, results, strict=True):
            # relevance at layers is what later calls start from; heatmaps are not kept
            kept = {name: grad for name, grad in grads.items() if name is not None}
            size = sum(g.numel() for g in kept.values() if g is not None)
            if key is not None and kept and self.kept_elements + size <= _KEPT_ELEMENTS:
                self.kept_elements += size
                for name, grad in kept.items():
                    self.arriving[key, name] = grad
        return results
