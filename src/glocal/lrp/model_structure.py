"""What a model is made of, as far as LRP cares: batch norms and what they follow, additions of two computed tensors.

LRP conserves relevance layer by layer only when every operation has a rule. Two common operations break that
silently when no canonizer rewrites them:

* a **batch norm** that is not merged into the linear layer before it (zennit passes relevance through it unchanged,
  ignoring its scale and shift);
* a **functional addition** of two computed tensors (a residual ``x + f(x)`` in ``forward``): autograd hands the
  *whole* upper relevance to both summands, so the heatmap sums to about twice the output.

:func:`inspect_model` finds both from the model's code with :mod:`torch.fx` (nothing runs): the batch norms, which
linear layer each one follows directly (so that :func:`batch_norm_merges` can merge it, whatever the module tree
looks like), and the additions. :func:`unmerged_batch_norms` and :func:`uncovered_additions` check a model while a
composite is attached, from its parameters and from the autograd graph of one forward pass.

>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU())
>>> inspect_model(net).merges
((('0',), '1'),)
"""

from __future__ import annotations

import itertools
import logging
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx

__all__ = ["ModelStructure", "inspect_model", "uncovered_additions", "unmerged_batch_norms"]

_logger = logging.getLogger(__name__)

_BATCH_NORMS = (torch.nn.modules.batchnorm._BatchNorm,)
_LINEARS = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)
_ADD_FUNCTIONS = frozenset({operator.add, operator.iadd, operator.sub, operator.isub, torch.add, torch.sub})
_ADD_METHODS = frozenset({"add", "add_", "sub", "sub_", "__add__", "__iadd__", "__radd__", "__sub__"})
# autograd nodes of an addition or subtraction of two tensors
_ADD_NODES = frozenset({"AddBackward0", "SubBackward0"})


@dataclass(frozen=True)
class ModelStructure:
    """The parts of a model that decide which canonizers it needs.

    Attributes
    ----------
    convolutions, linears, batch_norms
        Names of the model's modules of each kind (every such submodule, in registration order).
    merges
        ``((linear names), batch norm name)`` for each batch norm whose input is the output of one linear layer
        (convolution or dense) that feeds nothing else: the pairs a batch-norm merge can fold together.
    additions
        Where the traced forward pass adds (or subtracts) two computed tensors, as ``"module: code"`` strings;
        ``None`` when symbolic tracing failed and nothing is known.
    input_layers
        The convolutions that read the model's input (through no other module), in forward order; ``None`` when
        symbolic tracing failed.
    traced
        Whether :mod:`torch.fx` could trace the model; without it ``merges`` falls back to batch norms that directly
        follow a linear layer inside a ``torch.nn.Sequential``.
    """

    convolutions: tuple[str, ...]
    linears: tuple[str, ...]
    batch_norms: tuple[str, ...]
    merges: tuple[tuple[tuple[str, ...], str], ...]
    additions: tuple[str, ...] | None
    traced: bool
    input_layers: tuple[str, ...] | None = None


def inspect_model(model: torch.nn.Module) -> ModelStructure:
    """The batch norms, the linear layers they follow and the functional additions of ``model`` (nothing runs)."""
    modules = dict(model.named_modules())
    convolutions = tuple(n for n, m in modules.items() if isinstance(m, torch.nn.modules.conv._ConvNd))
    linears = tuple(n for n, m in modules.items() if isinstance(m, torch.nn.Linear))
    batch_norms = tuple(n for n, m in modules.items() if isinstance(m, _BATCH_NORMS))
    try:
        graph = _trace(model)
    except Exception as error:  # any failure of symbolic tracing: fall back to the module tree
        _logger.debug("torch.fx could not trace %s (%s); merges from the module tree", type(model).__name__, error)
        return ModelStructure(convolutions, linears, batch_norms, _sequential_merges(model), None, False)
    return ModelStructure(
        convolutions,
        linears,
        batch_norms,
        _graph_merges(graph, modules),
        _additions(graph),
        True,
        _input_layers(graph, modules),
    )


def _trace(model: torch.nn.Module) -> torch.fx.Graph:
    training = {module: module.training for module in model.modules()}
    try:
        model.eval()
        return torch.fx.Tracer().trace(model)
    finally:
        for module, flag in training.items():
            module.training = flag


def _graph_merges(
    graph: torch.fx.Graph, modules: dict[str, torch.nn.Module]
) -> tuple[tuple[tuple[str, ...], str], ...]:
    merges = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(str(node.target)), _BATCH_NORMS):
            continue
        source = node.args[0] if node.args else None
        if (
            isinstance(source, torch.fx.Node)
            and source.op == "call_module"
            and isinstance(modules.get(str(source.target)), _LINEARS)
            and len(source.users) == 1
            and getattr(modules[str(source.target)], "weight", None) is not None
        ):
            merges.append(((str(source.target),), str(node.target)))
    # a module called twice would be merged twice: keep only batch norms and linears that appear once
    bns = [bn for _, bn in merges]
    lins = [lin for (lin,), _ in merges]
    return tuple(m for m in merges if bns.count(m[1]) == 1 and lins.count(m[0][0]) == 1)


def _sequential_merges(model: torch.nn.Module) -> tuple[tuple[tuple[str, ...], str], ...]:
    merges = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Sequential):
            continue
        children = list(module.named_children())
        for (first, a), (second, b) in itertools.pairwise(children):
            if isinstance(a, _LINEARS) and isinstance(b, _BATCH_NORMS):
                prefix = f"{name}." if name else ""
                merges.append(((prefix + first,), prefix + second))
    return tuple(merges)


def _input_layers(graph: torch.fx.Graph, modules: dict[str, torch.nn.Module]) -> tuple[str, ...]:
    """Convolutions whose input comes from the model's input through functional operations only."""
    raw: set[torch.fx.Node] = set()
    found = []
    for node in graph.nodes:
        reads_raw = any(arg in raw for arg in node.all_input_nodes)
        if node.op == "placeholder" or (reads_raw and node.op != "call_module"):
            raw.add(node)
        elif reads_raw and isinstance(modules.get(str(node.target)), torch.nn.modules.conv._ConvNd):
            found.append(str(node.target))
    return tuple(dict.fromkeys(found))


def _additions(graph: torch.fx.Graph) -> tuple[str, ...]:
    """``"module: code"`` of each node adding two tensors computed from the input (not a constant or parameter)."""
    computed: set[torch.fx.Node] = set()
    found = []
    for node in graph.nodes:
        inputs = [arg for arg in node.all_input_nodes if arg in computed]
        if node.op == "placeholder" or inputs:
            computed.add(node)
        if node.op == "call_function":
            is_add = node.target in _ADD_FUNCTIONS
        elif node.op == "call_method":
            is_add = node.target in _ADD_METHODS
        else:
            is_add = False
        tensor_args = [arg for arg in node.args[:2] if isinstance(arg, torch.fx.Node) and arg in computed]
        if is_add and len(tensor_args) == 2:
            found.append(_describe(node))
    return tuple(found)


def _describe(node: torch.fx.Node) -> str:
    where = node.meta.get("nn_module_stack")
    owner = next(reversed(where), "") if where else ""
    args = ", ".join(str(arg) for arg in node.args)
    name = getattr(node.target, "__name__", str(node.target))
    return f"{owner or '(model)'}: {name}({args})" if owner else f"{name}({args})"


def unmerged_batch_norms(model: torch.nn.Module) -> list[str]:
    """Names of batch norms of ``model`` that do not compute the identity: not merged by any canonizer.

    Call it while the canonizers are applied (a merged batch norm is reset to zero mean, unit variance, unit weight
    and zero bias).
    """
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, _BATCH_NORMS) or not module.track_running_stats:
            if isinstance(module, _BATCH_NORMS):
                out.append(name)  # batch statistics at every call: nothing can merge them
            continue
        weight, bias = module.weight, module.bias
        mean, var = module.running_mean, module.running_var
        assert mean is not None and var is not None
        identity = (
            bool((mean == 0).all())
            and bool((var == 1).all())
            and (weight is None or bool((weight == 1).all()))
            and (bias is None or bool((bias == 0).all()))
        )
        if not identity:
            out.append(name)
    return out


def uncovered_additions(output: torch.Tensor, input: torch.Tensor) -> int:
    """How many additions of two computed tensors the autograd graph from ``input`` to ``output`` contains.

    A canonizer that routes an addition through a module (e.g. :class:`zennit.layer.Sum`) removes it from this
    count: the module's rule then splits the relevance between the summands.
    """
    count = 0
    seen: set[Any] = set()
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        nexts = [next_node for next_node, _ in node.next_functions]
        if type(node).__name__ in _ADD_NODES and sum(_computed(n, input) for n in nexts) == 2:
            count += 1
        stack.extend(nexts)
    return count


def _computed(node: Any, input: torch.Tensor) -> bool:
    """Whether an autograd node stands for a tensor computed from the input (not a parameter leaf)."""
    if node is None:
        return False
    variable = getattr(node, "variable", None)
    return variable is None or variable is input


def describe_names(names: Sequence[str], limit: int = 3) -> str:
    """``'a', 'b', 'c' and 4 more``."""
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
