"""Every module a plan touches, found with torch-pruning's dependency graph.

Removing output channel ``c`` of a conv also removes channel ``c`` of the batch norm after it, of every layer added to
it (a skip connection couples them) and the matching inputs of every layer that reads it (after a ``Flatten``, the
block of features channel ``c`` became). torch-pruning traces the model once and returns that *group*;
:func:`channel_cuts` turns each plan layer's group into the output channels and input channels cut per module, in
the original model's indices. Masks (:func:`~glocal.pruning.masked`) and the physical copy
(:func:`~glocal.pruning.pruned_copy`) both work from these groups, so they remove the same channels.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..attribution.layers import resolve_layers
from ..errors import InputError, LayerError
from .selection import PruningPlan

__all__ = ["ChannelCuts", "channel_cuts", "dependency_graph", "layer_group", "output_dim"]

# modules whose cut output channels can be zeroed with the same effect as removing them (channel-wise modules);
# a layer norm or group norm would compute different statistics without the channel, so it is refused
_OUTPUT_MASKABLE = (
    torch.nn.modules.conv._ConvNd,
    torch.nn.Linear,
    torch.nn.modules.batchnorm._BatchNorm,
    torch.nn.modules.instancenorm._InstanceNorm,
    torch.nn.PReLU,
)
_INPUT_MASKABLE = (torch.nn.modules.conv._ConvNd, torch.nn.Linear)


def output_dim(module: torch.nn.Module) -> int:
    """The dimension of ``module``'s output (and input) that holds its channels: last for linear layers, else 1."""
    return -1 if isinstance(module, torch.nn.Linear) else 1


@dataclass(frozen=True)
class ChannelCuts:
    """Per module name, the output channels and the input channels (features) that the plan removes, and per plan
    layer the output channels its own group removes from each module."""

    outputs: Mapping[str, tuple[int, ...]]
    inputs: Mapping[str, tuple[int, ...]]
    by_layer: Mapping[str, Mapping[str, tuple[int, ...]]]


def dependency_graph(model: torch.nn.Module, example_inputs: Any) -> Any:
    """torch-pruning's dependency graph of ``model`` traced on ``example_inputs`` (a clear error when it cannot)."""
    import torch_pruning as tp

    try:
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
    except Exception as error:  # torch-pruning raises assorted errors on models it cannot trace
        raise InputError(
            f"torch-pruning could not trace the model on the example inputs ({type(error).__name__}: {error}). "
            "Pass example_inputs the model accepts (e.g. one batch of data); models with data-dependent control "
            "flow or unsupported operations cannot be pruned structurally."
        ) from error


def layer_group(graph: Any, module: torch.nn.Module, layer: str, channels: list[int]) -> Any:
    """The torch-pruning group that removes output ``channels`` of ``module`` (named ``layer``)."""
    pruner = graph.get_pruner_of_module(module)
    prune = getattr(pruner, "prune_out_channels", None)
    if pruner is None or prune is None or not isinstance(module, _OUTPUT_MASKABLE):
        raise LayerError(
            f"layer {layer!r} is a {type(module).__name__}, whose output channels cannot be removed; prune the conv "
            "or linear layer that makes those channels"
        )
    return graph.get_pruning_group(module, prune, idxs=channels)


def _check_not_output(model: torch.nn.Module, modules: dict[str, torch.nn.Module], example_inputs: Any) -> None:
    outputs: dict[str, Any] = {}

    def keep(name: str, output: Any) -> None:
        outputs.setdefault(name, output)

    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: keep(name, out)) for name, module in modules.items()
    ]
    try:
        with torch.no_grad():
            result = model(*example_inputs) if isinstance(example_inputs, tuple) else model(example_inputs)
    except (RuntimeError, ValueError, TypeError) as error:
        raise InputError(
            f"the model failed on the example inputs ({type(error).__name__}: {error}); pass example_inputs the "
            "model accepts, e.g. one batch of its data (a tuple for several inputs)"
        ) from error
    finally:
        for handle in handles:
            handle.remove()
    for name, out in outputs.items():
        if out is result:
            raise LayerError(
                f"layer {name!r} makes the model's output; removing its channels would remove outputs. Prune "
                "hidden layers only."
            )


def channel_cuts(model: torch.nn.Module, plan: PruningPlan, example_inputs: Any) -> ChannelCuts:
    """What ``plan`` removes from every module of ``model`` (traced on a copy; the model is not touched)."""
    twin = copy.deepcopy(model)
    layers = [name for name, removed in plan.removed.items() if removed]
    modules = resolve_layers(twin, plan.removed)
    for name, module in modules.items():
        count = _out_channels(module)
        if count is not None and count != plan.channels[name]:
            raise LayerError(
                f"the plan has {plan.channels[name]} channels for layer {name!r}, but the model's layer has {count}; "
                "make the plan from scores of this model"
            )
    _check_not_output(twin, {name: modules[name] for name in layers}, example_inputs)
    graph = dependency_graph(twin, example_inputs)
    names = {id(module): name for name, module in twin.named_modules()}
    outputs: dict[str, set[int]] = {}
    inputs: dict[str, set[int]] = {}
    by_layer: dict[str, dict[str, tuple[int, ...]]] = {}
    for layer in layers:
        group = layer_group(graph, modules[layer], layer, list(plan.removed[layer]))
        by_layer[layer] = {}
        for dependency, ids in group:
            module = dependency.target.module
            found = names.get(id(module))
            if found is None:  # an operation (add, flatten, ...) torch-pruning tracks without parameters
                continue
            name = found
            cut = [int(getattr(i, "idx", i)) for i in ids]
            if dependency.handler.__name__ == "prune_out_channels":
                if not isinstance(module, _OUTPUT_MASKABLE):
                    raise LayerError(_unsupported(layer, name, module))
                outputs.setdefault(name, set()).update(cut)
                by_layer[layer][name] = tuple(sorted(cut))
            else:
                if not isinstance(module, _INPUT_MASKABLE):
                    raise LayerError(_unsupported(layer, name, module))
                inputs.setdefault(name, set()).update(cut)
    for name, removed in outputs.items():
        count = _out_channels(dict(twin.named_modules())[name])
        if count is not None and len(removed) >= count:
            raise InputError(
                f"the plan removes all {count} output channels of {name!r} (coupled layers lose the union of their "
                "planned channels); keep at least one"
            )
    return ChannelCuts(
        {name: tuple(sorted(removed)) for name, removed in outputs.items()},
        {name: tuple(sorted(removed)) for name, removed in inputs.items()},
        by_layer,
    )


def _out_channels(module: torch.nn.Module) -> int | None:
    if isinstance(module, torch.nn.Linear):
        return module.out_features
    if isinstance(module, torch.nn.modules.conv._ConvNd):
        return module.out_channels
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        return module.num_features
    return None


def _unsupported(layer: str, name: str, module: torch.nn.Module) -> str:
    return (
        f"removing channels of layer {layer!r} also changes {name!r}, a {type(module).__name__}, which glocal cannot "
        "mask channel by channel (only convs, linear layers, batch/instance norms and PReLUs); prune other layers"
    )
