"""Which layers feed which: the graph of conditionable layers of a model, through any operations in between.

:func:`trace_layers` finds, for each layer of interest, the nearest layers of interest whose output reaches its input,
across skip connections, concatenations, reshapes and any other functional operation. It has two ways of looking:

``"fx"``
    Traces the model symbolically with :mod:`torch.fx` (no example input, nothing runs) and follows the data flow of
    the recorded graph. Fails on models whose forward pass branches on tensor values (``if x.sum() > 0:``).
``"autograd"``
    Runs the model once on an example input and walks the autograd graph back from each layer's output. Works for
    every model that runs and sees exactly the operations that this forward pass performed.

``"auto"`` (the default) tries ``"fx"`` and falls back to ``"autograd"`` when symbolic tracing fails. Where both
work they give the same graph.

For residual models the conv layers make a tangled graph: inside a block the expansion and depthwise convolutions
only add steps, and every skip connection makes a layer feed several later ones. ``granularity="blocks"`` takes the
outputs of the model's blocks instead (:func:`block_layers`: torchvision's ``InvertedResidual``, ``BasicBlock`` and
``Bottleneck``, and any module whose output is a residual sum), plus the conv and linear layers outside any block;
in a ResNet or a MobileNetV2 they form a simple chain.

The module is one idea kept whole (a little over 400 lines): the two ways of looking must give the same graph, so
their rules for what links two layers (skip connections, metadata-only operations, in-place operations) are read side
by side.

>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Conv2d(2, 2, 3))
>>> trace_layers(net, torch.rand(1, 1, 8, 8)).inputs
{'0': (), '2': ('0',)}
>>> graph = trace_layers(net, method="fx")  # no example input needed
>>> graph.layers, graph.method
(('0', '2'), 'fx')
"""

from __future__ import annotations

import builtins
import logging
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.fx

from ..attribution.inputs import check_gradients_enabled, check_input
from ..attribution.layers import get_layer_names, resolve_layers
from ..attribution.session import Probe, Session
from ..errors import InputError, LayerError

__all__ = [
    "BLOCK_TYPES",
    "DEFAULT_TYPES",
    "GRANULARITIES",
    "METHODS",
    "LayerGraph",
    "block_layers",
    "default_layer_graph",
    "trace_layers",
]

_logger = logging.getLogger(__name__)

DEFAULT_TYPES: tuple[type, ...] = (torch.nn.modules.conv._ConvNd, torch.nn.Linear)
"""Layer types whose channels are concepts by default."""

METHODS: tuple[str, ...] = ("auto", "fx", "autograd")
"""The ways :func:`trace_layers` can find the graph."""

GRANULARITIES: tuple[str, ...] = ("layers", "blocks")
"""What :func:`trace_layers` puts in the graph by default: conv and linear layers, or the outputs of blocks."""

BLOCK_TYPES: tuple[str, ...] = ("InvertedResidual", "BasicBlock", "Bottleneck")
"""Class names of blocks that :func:`block_layers` takes whatever their forward pass does (torchvision's MobileNetV2
and ResNet blocks, also those without a residual connection)."""

_ADDITIONS = frozenset({operator.add, operator.iadd, torch.add})

# Operations whose result describes a tensor (its shape, type, place) rather than its values: no layer's output
# reaches anything through them, and the autograd walk does not see them either.
_METADATA_METHODS = frozenset({"size", "dim", "ndimension", "numel", "nelement", "get_device", "detach"})
_METADATA_ATTRIBUTES = frozenset({"shape", "ndim", "dtype", "device", "is_cuda", "layout", "requires_grad"})


@dataclass(frozen=True)
class LayerGraph:
    """Layers in forward order and, per layer, the nearest layers whose output reaches its input.

    Attributes
    ----------
    layers
        Layer names in the order the forward pass runs them.
    inputs
        Layer name to the layers that feed it directly (no other layer of the graph in between), in forward order.
    method
        How the graph was found: ``"fx"`` (symbolic tracing) or ``"autograd"`` (one forward pass).
    """

    layers: tuple[str, ...]
    inputs: Mapping[str, tuple[str, ...]]
    method: str = "autograd"

    def outputs(self, layer: str) -> tuple[str, ...]:
        """The layers that ``layer`` feeds directly."""
        self._check(layer)
        return tuple(name for name in self.layers if layer in self.inputs[name])

    def upstream(self, layer: str) -> tuple[str, ...]:
        """All layers whose output reaches ``layer``, nearest first."""
        self._check(layer)
        seen: list[str] = []
        frontier = list(self.inputs[layer])
        while frontier:
            name = frontier.pop(0)
            if name not in seen:
                seen.append(name)
                frontier.extend(self.inputs[name])
        return tuple(seen)

    def _check(self, layer: str) -> None:
        if layer not in self.inputs:
            raise LayerError(f"layer {layer!r} is not in the graph; it has {list(self.layers)}")


def trace_layers(
    model: torch.nn.Module,
    example: torch.Tensor | None = None,
    layers: Sequence[str] | None = None,
    types: Sequence[type] = DEFAULT_TYPES,
    *,
    method: Literal["auto", "fx", "autograd"] = "auto",
    granularity: Literal["layers", "blocks"] = "layers",
) -> LayerGraph:
    """The graph of ``layers`` (default: every submodule of one of ``types``) of ``model``.

    Parameters
    ----------
    model
        The model; it is left unchanged (no hooks or attributes stay behind, training flags are restored).
    example
        An input batch shaped as the model expects (one sample is enough). Needed by ``method="autograd"`` and
        ``"auto"`` (for the fallback); ``method="fx"`` accepts ``None``.
    layers
        Layer names to put in the graph; each must run exactly once in the forward pass.
    types
        Module types that make up the graph when ``layers`` is not given. Modules of these types that the forward
        pass never calls are left out.
    method
        ``"fx"``: symbolic tracing with :mod:`torch.fx`, nothing runs. ``"autograd"``: one forward pass of
        ``example``, then a walk of the autograd graph. ``"auto"``: ``"fx"``, and ``"autograd"`` where symbolic
        tracing fails (logged at debug level).
    granularity
        Without ``layers``: ``"layers"`` takes every module of ``types``; ``"blocks"`` takes the outputs of the
        model's blocks and the modules of ``types`` outside any block (see :func:`block_layers`), the readable choice
        for attribution graphs and concept paths of residual models.

    Returns
    -------
    LayerGraph
        The layers in forward order, their direct inputs, and the method that found them.

    Raises
    ------
    LayerError
        For an unknown layer name, a layer the forward pass never calls (when named in ``layers``), a layer that runs
        more than once, or with ``method="fx"`` a model that symbolic tracing cannot handle.
    InputError
        For a missing or malformed ``example`` where the method needs one.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(repr(m) for m in METHODS)}, got {method!r}")
    if example is None and method != "fx":
        raise InputError(
            f"method={method!r} needs an example input batch (the autograd walk runs the model once on it), got None. "
            "Pass one shaped as the model expects, e.g. torch.rand(1, 3, 224, 224), or use method='fx', which "
            "traces the model symbolically without input."
        )
    if example is not None:
        example = check_input(example)
    if isinstance(layers, str):
        raise LayerError(
            f"layers must be a sequence of layer names, got the single string {layers!r}; use [{layers!r}]"
        )
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be 'layers' or 'blocks', got {granularity!r}")
    if layers is not None and granularity != "layers":
        raise LayerError(
            f"granularity={granularity!r} chooses the layers itself, but layers={list(layers)[:4]}... was given too; "
            "pass one of the two (block_layers(model) lists the blocks, to edit and pass as layers)"
        )
    explicit = layers is not None
    if layers is not None:
        names = list(dict.fromkeys(layers))
    elif granularity == "blocks":
        names = block_layers(model, types)
    else:
        names = get_layer_names(model, list(types))
    resolve_layers(model, names)  # unknown names: an error with close-name suggestions
    if method == "fx":
        return _trace_fx(model, names, explicit)
    assert example is not None
    if method == "auto":
        try:
            return _trace_fx(model, names, explicit)
        except Exception as error:  # any failure of symbolic tracing: the forward pass is the authority
            _logger.debug("torch.fx could not give the layer graph (%s); falling back to the autograd walk", error)
    return _trace_autograd(model, example, names, explicit)


def block_layers(model: torch.nn.Module, types: Sequence[type] = DEFAULT_TYPES) -> list[str]:
    """The outputs of ``model``'s blocks and the layers of ``types`` outside any block, in definition order.

    A block is a module (not the model itself) that contains a layer of ``types`` and

    * is of a class named in :data:`BLOCK_TYPES` (torchvision's ``InvertedResidual``, ``BasicBlock``,
      ``Bottleneck``), or
    * returns a residual sum: its forward pass, traced with :mod:`torch.fx`, ends in an addition of two tensors that
      both depend on its input, followed by nothing but single-input operations (e.g. a ReLU), or
    * is of the same class as a block found by the two rules above (MobileNetV2's blocks without a skip connection).

    Where blocks nest, the innermost count (a ResNet's ``layer1.0`` and ``layer1.1``, not ``layer1``).

    >>> import torchvision
    >>> names = block_layers(torchvision.models.resnet18())
    >>> names[:4], names[-2:], len(names)
    (['conv1', 'layer1.0', 'layer1.1', 'layer2.0'], ['layer4.1', 'fc'], 10)
    """
    wanted = tuple(types)
    modules = [(name, module) for name, module in model.named_modules() if name]
    holds_layer = {name for name, module in modules if any(isinstance(inner, wanted) for inner in module.modules())}
    found = [
        name
        for name, module in modules
        if name in holds_layer
        and not isinstance(module, wanted)
        and (type(module).__name__ in BLOCK_TYPES or _ends_in_residual_sum(module))
    ]
    classes = {type(module) for name, module in modules if name in found}
    found = [name for name, module in modules if name in holds_layer and (name in found or type(module) in classes)]
    blocks = [name for name in found if not any(other.startswith(name + ".") for other in found)]
    inside = tuple(name + "." for name in blocks)
    outside = [name for name, module in modules if isinstance(module, wanted) and not name.startswith(inside)]
    order = {name: position for position, (name, _) in enumerate(modules)}
    return sorted([*blocks, *outside], key=order.__getitem__)


def default_layer_graph(model: torch.nn.Module, data: torch.Tensor, layer: str) -> LayerGraph:
    """The layer graph used when none is given: the model's conv and linear layers, or, when ``layer`` is the output
    of a block (see :func:`~glocal.structure.layer_graph.block_layers`) rather than one of those layers, the
    blocks' outputs."""
    if layer not in get_layer_names(model, list(DEFAULT_TYPES)) and layer in block_layers(model):
        return trace_layers(model, data, granularity="blocks")
    return trace_layers(model, data)


def _ends_in_residual_sum(module: torch.nn.Module) -> bool:
    """Whether ``module``'s output is an addition of two tensors that both depend on its input (symbolic trace)."""
    if type(module) in (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict):
        return False  # a container's own forward adds nothing
    training = {inner: inner.training for inner in module.modules()}
    try:
        graph = torch.fx.Tracer().trace(module)
    except Exception:  # anything symbolic tracing cannot follow is not recognised as a block
        return False
    finally:
        for inner, flag in training.items():
            inner.training = flag
    inputs = [node for node in graph.nodes if node.op == "placeholder"]
    output = next((node for node in graph.nodes if node.op == "output"), None)
    if not inputs or output is None or not isinstance(output.args[0], torch.fx.Node):
        return False
    node = output.args[0]
    while len(node.all_input_nodes) == 1 and node.op != "placeholder":
        node = node.all_input_nodes[0]
    addition = (node.op == "call_function" and node.target in _ADDITIONS) or (
        node.op == "call_method" and node.target in ("add", "add_")
    )
    if not addition:
        return False
    operands = [arg for arg in node.args[:2] if isinstance(arg, torch.fx.Node)]
    return len(operands) == 2 and all(_depends_on(operand, inputs[0]) for operand in operands)


def _depends_on(node: torch.fx.Node, source: torch.fx.Node) -> bool:
    stack, seen = [node], set()
    while stack:
        current = stack.pop()
        if current is source:
            return True
        if current not in seen:
            seen.add(current)
            stack.extend(current.all_input_nodes)
    return False


def _trace_autograd(model: torch.nn.Module, example: torch.Tensor, names: list[str], explicit: bool) -> LayerGraph:
    """The graph from one forward pass: each layer's output passes a gate, which the autograd walk recognises."""
    check_gradients_enabled()
    with Session(model, None, names) as session:
        session.forward(example.detach().requires_grad_(True))  # raises for a layer that runs more than once
        ran = _check_ran(names, [name for name in names if session.probes[name].calls], explicit, "autograd")
        ran.sort(key=lambda name: session.probes[name].order)
        inputs: dict[str, tuple[str, ...]] = {}
        for name in ran:
            below = session.probes[name].below
            assert below is not None
            found: set[str] = set()
            seen: set[Any] = set()
            stack = [below.grad_fn]
            while stack:
                node = stack.pop()
                if node is None or node in seen:
                    continue
                seen.add(node)
                # the gate's backward node is its autograd context, which holds the probe; found by identity rather
                # than from the layer's output, whose grad_fn changes when an in-place op (x.add_(y)) modifies it
                probe = getattr(node, "probe", None)
                if isinstance(probe, Probe) and probe.name in session.probes and probe.name != name:
                    found.add(probe.name)
                    continue  # the nearest layer: do not look past it
                stack.extend(next_node for next_node, _ in node.next_functions)
            inputs[name] = tuple(sorted(found, key=lambda other: session.probes[other].order))
    return LayerGraph(layers=tuple(ran), inputs=inputs, method="autograd")


class _LayerTracer(torch.fx.Tracer):
    """Symbolic tracer that records each graph layer as one ``call_module`` node.

    The layers are leaves whatever their class (torch.fx would otherwise trace into a user's ``Conv2d`` subclass),
    and modules that contain a layer are traced into (torch.fx would otherwise keep a ``torch.nn`` container whole).
    """

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = frozenset(names)
        self.parents = frozenset(name.rsplit(".", i)[0] for name in names for i in range(1, name.count(".") + 1))

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.names:
            return True
        if module_qualified_name in self.parents:
            return False
        return bool(super().is_leaf_module(m, module_qualified_name))


def _trace_fx(model: torch.nn.Module, names: list[str], explicit: bool) -> LayerGraph:
    """The graph from symbolic tracing: data flow through every node of the torch.fx graph."""
    for name in names:
        outer = next((other for other in names if name.startswith(other + ".")), None)
        if outer is not None:
            raise LayerError(
                f"layer {name!r} lies inside layer {outer!r}; torch.fx records {outer!r} as one call and cannot see "
                f"into it. Drop one of the two from layers, or use method='autograd', which can."
            )
    training = {module: module.training for module in model.modules()}
    try:
        model.eval()  # trace the forward pass that explanations run (as the autograd walk does)
        graph = _LayerTracer(names).trace(model)
    except Exception as error:
        raise LayerError(
            f"torch.fx could not trace {type(model).__name__} symbolically ({type(error).__name__}: {error}). "
            "Symbolic tracing fails e.g. on Python control flow that depends on tensor values (if x.sum() > 0:). "
            "Use method='autograd' with an example input, which runs the model once instead."
        ) from error
    finally:
        for module, flag in training.items():
            module.training = flag
    wanted = frozenset(names)
    calls: dict[str, int] = {}
    inputs: dict[str, tuple[str, ...]] = {}
    reached: dict[str, frozenset[str]] = {}
    sources: dict[torch.fx.Node, frozenset[str]] = {}  # node -> the nearest layers whose output reaches it
    for node in graph.nodes:
        upstream = frozenset[str]().union(*(sources.get(arg, frozenset()) for arg in node.all_input_nodes))
        if node.op == "call_module" and node.target in wanted:
            name = str(node.target)
            calls[name] = calls.get(name, 0) + 1
            reached.setdefault(name, upstream)
            sources[node] = frozenset({name})
        elif _is_metadata(node):
            sources[node] = frozenset()
        else:
            sources[node] = upstream
            if _is_in_place(node):  # the modified tensor now also carries the other arguments' layers
                target = node.args[0]
                assert isinstance(target, torch.fx.Node)
                sources[target] = sources[target] | upstream
    for name, count in calls.items():
        if count > 1:
            raise LayerError(
                f"layer {name!r} runs {count} times in one forward pass (the same module object is reused), so its "
                "activation is ambiguous. Condition on or record a module that runs once, e.g. the layer just "
                "before or after it."
            )
    ran = _check_ran(names, list(calls), explicit, "fx")  # calls is in forward order
    order = {name: position for position, name in enumerate(ran)}
    for name in ran:
        inputs[name] = tuple(sorted(reached[name] - {name}, key=order.__getitem__))
    return LayerGraph(layers=tuple(ran), inputs=inputs, method="fx")


def _is_metadata(node: torch.fx.Node) -> bool:
    """Whether ``node`` reads a tensor's shape, type or place (or detaches it), not its values."""
    if node.op == "call_method":
        return node.target in _METADATA_METHODS
    return (
        node.op == "call_function"
        and node.target is builtins.getattr
        and len(node.args) > 1
        and node.args[1] in _METADATA_ATTRIBUTES
    )


def _is_in_place(node: torch.fx.Node) -> bool:
    """Whether ``node`` modifies its first argument in place (``x.add_(y)``, ``torch.relu_(x)``, ``inplace=True``)."""
    if node.op not in ("call_method", "call_function") or not node.args or not isinstance(node.args[0], torch.fx.Node):
        return False
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return (name.endswith("_") and not name.endswith("__")) or node.kwargs.get("inplace") is True


def _check_ran(names: list[str], ran: list[str], explicit: bool, method: str) -> list[str]:
    """``ran``; for layers the caller named, an error when one of them never runs."""
    missing = [name for name in names if name not in ran]
    if missing and explicit:
        hint = (
            " torch.fx sees only the calls that symbolic tracing records (not those inside functions marked with "
            "torch.fx.wrap); method='autograd' runs the model instead."
            if method == "fx"
            else ""
        )
        raise LayerError(
            f"expected every layer in layers to run in the forward pass, but {', '.join(map(repr, missing))} never "
            f"ran ({method}), so the layer graph has no place for it. Leave such layers out of layers, or check that "
            f"the model's forward calls them.{hint}"
        )
    if missing:
        _logger.debug("layers the forward pass never calls, left out of the graph (%s): %s", method, missing)
    return list(ran)
