"""Which layers a backward pass reaches: the probed layers in forward order, and what feeds what in the autograd graph.

A run plans each group of conditions from its forward pass: the conditioned layers sorted by the forward pass
(:meth:`PathPlanner.chain`), the recorded layers a sole-path segment reaches (:meth:`PathPlanner.records_between`),
and whether any relevance can pass around the conditioned layers at all (:meth:`PathPlanner.parallel_is_sole`). The
graph walks are cached for the run.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .conditions import Condition
from .session import Probe

__all__ = ["PathPlanner"]


class PathPlanner:
    """The layout of one forward pass, as the backward passes of a run need it.

    Parameters
    ----------
    probes
        The run's probes (by layer name), after the forward pass.
    input
        The input, as the forward pass saw it.
    root
        Where the backward pass starts: the model output, or ``start_layer``'s activation.
    start_layer
        The layer whose activation is ``root``, or ``None`` for the model output.
    """

    def __init__(
        self, probes: Mapping[str, Probe], input: torch.Tensor, root: torch.Tensor, start_layer: str | None
    ) -> None:
        self.probes = probes
        self.input = input
        self.root = root
        self.start_layer = start_layer
        self.order = {name: probe.order for name, probe in probes.items()}
        self._feeds: dict[tuple[str, str], bool] = {}
        self._around: dict[tuple[str | None, str], bool] = {}

    def below(self, layer: str) -> torch.Tensor:
        """The layer's activation, where masked relevance is sent down from."""
        tensor = self.probes[layer].below
        assert tensor is not None
        return tensor

    def above(self, layer: str) -> torch.Tensor:
        """The layer's output as the rest of the model sees it, where relevance arrives."""
        tensor = self.probes[layer].above
        assert tensor is not None
        return tensor

    def targets(self, names: Sequence[str | None]) -> dict[str | None, torch.Tensor]:
        """The tensors whose gradients are the relevance arriving at ``names`` (``None``: the input)."""
        return {name: self.input if name is None else self.above(name) for name in names}

    def chain(self, condition: Condition) -> list[str]:
        """Conditioned layers below the start, latest in the forward pass first."""
        layers = [name for name in condition.layers if name != self.start_layer]
        if self.start_layer is not None:
            start = self.order[self.start_layer]
            layers = [name for name in layers if self.order[name] < start]
        return sorted(layers, key=lambda name: self.order[name], reverse=True)

    def records_between(
        self, record: Sequence[str], upper: int | None, lower: str | None, chain: Sequence[str]
    ) -> list[str]:
        """Recorded layers (not in ``chain``) that ran before order ``upper`` and lie on a path from ``lower``.

        In a sole-path backward segment that ends at conditioned layer ``lower``, only layers fed by ``lower`` receive
        relevance; a layer on a parallel branch would pass relevance around it. ``None`` leaves a side open.
        """
        out = []
        for name in record:
            if name in chain or name == self.start_layer:
                continue
            order = self.order[name]
            if upper is not None and order >= upper:
                continue
            if lower is not None and (order <= self.order[lower] or not self.feeds(lower, name)):
                continue
            out.append(name)
        return out

    def feeds(self, lower: str, upper: str) -> bool:
        """Whether layer ``lower``'s output reaches layer ``upper``'s in the forward graph (walks autograd nodes)."""
        key = (lower, upper)
        if key not in self._feeds:
            above = self.above(lower)
            goal = above.grad_fn
            start = self.below(upper).grad_fn
            seen: set[Any] = set()
            stack = [start]
            found = False
            while stack and not found:
                node = stack.pop()
                if node is None or node in seen:
                    continue
                if node is goal if goal is not None else getattr(node, "variable", None) is above:
                    found = True  # the gate's node, or for a layer that starts the graph, its leaf's node
                    break
                seen.add(node)
                stack.extend(next_node for next_node, _ in node.next_functions)
            self._feeds[key] = found
        return self._feeds[key]

    def around(self, target: str | None, blocked: str) -> bool:
        """Whether relevance from the root reaches layer ``target`` (``None``: the input) avoiding layer ``blocked``."""
        key = (target, blocked)
        if key not in self._around:
            goal = self.input if target is None else self.above(target)
            goal_node = goal.grad_fn
            wall = self.above(blocked).grad_fn
            seen: set[Any] = set()
            stack = [self.root.grad_fn]
            found = False
            while stack and not found:
                node = stack.pop()
                if node is None or node in seen or node is wall:
                    continue
                if node is goal_node if goal_node is not None else getattr(node, "variable", None) is goal:
                    found = True
                    break
                seen.add(node)
                stack.extend(next_node for next_node, _ in node.next_functions)
            self._around[key] = found
        return self._around[key]

    def parallel_is_sole(self, chain: list[str], record: Sequence[str], heatmap: bool) -> bool:
        """Whether no relevance can pass around the conditioned layers: then both path settings agree exactly.

        Every path from the root to each conditioned layer crosses the one above it, and every recorded layer (and
        the input, for heatmaps) lies below the lowest one and is reached only through it. Without conditioned
        layers there is nothing to pass around.
        """
        if not chain:
            return True
        if self.start_layer is not None:
            return False
        lowest = chain[-1]
        if any(self.around(lower, upper) for upper, lower in itertools.pairwise(chain)):
            return False
        for name in record:
            if name in chain or self.order[name] >= self.order[lowest] or self.around(name, lowest):
                return False
        return not (heatmap and self.around(None, lowest))
