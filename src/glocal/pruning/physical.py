"""Pruning for real: a deep copy of the model with the plan's channels removed by torch-pruning.

The copy's layers are smaller (a conv loses output channels, its batch norm and the next layer's inputs shrink with
it, coupled skip-connection channels go together), and it computes what :func:`~glocal.pruning.masked` computes.
Parameters and multiply-accumulate operations (MACs, torch-pruning's count) are measured before and after.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from ..attribution.layers import resolve_layers
from .groups import channel_cuts, dependency_graph, layer_group
from .selection import PruningPlan

__all__ = ["PrunedModel", "pruned_copy"]


@dataclass(frozen=True)
class PrunedModel:
    """A physically pruned copy and what it saved. ``flops_*`` count multiply-accumulates (MACs) of one pass over
    the example inputs."""

    model: torch.nn.Module
    plan: PruningPlan
    parameters_before: int
    parameters_after: int
    flops_before: int
    flops_after: int

    @property
    def sparsity(self) -> float:
        """The share of channels the plan removes (:attr:`PruningPlan.sparsity`)."""
        return self.plan.sparsity

    @property
    def parameter_ratio(self) -> float:
        """Parameters after over parameters before."""
        return self.parameters_after / self.parameters_before if self.parameters_before else 1.0

    @property
    def flop_ratio(self) -> float:
        """MACs after over MACs before."""
        return self.flops_after / self.flops_before if self.flops_before else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_dict(),
            "parameters_before": self.parameters_before,
            "parameters_after": self.parameters_after,
            "flops_before": self.flops_before,
            "flops_after": self.flops_after,
            "sparsity": self.sparsity,
        }


def _count(model: torch.nn.Module, example_inputs: Any) -> tuple[int, int]:
    import torch_pruning as tp

    macs, parameters = tp.utils.count_ops_and_params(model, example_inputs)
    return int(macs), int(parameters)


def pruned_copy(model: torch.nn.Module, plan: PruningPlan, example_inputs: Any) -> PrunedModel:
    """A deep copy of ``model`` without the plan's channels (the model itself is not changed).

    Parameters
    ----------
    model
        The model to copy.
    plan
        The channels to remove (:func:`~glocal.pruning.prune_plan`), in the model's channel indices.
    example_inputs
        A batch the model accepts (a tuple for several inputs), used to trace the model and count MACs.

    Examples
    --------
    >>> from glocal.pruning import ChannelScores, prune_plan
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> plan = prune_plan(ChannelScores("weight", {"0": torch.tensor([1.0, 0.0, 2.0])}, 0, None, False, False), 0.34)
    >>> pruned = pruned_copy(net, plan, torch.rand(1, 4))
    >>> pruned.model[0], pruned.parameters_before, pruned.parameters_after
    (Linear(in_features=4, out_features=2, bias=True), 23, 16)
    """
    cuts = channel_cuts(model, plan, example_inputs)
    twin = copy.deepcopy(model)
    modes = {name: module.training for name, module in twin.named_modules()}
    twin.eval()  # tracing and counting run the copy: in training mode they would move its batch-norm statistics
    flops_before, parameters_before = _count(twin, example_inputs)
    graph = dependency_graph(twin, example_inputs)
    modules = resolve_layers(twin, plan.removed)
    gone: dict[str, set[int]] = {}
    for layer, removed in plan.removed.items():
        already = gone.get(layer, set())
        todo = [c for c in removed if c not in already]
        if todo:
            # indices shift as channels go: map the plan's (original) indices to the layer's current ones
            position = {c: i for i, c in enumerate(c for c in range(plan.channels[layer]) if c not in already)}
            layer_group(graph, modules[layer], layer, [position[c] for c in todo]).prune()
        for name, cut in cuts.by_layer.get(layer, {}).items():
            gone.setdefault(name, set()).update(cut)
    flops_after, parameters_after = _count(twin, example_inputs)
    for name, module in twin.named_modules():
        module.training = modes.get(name, module.training)
    return PrunedModel(twin, plan, parameters_before, parameters_after, flops_before, flops_after)
