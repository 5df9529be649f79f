"""Which layers feed which: the graph of conditionable layers of a model, through any operations in between.

:func:`trace_layers` runs the model once on an example input and follows the autograd graph from each layer's
output back to the nearest layers of interest, across skip connections, concatenations, reshapes and any other
functional operation. It works for every model that runs (no symbolic tracing needed) and sees exactly the
operations the forward pass performed.

>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Conv2d(2, 2, 3))
>>> trace_layers(net, torch.rand(1, 1, 8, 8)).inputs
{'0': (), '2': ('0',)}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .engine import check_gradients_enabled, check_input
from .errors import LayerError
from .layers import get_layer_names
from .session import Session

__all__ = ["DEFAULT_TYPES", "LayerGraph", "trace_layers"]

DEFAULT_TYPES: tuple[type, ...] = (torch.nn.modules.conv._ConvNd, torch.nn.Linear)
"""Layer types whose channels are concepts by default."""


@dataclass(frozen=True)
class LayerGraph:
    """Layers in forward order and, per layer, the nearest layers whose output reaches its input.

    Attributes
    ----------
    layers
        Layer names in the order the forward pass ran them.
    inputs
        Layer name to the layers that feed it directly (no other layer of the graph in between), in forward order.
    """

    layers: tuple[str, ...]
    inputs: Mapping[str, tuple[str, ...]]

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
    example: torch.Tensor,
    layers: Sequence[str] | None = None,
    types: Sequence[type] = DEFAULT_TYPES,
) -> LayerGraph:
    """The graph of ``layers`` (default: every submodule of one of ``types``) from one forward pass of ``example``.

    Parameters
    ----------
    model
        The model; it is left unchanged.
    example
        An input batch shaped as the model expects (one sample is enough).
    layers
        Layer names to put in the graph; each must run exactly once.
    types
        Module types that make up the graph when ``layers`` is not given.
    """
    check_gradients_enabled()
    example = check_input(example)
    names = list(layers) if layers is not None else get_layer_names(model, list(types))
    with Session(model, None, names) as session:
        session.forward(example.detach().requires_grad_(True))
        ran = [name for name in names if session.probes[name].calls]
        ran.sort(key=lambda name: session.probes[name].order)
        gates: dict[Any, str] = {}
        for name in ran:
            above = session.probes[name].above
            if above is not None and above.grad_fn is not None:
                gates[above.grad_fn] = name
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
                if node in gates and gates[node] != name:
                    found.add(gates[node])
                    continue  # the nearest layer: do not look past it
                stack.extend(next_node for next_node, _ in node.next_functions)
            inputs[name] = tuple(sorted(found, key=lambda other: session.probes[other].order))
    return LayerGraph(layers=tuple(ran), inputs=inputs)
