"""The conditional attribution engine: Concept Relevance Propagation on top of zennit's LRP rules.

Notation (as in the CRP paper): ``R`` is relevance, ``a`` an activation, ``theta`` a condition (a set of concepts per
layer), ``R(x | theta)`` the input relevance under ``theta``.

For N samples and M conditions the engine runs **one** forward pass (:class:`~glocal.Run`), then for each group of
conditions that agree on everything above their lowest conditioned layer ``l``:

1. the backward pass from the output (or ``start_layer``) down to ``l`` -- shared by the group;
2. one backward pass below ``l`` per condition, with the relevance at ``l`` masked to that condition's concepts.

Step 2 is where concepts differ; its cost per concept is about one plain gradient backward through the layers below
``l``, because each LRP rule's modified forward terms were computed once in the forward pass (see
:mod:`glocal.attribution.rules`).
Where these passes are small (a small model, one sample), the group's conditions share one vectorised backward pass,
since then the fixed cost of a pass dominates. The relevance arriving at a layer under the conditions above it is
kept for the run's later calls: the next level of an attribution graph starts where the previous level ended (both
in :mod:`glocal.attribution.gradients`).

``sole_path=True`` (zennit-crp's ``exclude_parallel``) lets relevance reach lower layers only through the conditioned
layers; the engine sorts the layers by their order in the forward pass, whatever order the user gave. With
``sole_path=False`` relevance also flows around conditioned layers (e.g. through skip connections); by linearity the
heatmap is then the part that bypasses ``l`` (computed once per group) plus the masked part through ``l``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from ..errors import ConditionError
from .conditions import Condition
from .gradients import Gradients
from .masks import Masks, RootRelevance
from .planning import PathPlanner
from .session import Probe

__all__ = ["Member", "Propagation"]

# one condition of a group: its place in the call, the condition and its conditioned layers (PathPlanner.chain)
Member = tuple[int, Condition, list[str]]


class Propagation:
    """The backward passes of one run's forward pass: conditions grouped, each group's passes shared.

    Parameters
    ----------
    planner
        The layout of the forward pass.
    masks
        The run's concept masks.
    root_relevance
        The relevance leaving the root under a condition.
    gradients
        The run's backward passes.
    probes
        The run's probes (their masks close or open a layer for a pass around it).
    """

    def __init__(
        self,
        planner: PathPlanner,
        masks: Masks,
        root_relevance: RootRelevance,
        gradients: Gradients,
        probes: Mapping[str, Probe],
    ) -> None:
        self.planner = planner
        self.masks = masks
        self.root_relevance = root_relevance
        self.gradients = gradients
        self.probes = probes
        self.start_layer = planner.start_layer

    def groups(self, conditions: Sequence[Condition]) -> list[list[Member]]:
        """The conditions, in groups that agree on everything above their lowest conditioned layer."""
        groups: dict[Any, list[Member]] = {}
        for m, condition in enumerate(conditions):
            chain = self.planner.chain(condition)
            for name, ids in condition.layers.items():  # validate ids early, with the layer named in the error
                self.masks(name, ids, condition)
            upper = tuple((name, condition.layers[name]) for name in chain[:-1])
            key = (
                condition.targets,
                upper,
                chain[-1] if chain else None,
                self.start_layer and condition.layers.get(self.start_layer),
            )
            groups.setdefault(key, []).append((m, condition, chain))
        return list(groups.values())

    def _start_records(self, record: Sequence[str]) -> dict[Any, torch.Tensor | None]:
        if self.start_layer is not None and self.start_layer in record:
            return {self.start_layer: self.root_relevance.initial()}
        return {}

    def sole_path(
        self, members: list[Member], record: Sequence[str], heatmap: bool
    ) -> Iterator[tuple[int, dict[Any, Any]]]:
        """``(m, results)`` for each member, relevance reaching lower layers only through the conditioned layers.

        ``results`` maps each of ``record`` (and ``None``: the input, with ``heatmap``) to its relevance.
        """
        _, first, chain = members[0]
        planner = self.planner
        # the relevance leaving the segment's source, computed only when a pass needs it (not when kept)
        relevance: Callable[[], torch.Tensor] = functools.cache(functools.partial(self.root_relevance, first))
        source = planner.root
        top = planner.order[self.start_layer] if self.start_layer is not None else None
        shared: dict[Any, torch.Tensor | None] = self._start_records(record)
        upper_order = top
        base = (first.targets, self.start_layer and first.layers.get(self.start_layer))
        for index, layer in enumerate(chain):
            # the relevance arriving at a layer depends only on the conditions above it: later calls of this run
            # (e.g. the next level of an attribution graph) reuse it instead of running that backward pass again
            names: list[str | None] = [layer, *planner.records_between(record, upper_order, layer, chain)]
            key = (*base, tuple((name, first.layers[name]) for name in chain[:index]))
            grads = self.gradients.cached(key, source, relevance, names)
            arriving = grads.pop(layer)
            if arriving is None:
                above = (
                    "the model output"
                    if index == 0 and self.start_layer is None
                    else repr(chain[index - 1] if index else self.start_layer)
                )
                raise ConditionError(
                    f"with sole_path=True relevance must reach layer {layer!r} from {above}, but no path leads there: "
                    f"the conditioned layers {chain} are not on one path through the model. Condition on layers "
                    "that feed each other, or pass sole_path=False."
                )
            shared.update(grads)
            if layer in record:
                shared[layer] = arriving
            if index < len(chain) - 1:
                relevance = functools.partial(self.masks.masked, arriving, layer, first)
                source = planner.below(layer)
            upper_order = planner.order[layer]
        lower: list[str | None] = [*planner.records_between(record, upper_order, None, chain)]
        if heatmap:
            lower.append(None)
        relevances: list[Callable[[], torch.Tensor]]
        if chain:
            lowest = chain[-1]
            assert arriving is not None
            member_source = planner.below(lowest)
            relevances = [functools.partial(self.masks.masked, arriving, lowest, c) for _, c, _ in members]
        else:  # no conditioned layer: every member is the same condition
            member_source = source
            relevances = [relevance] * len(members)
        keys = [(*base, tuple((name, c.layers[name]) for name in chain)) for _, c, _ in members]
        member_grads = self.gradients.members(member_source, lower, relevances, keys)
        for (m, _, _), grads in zip(members, member_grads, strict=True):
            yield m, {**shared, **grads}

    def parallel_paths(
        self, members: list[Member], record: Sequence[str], heatmap: bool
    ) -> Iterator[tuple[int, dict[Any, Any]]]:
        """``(m, results)`` for each member, relevance also flowing around the conditioned layers (see
        :meth:`sole_path`)."""
        _, first, chain = members[0]
        planner = self.planner
        if planner.parallel_is_sole(chain, record, heatmap):
            # nothing flows around the condition: the sole-path computation is the same and reuses cached prefixes
            yield from self.sole_path(members, record, heatmap)
            return
        root = planner.root
        relevance = self.root_relevance(first)
        lowest = chain[-1] if chain else None
        targets: dict[Any, torch.Tensor] = {}
        if lowest is not None:
            targets[lowest] = planner.above(lowest)
        for name in record:
            if name != self.start_layer:
                targets[name] = planner.above(name)
        if heatmap:
            targets[None] = planner.input
        masked_layers = []
        try:
            for layer in chain[:-1]:
                self.probes[layer].mask = self.masks(layer, first.layers[layer], first)
                masked_layers.append(layer)
            if lowest is not None:
                self.probes[lowest].mask = torch.zeros((), dtype=root.dtype, device=root.device)
                masked_layers.append(lowest)
            bypass = self.gradients.grad(root, targets, relevance)
        finally:
            for layer in masked_layers:
                self.probes[layer].mask = None
        bypass.update(self._start_records(record))
        if lowest is None:
            for m, _, _ in members:
                yield m, bypass
            return
        arriving = bypass.pop(lowest)
        if lowest in record:
            bypass[lowest] = arriving
        below_names = [
            name for name in record if name != self.start_layer and planner.order[name] < planner.order[lowest]
        ]
        if arriving is None:
            for m, _, _ in members:
                yield m, dict(bypass)
            return
        names: list[str | None] = [*below_names]
        if heatmap:
            names.append(None)
        relevances = [functools.partial(self.masks.masked, arriving, lowest, c) for _, c, _ in members]
        member_grads = self.gradients.members(planner.below(lowest), names, relevances)
        for (m, _, _), grads in zip(members, member_grads, strict=True):
            results = dict(bypass)
            for key, value in grads.items():
                if value is None:
                    continue
                previous = results.get(key)
                results[key] = value if previous is None else previous + value
            yield m, results
