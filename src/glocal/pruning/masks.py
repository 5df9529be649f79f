"""Pruning as masks: the model computes as if the plan's channels were removed, inside a ``with`` block.

Each cut output channel is set to zero after its module runs (forward hook), and each cut input channel or feature is
set to zero before its module reads it (forward pre-hook), for every module of each plan layer's torch-pruning group
(:mod:`glocal.pruning.groups`). Zeroing a channel-wise module's output and every reader's input computes exactly what
the physically smaller network computes. No parameter or buffer is touched, and the hooks are removed when the block
ends, also after an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .groups import channel_cuts, output_dim
from .selection import PruningPlan

__all__ = ["masked"]


def _zero(tensor: torch.Tensor, dim: int, channels: torch.Tensor) -> torch.Tensor:
    return tensor.index_fill(dim, channels.to(tensor.device), 0.0)


def _output_hook(dim: int, channels: torch.Tensor) -> Callable[..., torch.Tensor]:
    def hook(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return _zero(output, dim, channels)

    return hook


def _input_hook(dim: int, channels: torch.Tensor) -> Callable[..., tuple[Any, ...]]:
    def hook(_module: torch.nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        return (_zero(inputs[0], dim, channels), *inputs[1:])

    return hook


@contextmanager
def masked(model: torch.nn.Module, plan: PruningPlan, example_inputs: Any) -> Iterator[torch.nn.Module]:
    """Within the block, ``model`` computes as the physically pruned copy (:func:`~glocal.pruning.pruned_copy`).

    Parameters
    ----------
    model
        The model; its parameters and buffers are never changed, and its hooks are removed at the end.
    plan
        The channels to remove (:func:`~glocal.pruning.prune_plan`).
    example_inputs
        A batch the model accepts (a tuple for several inputs), used by torch-pruning to trace the model.

    Examples
    --------
    >>> from glocal.pruning import ChannelScores, prune_plan
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> plan = prune_plan(ChannelScores("weight", {"0": torch.tensor([1.0, 0.0, 2.0])}, 0, None, False, False), 0.34)
    >>> x = torch.rand(2, 4)
    >>> with masked(net, plan, x) as pruned:
    ...     zeroed = pruned[0](x)[:, 1]
    >>> zeroed.tolist(), len(net[0]._forward_hooks)
    ([0.0, 0.0], 0)
    """
    cuts = channel_cuts(model, plan, example_inputs)
    modules = dict(model.named_modules())
    handles = []
    try:
        for name, channels in cuts.outputs.items():
            module = modules[name]
            hook = _output_hook(output_dim(module), torch.tensor(channels, dtype=torch.long))
            handles.append(module.register_forward_hook(hook))
        for name, channels in cuts.inputs.items():
            module = modules[name]
            pre = _input_hook(output_dim(module), torch.tensor(channels, dtype=torch.long))
            handles.append(module.register_forward_pre_hook(pre))
        yield model
    finally:
        for handle in handles:
            handle.remove()
